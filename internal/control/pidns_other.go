//go:build !linux

package control

// PIDNamespace is "" where there are no pid namespaces to tell apart.
func PIDNamespace() string { return "" }
