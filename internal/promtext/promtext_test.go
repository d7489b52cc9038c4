package promtext

import (
	"errors"
	"math"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWrite: HELP, TYPE and the samples of a gauge with labels, a counter
// and a histogram, byte for byte, escapes included.
func TestWrite(t *testing.T) {
	var b strings.Builder
	err := Write(&b, []Family{
		{Name: "x_instances", Help: "Instances by state;\na back\\slash.", Type: Gauge, Samples: []Sample{
			{Labels: []Label{{"state", "serving"}}, Value: 1},
			{Labels: []Label{{"state", `a "quoted"\` + "\nvalue"}, {"b", ""}}, Value: 0.5},
		}},
		{Name: "x_restarts_total", Help: "Restarts.", Type: Counter, Samples: []Sample{{Value: 3}}},
		{Name: "x_seconds", Help: "Took.", Type: Histogram,
			Samples: HistogramSamples([]float64{0.005, 0.5, 1}, []uint64{1, 0, 2, 4}, 7.25)},
	})
	require.NoError(t, err)
	assert.Equal(t, `# HELP x_instances Instances by state;\na back\\slash.
# TYPE x_instances gauge
x_instances{state="serving"} 1
x_instances{state="a \"quoted\"\\\nvalue",b=""} 0.5
# HELP x_restarts_total Restarts.
# TYPE x_restarts_total counter
x_restarts_total 3
# HELP x_seconds Took.
# TYPE x_seconds histogram
x_seconds_bucket{le="0.005"} 1
x_seconds_bucket{le="0.5"} 1
x_seconds_bucket{le="1"} 3
x_seconds_bucket{le="+Inf"} 7
x_seconds_sum 7.25
x_seconds_count 7
`, b.String())
	checkSyntax(t, b.String())
}

// sampleRe is one sample line of the format: a name, optional labels with
// escaped values, a value.
var sampleRe = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? (\+Inf|-Inf|NaN|-?[0-9.eE+-]+)$`)

// checkSyntax checks every line of out: a HELP or TYPE comment, or a
// sample line.
func checkSyntax(t *testing.T, out string) {
	t.Helper()
	require.True(t, strings.HasSuffix(out, "\n"), "the output ends with a line feed")
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "# HELP "), strings.HasPrefix(line, "# TYPE "):
		default:
			assert.Regexp(t, sampleRe, line, "a sample line")
		}
	}
}

// TestWriteBadNames: an invalid metric or label name is an error naming
// it, not a line a scraper would reject.
func TestWriteBadNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Family
		want string
	}{
		{"empty metric name", Family{Type: Gauge}, `metric name ""`},
		{"metric name with a dash", Family{Name: "a-b", Type: Gauge}, `metric name "a-b"`},
		{"metric name starting with a digit", Family{Name: "1a", Type: Gauge}, `metric name "1a"`},
		{"label name with a colon", Family{Name: "a", Type: Gauge, Samples: []Sample{{Labels: []Label{{"a:b", "x"}}}}},
			`label name "a:b"`},
		{"reserved label name", Family{Name: "a", Type: Gauge, Samples: []Sample{{Labels: []Label{{"__x", "x"}}}}},
			`label name "__x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Write(&strings.Builder{}, []Family{tc.f})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	assert.NoError(t, Write(&strings.Builder{}, []Family{{Name: "ns:sub_name_2", Type: Gauge}}), "colons and digits are fine")
}

// TestFormatValue: the special values as Prometheus spells them, and the
// shortest form of the others.
func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 1: "1", -2: "-2", 0.025: "0.025", 1e21: "1e+21",
		1.7e9 + 0.5: "1.7000000005e+09", math.Inf(1): "+Inf", math.Inf(-1): "-Inf"} {
		assert.Equal(t, want, FormatValue(v), "%v", v)
	}
	assert.Equal(t, "NaN", FormatValue(math.NaN()))
}

// TestHistogramSamples: buckets are cumulative, +Inf and _count include
// the observations above every bound, counts shorter than the bounds
// count as zero, and labels come before le.
func TestHistogramSamples(t *testing.T) {
	s := HistogramSamples([]float64{1, 2}, []uint64{2}, 1.5, Label{"result", "ok"})
	require.Len(t, s, 5)
	assert.Equal(t, []Label{{"result", "ok"}, {"le", "1"}}, s[0].Labels)
	assert.Equal(t, []float64{2, 2, 2, 1.5, 2}, []float64{s[0].Value, s[1].Value, s[2].Value, s[3].Value, s[4].Value})
	assert.Equal(t, []Label{{"result", "ok"}}, s[3].Labels, "_sum has no le")
	assert.Equal(t, "_count", s[4].Suffix)

	s = HistogramSamples([]float64{1}, nil, 0)
	assert.Equal(t, float64(0), s[len(s)-1].Value, "no observations")
}

// failWriter fails every write.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// TestWriteError: the writer's error is returned.
func TestWriteError(t *testing.T) {
	assert.EqualError(t, Write(failWriter{}, []Family{{Name: "a", Type: Gauge, Samples: []Sample{{Value: 1}}}}), "disk full")
}
