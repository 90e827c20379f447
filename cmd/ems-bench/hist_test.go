package main

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	tests := []struct {
		name string
		gen  func(r *rand.Rand) time.Duration
	}{
		{"uniform µs", func(r *rand.Rand) time.Duration { return time.Duration(r.IntN(1000)) * time.Microsecond }},
		{"exponential ms", func(r *rand.Rand) time.Duration { return time.Duration(r.ExpFloat64() * float64(time.Millisecond)) }},
		{"small integers", func(r *rand.Rand) time.Duration { return time.Duration(r.IntN(100)) }},
		{"wide", func(r *rand.Rand) time.Duration { return time.Duration(1 << r.IntN(40)) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			var h histogram
			vals := make([]time.Duration, 100_000)
			for i := range vals {
				vals[i] = tc.gen(r)
				h.record(vals[i])
			}
			slices.Sort(vals)
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
				want := vals[int(q*float64(len(vals)-1))]
				got := h.quantile(q)
				// within one bucket: 1/128 of the value, or 1 for tiny ones
				tol := max(float64(want)/subBuckets, 1)
				if d := float64(got - want); d > tol || d < -tol {
					t.Errorf("q%.3f = %v, want %v ± %.0fns", q, got, want, tol)
				}
			}
			if h.count() != uint64(len(vals)) {
				t.Errorf("count %d", h.count())
			}
		})
	}
}

func TestHistogramIndexRoundTrip(t *testing.T) {
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 257, 1000, 1 << 20, 1<<62 + 12345} {
		mag, step := index(v)
		lo, w := bucketLow(mag, step), bucketWidth(mag)
		if v < lo || v >= lo+w {
			t.Errorf("%d in bucket [%d,%d)", v, lo, lo+w)
		}
	}
}
