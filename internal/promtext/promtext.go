// Package promtext writes Prometheus' text exposition format, version
// 0.0.4: for each metric family a "# HELP" and a "# TYPE" line, then its
// samples, one a line, "name{label="value",...} value". It is the small
// part of a Prometheus client that a program without one needs to serve
// GET /metrics: no registry, no types beyond gauge, counter and
// histogram; the caller gathers the values and writes them at once.
//
// Escaping is the format's: in HELP text a backslash and a line feed
// become \\ and \n; in a label value a backslash, a double quote and a
// line feed become \\, \" and \n. Values are Go's shortest float form,
// with +Inf, -Inf and NaN spelled as Prometheus spells them.
package promtext

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// ContentType is the Content-Type of a response in this format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Type is a metric family's type, as its "# TYPE" line names it.
type Type string

// The types this package writes.
const (
	Gauge     Type = "gauge"
	Counter   Type = "counter"
	Histogram Type = "histogram"
)

// Label is one label of a sample.
type Label struct {
	Name  string // [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__"
	Value string // any UTF-8 text; escaped on output
}

// Sample is one line of a family: Suffix is appended to the family's
// name ("_bucket", "_sum", "_count" for a histogram; "" otherwise).
type Sample struct {
	Suffix string
	Labels []Label
	Value  float64
}

// Family is one metric: its name, help text, type and samples.
type Family struct {
	Name    string // [a-zA-Z_:][a-zA-Z0-9_:]*
	Help    string
	Type    Type
	Samples []Sample
}

// Write writes the families to w in the order given. A family with an
// invalid name, or a sample with an invalid label name, is an error that
// names it, and nothing more is written after it; otherwise Write
// returns w's error, if any.
func Write(w io.Writer, families []Family) error {
	bw := bufio.NewWriter(w)
	for _, f := range families {
		if err := writeFamily(bw, f); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func writeFamily(w *bufio.Writer, f Family) error {
	if !validName(f.Name, true) {
		return fmt.Errorf("promtext: metric name %q: not [a-zA-Z_:][a-zA-Z0-9_:]*", f.Name)
	}
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", f.Name, helpEscaper.Replace(f.Help), f.Name, f.Type)
	for _, s := range f.Samples {
		w.WriteString(f.Name + s.Suffix)
		if len(s.Labels) > 0 {
			w.WriteByte('{')
			for i, l := range s.Labels {
				if !validName(l.Name, false) || strings.HasPrefix(l.Name, "__") {
					return fmt.Errorf("promtext: metric %s: label name %q: not [a-zA-Z_][a-zA-Z0-9_]* or reserved", f.Name, l.Name)
				}
				if i > 0 {
					w.WriteByte(',')
				}
				w.WriteString(l.Name + `="` + labelEscaper.Replace(l.Value) + `"`)
			}
			w.WriteByte('}')
		}
		w.WriteString(" " + FormatValue(s.Value) + "\n")
	}
	return nil
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// validName reports whether s is a metric name (colons allowed) or a
// label name.
func validName(s string, colons bool) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		ok := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (colons && c == ':') ||
			(i > 0 && c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

// FormatValue is v as the format writes it: +Inf, -Inf, NaN, or Go's
// shortest representation ("1", "0.25", "1e+21").
func FormatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// HistogramSamples are the samples of a histogram: one cumulative
// "_bucket" per upper bound (label le) and one for +Inf, then "_sum" and
// "_count". counts[i] is the number of observations in bucket i alone
// (at most bounds[i], above bounds[i-1]); counts[len(bounds)], if
// present, those above every bound. labels are added to every sample,
// before le.
func HistogramSamples(bounds []float64, counts []uint64, sum float64, labels ...Label) []Sample {
	var out []Sample
	var cum uint64
	for i, b := range bounds {
		if i < len(counts) {
			cum += counts[i]
		}
		out = append(out, Sample{Suffix: "_bucket", Labels: withLE(labels, FormatValue(b)), Value: float64(cum)})
	}
	for _, n := range counts[min(len(bounds), len(counts)):] {
		cum += n
	}
	return append(out,
		Sample{Suffix: "_bucket", Labels: withLE(labels, "+Inf"), Value: float64(cum)},
		Sample{Suffix: "_sum", Labels: labels, Value: sum},
		Sample{Suffix: "_count", Labels: labels, Value: float64(cum)})
}

func withLE(labels []Label, le string) []Label {
	return append(append([]Label(nil), labels...), Label{Name: "le", Value: le})
}
