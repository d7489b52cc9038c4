//go:build unix

package wire

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestTallyAndMailRoundTrip: the counts and the mailbox's fds an upgrade
// hands over come back as they were written.
func TestTallyAndMailRoundTrip(t *testing.T) {
	env := &Env{Source: EnvFDs, Generation: 3, ReadyFD: 3, Mail: [2]int{5, 6},
		Tally: &Tally{FirstStart: 1700000000123456789, Began: 1700000100000000000, Upgrades: 2, Failed: 1,
			Refused: 4, Finished: 17, ForceClosed: 3, HandoffNanos: 24000000, Handoffs: []uint64{0, 1, 1, 0}},
		Entries: []Entry{{Name: "web", FD: 4, Network: "tcp", Address: "127.0.0.1:0"}}}
	v := env.Encode(testPPID)
	assert.Contains(t, v, ";mail=5,6;tally=1700000000123456789,1700000100000000000,2,1,4,17,3,24000000,0:1:1:0;fd=")
	got, err := Decode(fakeLookup(fdsOnly(v)), testPID, testPPID)
	require.NoError(t, err)
	got.Writer = 0
	assert.Equal(t, env, got)

	env.Tally.Handoffs = nil
	got, err = Decode(fakeLookup(fdsOnly(env.Encode(testPPID))), testPID, testPPID)
	require.NoError(t, err)
	assert.Empty(t, got.Tally.Handoffs, "a tally without hand-offs has no buckets")
}

// TestTallyAndMailMalformed: a bad tally or mail field is refused with the
// field named and what is wrong with it.
func TestTallyAndMailMalformed(t *testing.T) {
	good := "1,2,3,4,5,6,7,8,1:2"
	for _, tt := range []struct{ name, field, msg string }{
		{"tally short", "tally=1,2,3", `field "tally": 3 comma-separated parts, want 9`},
		{"tally negative time", "tally=-1,2,3,4,5,6,7,8,", `field "tally": "-1" is no time`},
		{"tally bad count", "tally=1,2,x,4,5,6,7,8,", `field "tally": "x" is no count`},
		{"tally bad bucket", "tally=1,2,3,4,5,6,7,8,1:y", `hand-off bucket "y" is no count`},
		{"tally too many buckets", "tally=1,2,3,4,5,6,7,8," + strings.Repeat("1:", MaxBuckets) + "1",
			fmt.Sprintf("%d hand-off buckets, more than %d", MaxBuckets+1, MaxBuckets)},
		{"tally twice", "tally=" + good + ";tally=" + good, `field "tally" given twice`},
		{"mail one fd", "mail=5", `field "mail": "5" is not <fd>,<fd>`},
		{"mail stdio", "mail=1,5", `field "mail": fd 1 is stdio`},
		{"mail same fd", "mail=5,5", `field "mail": in and out are both fd 5`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(fakeLookup(fdsOnly(fdsValue()+";"+tt.field)), testPID, testPPID)
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrMalformed), "%v", err)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

// TestMailFDsCollide: a mailbox fd that is also the ready fd or an entry's
// fd is refused: two *os.File on one fd would close an fd that is not
// ours.
func TestMailFDsCollide(t *testing.T) {
	for _, tt := range []struct{ name, value, msg string }{
		{"ready", fdsValue() + ";mail=3,5", "mailbox fds 3,5 include the ready fd"},
		{"entry", fdsValue("web,4,tcp,%3A80") + ";mail=5,4", "fd 4 is a mailbox fd"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(fakeLookup(fdsOnly(tt.value)), testPID, testPPID)
			require.ErrorIs(t, err, ErrDuplicate)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

// TestOpenRejectsBadMailFD: a mailbox fd that is no Unix datagram socket
// fails Open with the fd named; a good pair is handed out once.
func TestOpenRejectsBadMailFD(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	_, err = Open(&Env{Source: EnvFDs, Generation: 2, ReadyFD: -1, Mail: [2]int{int(r.Fd()), int(w.Fd())}})
	require.ErrorIs(t, err, ErrBadFD)
	assert.Contains(t, err.Error(), fmt.Sprintf("mailbox fd %d: not a socket", r.Fd()))

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	require.NoError(t, err)
	f, err := Open(&Env{Source: EnvFDs, Generation: 2, ReadyFD: -1, Mail: [2]int{fds[0], fds[1]}})
	require.NoError(t, err)
	in, out := f.Mail()
	require.NotNil(t, in)
	require.NotNil(t, out)
	defer in.Close()
	defer out.Close()
	in2, out2 := f.Mail()
	assert.Nil(t, in2, "the mailbox is handed out once")
	assert.Nil(t, out2)
}
