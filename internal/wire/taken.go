package wire

import (
	"fmt"
)

// DecodeTaken decodes a value of [EnvFDs] that a serving generation sent,
// with its files, to a process it did not start (a takeover), and places
// it on the fds this process received: received[i] is the fd that
// arrived for the writer's fd ListenFDsStart+i. Every fd the value names
// (the ready pipe, the mailbox, the hand-off channel, the tickets pipe,
// each entry's) becomes the received one; every received fd must be
// named once. The result is checked as [Decode] checks a value; [Open]
// then checks the fds themselves. The writer's pid is not compared with
// this process's parent: the control socket's peer check stands for it.
//
// DecodeTaken touches no fd. The caller owns received and closes them on
// error.
func DecodeTaken(v string, received []int) (*Env, error) {
	fields, err := afterVersion(v)
	if err != nil {
		return nil, err
	}
	e, err := decodeFields(fields, min(len(received), MaxEntries))
	if err != nil {
		return nil, err
	}
	if len(e.Entries) > MaxEntries {
		return nil, malformed(-1, "%d entries, more than %d", len(e.Entries), MaxEntries)
	}
	if e.ReadyFD < 0 {
		return nil, malformed(-1, "no readiness pipe (ready=%d): a takeover reports its readiness on one", e.ReadyFD)
	}
	if err := e.checkFDs(); err != nil {
		return nil, err
	}
	if err := e.place(received); err != nil {
		return nil, err
	}
	return e, nil
}

// place rewrites every fd e names, the writer's ListenFDsStart+i, to
// received[i], and checks that each received fd is named once.
func (e *Env) place(received []int) error {
	used := make([]bool, len(received))
	move := func(what string, entry int, fd *int) error {
		i := *fd - ListenFDsStart
		if i < 0 || i >= len(received) {
			return malformed(entry, "%s fd %d: the value came with %d fds, numbered %d to %d",
				what, *fd, len(received), ListenFDsStart, ListenFDsStart+len(received)-1)
		}
		if used[i] {
			return &DecodeError{Var: EnvFDs, Entry: entry, Err: ErrDuplicate, Reason: fmt.Sprintf("%s fd %d named twice", what, *fd)}
		}
		used[i], *fd = true, received[i]
		return nil
	}
	errs := []error{move("ready", -1, &e.ReadyFD)}
	if e.HasMail() {
		errs = append(errs, move("mailbox", -1, &e.Mail[0]), move("mailbox", -1, &e.Mail[1]))
	}
	if e.HasHandoff() {
		errs = append(errs, move("hand-off", -1, &e.Handoff))
	}
	if e.HasTickets() {
		errs = append(errs, move("tickets", -1, &e.Tickets))
	}
	for i := range e.Entries {
		errs = append(errs, move(fmt.Sprintf("entry %q's", e.Entries[i].Name), i, &e.Entries[i].FD))
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	for i, u := range used {
		if !u {
			return malformed(-1, "fd %d came with the value but the value does not name it", ListenFDsStart+i)
		}
	}
	return nil
}

// CheckFDs checks every fd e names as [Open] would (the readiness pipe,
// the mailbox, the hand-off channel, the tickets pipe, each entry's
// socket: its type, family and, for a stream socket, that it listens)
// without taking any of them, reading the tickets pipe or writing to the
// readiness pipe. A taker checks what it received with it before it
// accepts the transaction, so that a bad fd is refused while the giver
// still holds everything. The error names the fd and the entry.
func (e *Env) CheckFDs() error {
	bad := func(entry int, format string, args ...any) error {
		return &DecodeError{Var: EnvFDs, Entry: entry, Err: ErrBadFD, Reason: fmt.Sprintf(format, args...)}
	}
	if e.ReadyFD >= 0 {
		if err := checkReadyPipe(e); err != nil {
			return err
		}
	}
	for i := range e.Entries {
		en := e.Entries[i]
		if err := checkSocket(&en, false); err != nil {
			return bad(i, "name %q fd %d: %v", en.Name, en.FD, err)
		}
	}
	for _, fd := range e.Mail {
		if e.HasMail() {
			if err := checkMail(fd); err != nil {
				return bad(-1, "mailbox fd %d: %v", fd, err)
			}
		}
	}
	if e.HasHandoff() {
		if err := checkHandoff(e.Handoff); err != nil {
			return bad(-1, "hand-off fd %d: %v", e.Handoff, err)
		}
	}
	if e.HasTickets() {
		if _, err := checkPipe(e.Tickets); err != nil {
			return bad(-1, "tickets fd %d: %v", e.Tickets, err)
		}
	}
	return nil
}
