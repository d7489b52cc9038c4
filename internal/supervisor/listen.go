package supervisor

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// Listen is one socket the supervisor binds and hands to every instance:
// one -listen flag.
type Listen struct {
	// Name is the socket's entry in LISTEN_FDNAMES. Default: the family
	// ("tcp", "unix", "udp"), with "-2", "-3", ... for the second and later
	// sockets of that family.
	Name string
	// Network is tcp, tcp4, tcp6, unix, udp, udp4 or udp6.
	Network string
	// Address is HOST:PORT, or an absolute path for unix.
	Address string
}

// ParseListen parses one -listen value, [NAME=]URL, where URL is
// tcp://HOST:PORT, unix:///abs/path or udp://HOST:PORT (tcp4, tcp6, udp4
// and udp6 too). The error names the value and what is wrong with it. An
// empty Name is filled in by [Config] defaults.
func ParseListen(value string) (Listen, error) {
	bad := func(format string, args ...any) (Listen, error) {
		return Listen{}, fmt.Errorf("-listen %q: %s", value, fmt.Sprintf(format, args...))
	}
	var l Listen
	rest := value
	if eq, scheme := strings.IndexByte(value, '='), strings.Index(value, "://"); eq >= 0 && (scheme < 0 || eq < scheme) {
		l.Name, rest = value[:eq], value[eq+1:]
		if err := wire.CheckFDName(l.Name); err != nil {
			return bad("%v", err)
		}
	}
	if !strings.Contains(rest, "://") {
		return bad("want tcp://HOST:PORT, unix:///abs/path or udp://HOST:PORT")
	}
	u, err := url.Parse(rest)
	if err != nil {
		return bad("%v", err)
	}
	if u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return bad("want tcp://HOST:PORT, unix:///abs/path or udp://HOST:PORT")
	}
	l.Network = u.Scheme
	if l.Address, err = urlAddress(u); err != nil {
		return bad("%v", err)
	}
	return l, nil
}

// urlAddress is the address a -listen URL names: HOST:PORT, or the
// absolute path of a unix one.
func urlAddress(u *url.URL) (string, error) {
	switch u.Scheme {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		if u.Path != "" {
			return "", fmt.Errorf("a %s address has no path (%q)", u.Scheme, u.Path)
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil {
			return "", err
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || (port != "0" && n == 0) {
			return "", fmt.Errorf("port %q is not a number from 0 to 65535", port)
		}
		return net.JoinHostPort(host, port), nil
	case "unix":
		if u.Host != "" {
			return "", fmt.Errorf("the path must be absolute: unix:///abs/path (three slashes), not host %q", u.Host)
		}
		if !strings.HasPrefix(u.Path, "/") {
			return "", errors.New("the path must be absolute: unix:///abs/path")
		}
		return u.Path, nil
	}
	return "", fmt.Errorf("unknown scheme %q: want tcp, tcp4, tcp6, unix, udp, udp4 or udp6", u.Scheme)
}

// String gives the flag back: NAME=URL.
func (l Listen) String() string {
	if l.Network == "unix" {
		return l.Name + "=unix://" + l.Address
	}
	return l.Name + "=" + l.Network + "://" + l.Address
}

// packet reports whether the socket is a datagram one.
func (l Listen) packet() bool { return strings.HasPrefix(l.Network, "udp") }

// nameListens fills in default names and rejects duplicates.
func nameListens(ls []Listen) ([]Listen, error) {
	out := append([]Listen(nil), ls...)
	count := map[string]int{}
	used := map[string]int{}
	for i := range out {
		if out[i].Name == "" {
			family := strings.TrimRight(out[i].Network, "46")
			count[family]++
			out[i].Name = family
			if n := count[family]; n > 1 {
				out[i].Name = fmt.Sprintf("%s-%d", family, n)
			}
		}
		if j, dup := used[out[i].Name]; dup {
			return nil, fmt.Errorf("-listen %s and -listen %s: the name %q is used twice", out[j], out[i], out[i].Name)
		}
		used[out[i].Name] = i
	}
	return out, nil
}
