module github.com/tcpgrace/tcpgrace/bench

go 1.26.0

require (
	github.com/cloudflare/tableflip v1.2.3
	github.com/tcpgrace/tcpgrace v0.0.0
	golang.org/x/sys v0.47.0
)

require (
	github.com/hashicorp/errwrap v1.0.0 // indirect
	github.com/hashicorp/go-multierror v1.1.1 // indirect
)

replace github.com/tcpgrace/tcpgrace => ../
