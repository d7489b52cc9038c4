// Package errjoin joins the errors of an operation on many sockets, such
// as closing them all, into one error that prints on one line.
package errjoin

import (
	"strings"

	"github.com/hashicorp/go-multierror"
)

// Join returns nil if every err is nil, the one error if only one is not,
// and otherwise a *multierror.Error that prints as "a; b; c". errors.Is
// and errors.As see each joined error.
func Join(errs ...error) error {
	var m *multierror.Error
	for _, err := range errs {
		if err != nil {
			m = multierror.Append(m, err)
		}
	}
	switch {
	case m == nil:
		return nil
	case len(m.Errors) == 1:
		return m.Errors[0]
	}
	m.ErrorFormat = oneLine
	return m
}

func oneLine(errs []error) string {
	texts := make([]string, len(errs))
	for i, err := range errs {
		texts[i] = err.Error()
	}
	return strings.Join(texts, "; ")
}
