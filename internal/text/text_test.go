package text

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCount(t *testing.T) {
	for n, want := range map[int]string{0: "0 crashes", 1: "1 crash", 2: "2 crashes", -1: "-1 crashes"} {
		assert.Equal(t, want, Count(n, "crash", "crashes"), "n=%d", n)
	}
}
