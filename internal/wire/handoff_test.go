//go:build linux

package wire

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestHandoffRoundTrip: the hand-off channel's fd comes back as it was
// written, and a value without it names none.
func TestHandoffRoundTrip(t *testing.T) {
	env := &Env{Source: EnvFDs, Generation: 2, ReadyFD: 3, Mail: [2]int{5, 6}, Handoff: 7,
		Entries: []Entry{{Name: "web", FD: 4, Network: "tcp", Address: "127.0.0.1:0"}}}
	v := env.Encode(testPPID)
	assert.Contains(t, v, ";mail=5,6;handoff=7;fd=")
	got, err := Decode(fakeLookup(fdsOnly(v)), testPID, testPPID)
	require.NoError(t, err)
	got.Writer = 0
	assert.Equal(t, env, got)

	env.Handoff = 0
	got, err = Decode(fakeLookup(fdsOnly(env.Encode(testPPID))), testPID, testPPID)
	require.NoError(t, err)
	assert.False(t, got.HasHandoff())
}

// TestHandoffMalformed: a bad handoff field, or one on an fd something
// else uses, is refused with what is wrong.
func TestHandoffMalformed(t *testing.T) {
	for _, tt := range []struct {
		name, value string
		is          error
		msg         string
	}{
		{"stdio", fdsValue() + ";handoff=2", ErrMalformed, `field "handoff": fd 2 is stdio`},
		{"not a number", fdsValue() + ";handoff=x", ErrMalformed, `field "handoff"`},
		{"twice", fdsValue() + ";handoff=5;handoff=6", ErrMalformed, `field "handoff" given twice`},
		{"entry", fdsValue("web,4,tcp,%3A80") + ";handoff=4", ErrDuplicate, "fd 4 is the hand-off channel's fd"},
		{"ready", fdsValue() + ";handoff=3", ErrDuplicate, "hand-off fd 3 is also the ready fd or a mailbox fd"},
		{"mailbox", fdsValue() + ";mail=5,6;handoff=6", ErrDuplicate, "hand-off fd 6 is also the ready fd or a mailbox fd"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(fakeLookup(fdsOnly(tt.value)), testPID, testPPID)
			require.Error(t, err)
			assert.True(t, errors.Is(err, tt.is), "%v", err)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

// TestOpenRejectsBadHandoffFD: a hand-off fd that is no Unix seqpacket
// socket fails Open with the fd named; a good one is handed out once.
func TestOpenRejectsBadHandoffFD(t *testing.T) {
	dg, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	require.NoError(t, err)
	defer unix.Close(dg[1])
	_, err = Open(&Env{Source: EnvFDs, Generation: 2, ReadyFD: -1, Handoff: dg[0]})
	require.ErrorIs(t, err, ErrBadFD)
	assert.Contains(t, err.Error(), fmt.Sprintf("hand-off fd %d: not a Unix seqpacket socket", dg[0]))
	unix.Close(dg[0])

	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	require.NoError(t, err)
	defer unix.Close(sp[1])
	f, err := Open(&Env{Source: EnvFDs, Generation: 2, ReadyFD: -1, Handoff: sp[0]})
	require.NoError(t, err)
	h := f.Handoff()
	require.NotNil(t, h)
	defer h.Close()
	assert.Nil(t, f.Handoff(), "the channel is handed out once")
	flags, err := unix.FcntlInt(h.Fd(), unix.F_GETFD, 0)
	require.NoError(t, err)
	assert.NotZero(t, flags&unix.FD_CLOEXEC, "the channel is close-on-exec")
}
