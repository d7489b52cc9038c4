package wire

import (
	"fmt"
	"strconv"
	"strings"
)

// Tally is the service's counts that one generation hands to the next in
// the tally field of [EnvFDs]:
//
//	tally=<first start>,<began>,<upgrades>,<failed>,<refused>,<finished>,<force-closed>,<hand-off ns>,<bucket>:<bucket>:...
//
// Times are Unix nanoseconds; began is when the upgrade that writes the
// value started. The buckets count hand-off durations (the library fixes
// their bounds); at most [MaxBuckets] of them.
type Tally struct {
	FirstStart, Began                                int64
	Upgrades, Failed, Refused, Finished, ForceClosed uint64
	HandoffNanos                                     int64
	Handoffs                                         []uint64
}

// MaxBuckets bounds the hand-off buckets one tally may carry.
const MaxBuckets = 64

// encode is the tally field's value.
func (t *Tally) encode() string {
	buckets := make([]string, len(t.Handoffs))
	for i, n := range t.Handoffs {
		buckets[i] = strconv.FormatUint(n, 10)
	}
	return fmt.Sprintf("%d,%d,%d,%d,%d,%d,%d,%d,%s", t.FirstStart, t.Began, t.Upgrades, t.Failed, t.Refused,
		t.Finished, t.ForceClosed, t.HandoffNanos, strings.Join(buckets, ":"))
}

// parseTally decodes the tally field's value.
func parseTally(val string) (*Tally, error) {
	parts := strings.Split(val, ",")
	if len(parts) != 9 {
		return nil, fmt.Errorf("%d comma-separated parts, want 9", len(parts))
	}
	var ints [3]int64
	for i, p := range []string{parts[0], parts[1], parts[7]} {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is no time or duration in nanoseconds", trunc(p))
		}
		ints[i] = n
	}
	var counts [5]uint64
	for i, p := range parts[2:7] {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is no count", trunc(p))
		}
		counts[i] = n
	}
	t := &Tally{FirstStart: ints[0], Began: ints[1], HandoffNanos: ints[2], Upgrades: counts[0], Failed: counts[1],
		Refused: counts[2], Finished: counts[3], ForceClosed: counts[4]}
	if parts[8] == "" {
		return t, nil
	}
	buckets := strings.Split(parts[8], ":")
	if len(buckets) > MaxBuckets {
		return nil, fmt.Errorf("%d hand-off buckets, more than %d", len(buckets), MaxBuckets)
	}
	for _, p := range buckets {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("hand-off bucket %q is no count", trunc(p))
		}
		t.Handoffs = append(t.Handoffs, n)
	}
	return t, nil
}

// parseMail decodes the mail field's value: "<in fd>,<out fd>".
func parseMail(val string) ([2]int, error) {
	in, out, ok := strings.Cut(val, ",")
	if !ok {
		return [2]int{-1, -1}, fmt.Errorf("%q is not <fd>,<fd>", trunc(val))
	}
	a, err := parseFD(in)
	if err != nil {
		return [2]int{-1, -1}, err
	}
	b, err := parseFD(out)
	if err != nil {
		return [2]int{-1, -1}, err
	}
	if a == b {
		return [2]int{-1, -1}, fmt.Errorf("in and out are both fd %d", a)
	}
	return [2]int{a, b}, nil
}
