package e2e

import (
	"math"
	"testing"
)

// medianCI's coverage for n samples is 1-2·P(Binomial(n,1/2) < k); the
// rows are the textbook order statistics.
func TestMedianCI(t *testing.T) {
	seq := func(n int) []float64 {
		s := make([]float64, n)
		for i := range s {
			s[i] = float64(i + 1)
		}
		return s
	}
	for _, tc := range []struct {
		n            int
		lo, hi, conf float64
	}{
		{n: 1, lo: 1, hi: 1, conf: 0},
		{n: 5, lo: 1, hi: 5, conf: 0.9375},
		{n: 6, lo: 1, hi: 6, conf: 0.96875},
		{n: 10, lo: 2, hi: 9, conf: 0.978515625},
		{n: 20, lo: 6, hi: 15, conf: 0.958610535},
	} {
		lo, hi, conf := medianCI(seq(tc.n))
		if lo != tc.lo || hi != tc.hi || math.Abs(conf-tc.conf) > 1e-6 {
			t.Errorf("n=%d: [%v, %v] at %v, want [%v, %v] at %v", tc.n, lo, hi, conf, tc.lo, tc.hi, tc.conf)
		}
	}
}
