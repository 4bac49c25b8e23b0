package load

import (
	"slices"
	"testing"
)

func TestParseList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{" a, b ,,c, ", []string{"a", "b", "c"}},
	} {
		if got := SplitList(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("SplitList(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got, err := ParseList[int]("1, 100,1000"); err != nil || !slices.Equal(got, []int{1, 100, 1000}) {
		t.Errorf("ParseList[int] = %v, %v", got, err)
	}
	if got, err := ParseList[float64]("0.5,2e3"); err != nil || !slices.Equal(got, []float64{0.5, 2000}) {
		t.Errorf("ParseList[float64] = %v, %v", got, err)
	}
	if _, err := ParseList[int]("1,x"); err == nil {
		t.Error("ParseList[int](\"1,x\") accepted x")
	}
}
