package wire_test

import (
	"errors"
	"fmt"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// Decode reads any environment through a lookup function; here a map
// stands in for the environment of process 4243, whose parent, 4242,
// handed on two sockets.
func ExampleDecode() {
	environ := map[string]string{
		wire.EnvFDs: "v1;pid=4242;gen=2;ready=3;fd=web,4,tcp,127.0.0.1%3A8080;fd=ctl,5,unix,%2Frun%2Fctl.sock",
	}
	lookup := func(key string) (string, bool) {
		v, ok := environ[key]
		return v, ok
	}
	env, err := wire.Decode(lookup, 4243, 4242)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("generation", env.Generation, "ready fd", env.ReadyFD)
	for _, en := range env.Entries {
		fmt.Printf("fd %d: %s %s %s\n", en.FD, en.Name, en.Network, en.Address)
	}

	// A grandchild that inherited the same value ignores it.
	env, err = wire.Decode(lookup, 4244, 4243)
	fmt.Println(env, err)

	// A malformed value is an error that names the entry.
	environ[wire.EnvFDs] = "v1;pid=4242;gen=2;ready=3;fd=web,4,tcp,127.0.0.1%3A8080;fd=web,5,tcp,%3A9090"
	_, err = wire.Decode(lookup, 4243, 4242)
	fmt.Println(err, errors.Is(err, wire.ErrDuplicate))
	// Output:
	// generation 2 ready fd 3
	// fd 4: web tcp 127.0.0.1:8080
	// fd 5: ctl unix /run/ctl.sock
	// <nil> <nil>
	// inherit: TCPGRACE_FDS: entry 1: name "web" already used by entry 0 true
}

// Decode also reads systemd's socket activation variables. Network and
// address stay empty until Open reads them off the sockets.
func ExampleDecode_systemd() {
	environ := map[string]string{
		wire.EnvListenPID:     "4243",
		wire.EnvListenFDs:     "2",
		wire.EnvListenFDNames: "web:ctl",
	}
	env, err := wire.Decode(func(key string) (string, bool) {
		v, ok := environ[key]
		return v, ok
	}, 4243, 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(env.Source, "generation", env.Generation)
	for _, en := range env.Entries {
		fmt.Printf("fd %d: %s\n", en.FD, en.Name)
	}
	// Output:
	// LISTEN_FDS generation 1
	// fd 3: web
	// fd 4: ctl
}

func ExampleEnv_Encode() {
	env := &wire.Env{Generation: 3, ReadyFD: 3, Entries: []wire.Entry{
		{Name: "web", FD: 4, Network: "tcp6", Address: "[::1]:8080"},
		{Name: "ctl", FD: 5, Network: "unix", Address: "/run/a,b;c.sock"},
	}}
	fmt.Println(wire.EnvFDs + "=" + env.Encode(4242))
	// Output:
	// TCPGRACE_FDS=v1;pid=4242;gen=3;ready=3;fd=web,4,tcp6,[::1]:8080;fd=ctl,5,unix,/run/a%2Cb%3Bc.sock
}
