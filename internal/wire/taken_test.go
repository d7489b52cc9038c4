package wire

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDecodeTaken: a takeover's value, written with the giver's fd
// numbers (3 the ready pipe, 4 and up the rest), is placed on the fds the
// taker received, in order, whatever their numbers.
func TestDecodeTaken(t *testing.T) {
	v := (&Env{Generation: 3, ReadyFD: 3, Pipe: 77, Mail: [2]int{4, 5}, Handoff: 6, Tickets: 7,
		Older: []int{10}, Entries: []Entry{
			{Name: "web", FD: 8, Network: "tcp", Address: "127.0.0.1:80"},
			{Name: "ctl", FD: 9, Network: "unix", Address: "/run/ctl"},
		}}).Encode(4242)
	e, err := DecodeTaken(v, []int{40, 41, 42, 43, 44, 45, 46})
	require.NoError(t, err)
	assert.Equal(t, 40, e.ReadyFD)
	assert.Equal(t, [2]int{41, 42}, e.Mail)
	assert.Equal(t, 43, e.Handoff)
	assert.Equal(t, 44, e.Tickets)
	assert.Equal(t, []int{45, 46}, []int{e.Entries[0].FD, e.Entries[1].FD})
	assert.Equal(t, "web", e.Entries[0].Name)
	assert.Equal(t, 4242, e.Writer, "the giver's pid, kept for the log; not checked against the parent")
	assert.Equal(t, 3, e.Generation)
	assert.Equal(t, uint64(77), e.Pipe)
}

// TestDecodeTakenRejects: each way a value and the fds that came with it
// can disagree gives a *DecodeError that says which fd.
func TestDecodeTakenRejects(t *testing.T) {
	web := func(fd int) string { return ";fd=web," + strconv.Itoa(fd) + ",tcp,127.0.0.1%3A80" }
	for _, c := range []struct {
		name, v  string
		received []int
		want     string
		sentinel error
	}{
		{"fd beyond what came", "v1;pid=1;gen=2;ready=3" + web(5), []int{20, 21}, `entry "web"'s fd 5: the value came with 2 fds, numbered 3 to 4`, ErrMalformed},
		{"fd below 3", "v1;pid=1;gen=2;ready=3;handoff=2" + web(4), []int{20, 21}, "", ErrMalformed},
		{"fd that came unnamed", "v1;pid=1;gen=2;ready=3" + web(4), []int{20, 21, 22}, "fd 5 came with the value but the value does not name it", ErrMalformed},
		{"no ready pipe", "v1;pid=1;gen=2;ready=-1" + web(4), []int{20, 21}, `field "ready"`, ErrMalformed},
		{"ready fd an entry's", "v1;pid=1;gen=2;ready=3" + web(3), []int{20}, "fd 3 is the ready fd", ErrDuplicate},
		{"another version", "v2;pid=1;gen=2;ready=3", []int{20}, `version "v2" is not "v1"`, ErrMalformed},
		{"garbage", "v1;pid=1;gen=2;ready=3;fd=web", []int{20}, "", ErrMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeTaken(c.v, c.received)
			var de *DecodeError
			require.ErrorAs(t, err, &de)
			assert.ErrorIs(t, err, c.sentinel)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

// FuzzDecodeTaken feeds arbitrary values, with n fds received, to
// DecodeTaken. It must not panic; what it accepts names every received
// fd exactly once, and only those; what it rejects is a *DecodeError.
func FuzzDecodeTaken(f *testing.F) {
	for _, seed := range []string{
		"v1;pid=1;gen=2;ready=3;fd=web,4,tcp,127.0.0.1%3A80",
		"v1;pid=1;gen=2;ready=3;mail=4,5;handoff=6;tickets=7;fd=web,8,tcp,%3A80;fd=ctl,9,unix,%2Fc",
		"v1;pid=1;gen=2;ready=3;fd=web,3,tcp,%3A80",
		"v1;pid=1;gen=2;ready=4;fd=web,3,tcp,%3A80",
		"v1;pid=1;gen=2;ready=3;handoff=3",
		"v1;pid=1;gen=2;ready=3;mail=4,4",
	} {
		f.Add(seed, uint8(2))
	}
	f.Fuzz(func(t *testing.T, v string, n uint8) {
		received := make([]int, n)
		for i := range received {
			received[i] = 1000 + i
		}
		e, err := DecodeTaken(v, received)
		if err != nil {
			var de *DecodeError
			require.ErrorAs(t, err, &de)
			return
		}
		named := []int{e.ReadyFD}
		if e.HasMail() {
			named = append(named, e.Mail[0], e.Mail[1])
		}
		if e.HasHandoff() {
			named = append(named, e.Handoff)
		}
		if e.HasTickets() {
			named = append(named, e.Tickets)
		}
		for _, en := range e.Entries {
			named = append(named, en.FD)
		}
		require.ElementsMatch(t, received, named, "every received fd named once, and only those")
	})
}
