package stats

import (
	"math"
	"slices"
	"time"
)

// Quantile is the nearest-rank q-quantile of ds (the smallest value with at
// least q of the values at or below it): always one of the measured values,
// never an interpolation. 0 for no values. ds is not modified.
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	// The small epsilon keeps q·n that is a whole number in float64 error
	// (0.99·100 = 99.00000000000001) from rounding up one rank.
	i := int(math.Ceil(q*float64(len(s))-1e-9)) - 1
	return s[max(0, min(i, len(s)-1))]
}

// Median is Quantile(ds, 0.5).
func Median(ds []time.Duration) time.Duration { return Quantile(ds, 0.5) }
