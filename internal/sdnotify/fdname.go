package sdnotify

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxFDName is the longest name systemd takes in FDNAME= and
// LISTEN_FDNAMES (FDNAME_MAX).
const MaxFDName = 255

// FDName maps a socket's name to one systemd's fd store takes in FDNAME=
// (fdname_is_valid: printable ASCII, no ':', at most MaxFDName bytes, not
// empty): '%', ':' and every byte outside printable ASCII become %XX, as
// in a URL. Names such as "tcp:127.0.0.1:8080" thus survive the store
// ("tcp%3A127.0.0.1%3A8080"), and ParseFDName gives them back. The error
// names a name too long once mapped, or an empty one.
func FDName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("sd_notify: an empty name cannot be an FDNAME")
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if escaped(c) {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	if b.Len() > MaxFDName {
		return "", fmt.Errorf("sd_notify: name %.40q is %d bytes as an FDNAME, more than %d", name, b.Len(), MaxFDName)
	}
	return b.String(), nil
}

// escaped reports the bytes FDName writes as %XX.
func escaped(c byte) bool { return c == '%' || c == ':' || c < ' ' || c > '~' }

// ParseFDName gives back the name FDName mapped; the error says what is
// wrong with a name FDName cannot have made (each name has one FDNAME).
func ParseFDName(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ':' || c < ' ' || c > '~' {
			return "", fmt.Errorf("sd_notify: FDNAME %.40q: byte %d (%#x) is not allowed", s, i, c)
		}
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("sd_notify: FDNAME %.40q: %% at byte %d is cut short", s, i)
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil || strings.ToUpper(s[i+1:i+3]) != s[i+1:i+3] || !escaped(byte(v)) {
			return "", fmt.Errorf("sd_notify: FDNAME %.40q: %q at byte %d is not %%XX of a byte FDName escapes", s, s[i:i+3], i)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("sd_notify: an empty FDNAME")
	}
	return b.String(), nil
}
