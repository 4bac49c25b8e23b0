package option

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var errInvalid = errors.New("pkg: invalid option")

func TestCheck(t *testing.T) {
	c := NewCheck(errInvalid)
	NotNegative(c, "Size", 0)
	NotNegative(c, "Count", 3)
	if err := c.Err(); err != nil {
		t.Fatalf("valid values: %v", err)
	}
	NotNegative(c, "Timeout", -time.Second)
	NotNegative(c, "Limit", int64(-2))
	c.Failf("Addr", "is empty")
	err := c.Err()
	if !errors.Is(err, errInvalid) {
		t.Fatalf("%v does not wrap the sentinel", err)
	}
	for _, want := range []string{"Timeout must not be negative (got -1s)", "Limit must not be negative (got -2)", "Addr is empty"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
}

func TestDefault(t *testing.T) {
	if Default(0, 5) != 5 || Default(3, 5) != 3 || Default("", "x") != "x" {
		t.Fatal("Default")
	}
}
