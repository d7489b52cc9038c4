package tcpgrace

import (
	"context"
	"log/slog"
)

// warnings is the handler of an Upgrader without Options.Logger: it
// passes warnings and errors to the default logger's handler and drops
// the rest, so that a failed upgrade, a failed Ready or a drain deadline
// is never silent.
type warnings struct{ h slog.Handler }

func (w warnings) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && w.h.Enabled(ctx, l)
}

func (w warnings) Handle(ctx context.Context, r slog.Record) error { return w.h.Handle(ctx, r) }

func (w warnings) WithAttrs(as []slog.Attr) slog.Handler { return warnings{w.h.WithAttrs(as)} }

func (w warnings) WithGroup(name string) slog.Handler { return warnings{w.h.WithGroup(name)} }
