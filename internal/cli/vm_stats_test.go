package cli

import "testing"

func TestSparkline(t *testing.T) {
	for _, tc := range []struct {
		vals []float64
		top  float64
		want string
	}{
		{nil, 100, "-"},
		{[]float64{0, 50, 100}, 100, "▁▄█"},
		{[]float64{150, -5}, 100, "█▁"}, // clamped
		{[]float64{100, 200}, 200, "▄█"},
		{[]float64{7}, 0, "▁"},
	} {
		if got := sparkline(tc.vals, tc.top); got != tc.want {
			t.Errorf("sparkline(%v, %v) = %q; want %q", tc.vals, tc.top, got, tc.want)
		}
	}
}
