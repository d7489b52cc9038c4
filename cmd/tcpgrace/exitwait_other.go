//go:build !linux

package main

import "time"

// canWatchPIDs: elsewhere stop -wait watches the control socket.
const canWatchPIDs = false

func openProcess(int) (int, bool)          { return -1, false }
func (w *exitWaiter) poll(d time.Duration) { time.Sleep(d) }
func (w *exitWaiter) close()               { clear(w.procs) }
