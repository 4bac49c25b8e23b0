package hub

import (
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// TestChanSet checks the sorted set against a map over random adds and
// removes.
func TestChanSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var c chanSet
	model := map[string]bool{}
	for i := range 5000 {
		ch := "ch" + strconv.Itoa(rng.IntN(40))
		if rng.IntN(3) == 0 {
			if got, want := c.remove(ch), model[ch]; got != want {
				t.Fatalf("op %d: remove(%s) = %v, want %v", i, ch, got, want)
			}
			delete(model, ch)
		} else {
			c.add(ch)
			model[ch] = true
		}
		if want := slices.Sorted(maps.Keys(model)); !slices.Equal(c, want) && !(len(c) == 0 && len(want) == 0) {
			t.Fatalf("op %d: set %q, want %q", i, c, want)
		}
		if probe := "ch" + strconv.Itoa(rng.IntN(40)); c.has(probe) != model[probe] {
			t.Fatalf("op %d: has(%s) = %v", i, probe, !model[probe])
		}
	}
}
