package main

import (
	"math"
	"testing"
)

func TestQuantile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	for _, c := range []struct{ q, want float64 }{{0, 1}, {0.5, 3}, {1, 5}, {0.95, 4.8}, {0.25, 2}} {
		if got := quantile(xs, c.q); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if xs[0] != 5 {
		t.Error("quantile sorted its input")
	}
	if got := median([]float64{1, 2, 3, 10}); got != 2.5 {
		t.Errorf("median of an even count = %v, want 2.5", got)
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing should be NaN")
	}
}

func TestRatiosAndSummary(t *testing.T) {
	r := ratios([]float64{2, 3, 9}, []float64{1, 3})
	if len(r) != 2 || r[0] != 2 || r[1] != 1 {
		t.Fatalf("ratios = %v", r)
	}
	s := summarize([]float64{3, 1, 2})
	if s.N != 3 || s.Median != 2 || s.Min != 1 || s.Max != 3 || s.Mean != 2 {
		t.Fatalf("summary = %+v", s)
	}
}

func TestMedianCI(t *testing.T) {
	xs := make([]float64, 50)
	for i := range xs {
		xs[i] = float64(50 - i) // 1..50, reversed
	}
	// For n=50 the 95% sign-test interval is x(18)..x(33).
	if lo, hi := medianCI(xs, 0.95); lo != 18 || hi != 33 {
		t.Errorf("medianCI(1..50) = %v..%v, want 18..33", lo, hi)
	}
	if lo, hi := medianCI([]float64{3, 1, 2}, 0.95); lo != 1 || hi != 3 {
		t.Errorf("medianCI of three = %v..%v, want min..max", lo, hi)
	}
	if d := differences([]float64{3, 5}, []float64{1, 1, 1}); len(d) != 2 || d[0] != 2 || d[1] != 4 {
		t.Errorf("differences = %v", d)
	}
}
