package wire

import (
	"net"
	"strings"
)

// sameFamily reports whether a socket of network have serves a request
// for network want: "tcp" takes tcp4 and tcp6 sockets, "tcp4" only tcp4.
func sameFamily(have, want string) bool {
	if have == want {
		return true
	}
	base := strings.TrimRight(want, "46")
	return base == want && strings.TrimRight(have, "46") == base
}

// sameAddr reports whether the socket of en is bound where address asks:
// the same port, and the same IP unless address leaves it unspecified.
func sameAddr(en Entry, network, address string) bool {
	if network == "unix" {
		return en.Address == address
	}
	wantHost, wantPort, err := net.SplitHostPort(address)
	if err != nil {
		return false
	}
	host, port, err := net.SplitHostPort(en.Address)
	if err != nil || port != wantPort {
		return false
	}
	want, have := net.ParseIP(wantHost), net.ParseIP(host)
	if wantHost == "" || (want != nil && want.IsUnspecified()) {
		return have != nil && have.IsUnspecified()
	}
	return want != nil && want.Equal(have)
}
