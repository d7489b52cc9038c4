package errjoin

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestJoin(t *testing.T) {
	a, b := errors.New("a"), errors.New("b")
	assert.NoError(t, Join())
	assert.NoError(t, Join(nil, nil))
	assert.Same(t, a, Join(nil, a), "one error comes back as itself")
	err := Join(a, nil, fmt.Errorf("wrapped: %w", b))
	assert.EqualError(t, err, "a; wrapped: b")
	assert.ErrorIs(t, err, a)
	assert.ErrorIs(t, err, b)
	assert.EqualError(t, Join(err, errors.New("c")), "a; wrapped: b; c", "nested joins flatten")
}
