// Package signals delivers signals without losing one to a burst of
// another: the channel under the library's NotifySignals and tcpgrace
// run's.
package signals

import (
	"os"
	"os/signal"
	"reflect"
	"slices"
)

// Notify registers each of sigs with signal.Notify on a one-slot channel
// of its own and merges them into the returned channel: a burst of one
// signal coalesces only with itself, a stop signal is kept twice (the
// first drains, a second one cuts the drain short), and stop are passed
// on first. Signals wait in a goroutine until the channel is read. done
// ends the merging and unregisters the channels; nil never does.
func Notify(done <-chan struct{}, sigs, stop []os.Signal) chan os.Signal {
	var ins []chan os.Signal
	var seen []os.Signal
	for _, sig := range sigs {
		if slices.Contains(seen, sig) {
			continue
		}
		seen = append(seen, sig)
		in := make(chan os.Signal, 1)
		signal.Notify(in, sig)
		ins = append(ins, in)
	}
	m := &merger{out: make(chan os.Signal), stop: stop}
	go func() {
		m.run(done, ins)
		for _, in := range ins {
			signal.Stop(in)
		}
	}()
	return m.out
}

// merger holds the signals received and not yet taken from out.
// Each signal number has its own input channel, so a burst of one signal
// can only coalesce with itself, never crowd another one out.
type merger struct {
	out     chan os.Signal
	stop    []os.Signal // passed on before the others
	pending []os.Signal // stop signals first, each in arrival order
}

// run merges ins into out until done is closed.
func (m *merger) run(done <-chan struct{}, ins []chan os.Signal) {
	cases := make([]reflect.SelectCase, 0, len(ins)+2)
	for _, in := range ins {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(in)})
	}
	never := reflect.Value{} // a zero Chan: the case is ignored
	if done != nil {
		never = reflect.ValueOf(done)
	}
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: never})
	doneCase, sendCase := len(ins), len(ins)+1
	for {
		cases = cases[:sendCase]
		if len(m.pending) > 0 {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectSend, Chan: reflect.ValueOf(m.out),
				Send: reflect.ValueOf(m.pending[0])})
		}
		chosen, v, _ := reflect.Select(cases)
		switch chosen {
		case doneCase:
			return
		case sendCase:
			m.pending = m.pending[1:]
		default:
			m.add(v.Interface().(os.Signal))
		}
	}
}

// add queues sig. A signal already pending coalesces with it, as the
// kernel coalesces a signal not yet delivered; a stop signal is kept
// twice (the first drains, a second one cuts the drain short) and goes
// before every other signal.
func (m *merger) add(sig os.Signal) {
	isStop := slices.Contains(m.stop, sig)
	limit := 1
	if isStop {
		limit = 2
	}
	n := 0
	for _, p := range m.pending {
		if p == sig {
			n++
		}
	}
	if n >= limit {
		return
	}
	if !isStop {
		m.pending = append(m.pending, sig)
		return
	}
	i := slices.IndexFunc(m.pending, func(p os.Signal) bool { return !slices.Contains(m.stop, p) })
	if i < 0 {
		i = len(m.pending)
	}
	m.pending = slices.Insert(m.pending, i, sig)
}
