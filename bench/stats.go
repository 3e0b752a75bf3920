package main

import (
	"math"
	"sort"
)

// median returns the middle value of xs (the mean of the two middle values
// for an even count), or NaN for no values.
func median(xs []float64) float64 {
	return quantile(xs, 0.5)
}

// quantile returns the q-quantile of xs by linear interpolation between
// closest ranks (the "type 7" estimator of R and NumPy), or NaN for no
// values. xs is not modified.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

// ratios returns a[i]/b[i] for every pair.
func ratios(a, b []float64) []float64 {
	n := min(len(a), len(b))
	out := make([]float64, n)
	for i := range n {
		out[i] = a[i] / b[i]
	}
	return out
}

// summary is the distribution of one runtime's samples, in the samples'
// unit.
type summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	P95    float64 `json:"p95"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Mean   float64 `json:"mean"`
}

// summarize describes xs; no values give the zero summary, since JSON has
// no NaN.
func summarize(xs []float64) summary {
	if len(xs) == 0 {
		return summary{}
	}
	s := summary{N: len(xs), Median: median(xs), P95: quantile(xs, 0.95), Min: xs[0], Max: xs[0]}
	sum := 0.0
	for _, x := range xs {
		s.Min = min(s.Min, x)
		s.Max = max(s.Max, x)
		sum += x
	}
	s.Mean = sum / float64(len(xs))
	return s
}

// medianCI returns a distribution-free confidence interval for the median
// of xs at level conf: the pair of order statistics x(k), x(n-k+1) that
// cover the median with probability at least conf (the binomial, or sign
// test, interval). It needs no assumption about the shape of the
// distribution, which for latencies is long-tailed. Fewer than six
// values give [min, max], whose coverage is lower.
func medianCI(xs []float64, conf float64) (lo, hi float64) {
	n := len(xs)
	if n == 0 {
		return 0, 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	alpha := (1 - conf) / 2
	// The largest k with P(B <= k-1) <= alpha for B ~ Binomial(n, 1/2).
	k, cdf := 0, 0.0
	for i := 0; i < n; i++ {
		cdf += binomHalf(n, i)
		if cdf > alpha {
			break
		}
		k = i + 1
	}
	k = max(k, 1)
	return s[k-1], s[n-k]
}

// binomHalf is P(B = i) for B ~ Binomial(n, 1/2), computed in logs so that
// large n does not underflow.
func binomHalf(n, i int) float64 {
	ln, _ := math.Lgamma(float64(n + 1))
	li, _ := math.Lgamma(float64(i + 1))
	lr, _ := math.Lgamma(float64(n - i + 1))
	return math.Exp(ln - li - lr - float64(n)*math.Ln2)
}

// differences returns a[i]-b[i] for every pair.
func differences(a, b []float64) []float64 {
	n := min(len(a), len(b))
	out := make([]float64, n)
	for i := range n {
		out[i] = a[i] - b[i]
	}
	return out
}
