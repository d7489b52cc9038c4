// Package sockfd is the fd plumbing that the library and the supervisor
// of `tcpgrace run` share: duplicating a live socket without disturbing
// it, and naming a file (a Unix socket's) by device and inode, so that a
// path is never taken for a file that someone else has put there since.
//
// Dup and the stat helpers are Unix only; FileID exists everywhere,
// since the hand-off formats carry it.
package sockfd

// FileID names one file: its device and inode (st_dev, st_ino). Two
// FileIDs are equal when they name the same file.
//
// Its JSON form, {"Dev":1,"Ino":2}, is part of the supervisor's hand-over
// state, which one build decodes from another across a self-upgrade:
// keep the field names.
type FileID struct{ Dev, Ino uint64 }
