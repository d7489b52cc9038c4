// Package text holds the small helpers that make messages read right.
package text

import "fmt"

// Count is n followed by one or many, whichever n calls for: "1
// connection", "0 connections", "3 connections".
func Count(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
