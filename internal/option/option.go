// Package option is the one way the module validates options: every
// problem names its field and wraps the validating package's
// ErrInvalidOption, and a user's value is never replaced silently.
package option

import (
	"errors"
	"fmt"
	"time"
)

// Check collects the problems of one options value.
type Check struct {
	sentinel error
	errs     []error
}

// NewCheck returns a Check whose errors wrap sentinel.
func NewCheck(sentinel error) *Check { return &Check{sentinel: sentinel} }

// Failf records that field is invalid, saying why.
func (c *Check) Failf(field, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%w: %s %s", c.sentinel, field, fmt.Sprintf(format, args...)))
}

// Err returns every recorded problem joined, or nil.
func (c *Check) Err() error { return errors.Join(c.errs...) }

// NotNegative records field as invalid when v < 0.
func NotNegative[T ~int | ~int64](c *Check, field string, v T) {
	if v < 0 {
		if d, ok := any(v).(time.Duration); ok {
			c.Failf(field, "must not be negative (got %v)", d)
			return
		}
		c.Failf(field, "must not be negative (got %d)", v)
	}
}

// Default returns def when v is zero, else v.
func Default[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
