package tcpgrace

// report is what a draining generation tells the serving one through the
// service's mailbox: its open connections while it drains, and, Final,
// how its drain ended.
type report struct {
	V           int  `json:"v"`
	PID         int  `json:"pid"`
	Generation  int  `json:"gen"`
	Connections int  `json:"conns"`
	Final       bool `json:"final,omitempty"`
	Finished    int  `json:"finished,omitempty"`
	ForceClosed int  `json:"force_closed,omitempty"`
}
