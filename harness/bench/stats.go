// Package bench measures the agent as a host process drives it through its
// API, side by side with peers run in the same pass (a raw unix-socket echo
// and copy, runc, crun), and writes the results as a readable table and as
// JSON that a later run can be compared with.
package bench

import (
	"math"
	"slices"
	"time"
)

// Summary describes a set of samples: the centre and the spread.
type Summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	P25    float64 `json:"p25"`
	P75    float64 `json:"p75"`
	P99    float64 `json:"p99"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Mean   float64 `json:"mean"`
}

// Summarize computes the summary of xs; xs is not modified. Percentiles use
// linear interpolation between the closest ranks, so the median of an even
// count is the mean of the two middle samples.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	return Summary{
		N:      len(s),
		Median: percentile(s, 0.50),
		P25:    percentile(s, 0.25),
		P75:    percentile(s, 0.75),
		P99:    percentile(s, 0.99),
		Min:    s[0],
		Max:    s[len(s)-1],
		Mean:   sum / float64(len(s)),
	}
}

// percentile of sorted samples, q in [0,1].
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 1 {
		return sorted[0]
	}
	pos := q * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	frac := pos - float64(lo)
	return sorted[lo] + (sorted[hi]-sorted[lo])*frac
}

// Micros converts durations to microseconds, the unit of latency figures.
func Micros(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d.Nanoseconds()) / 1e3
	}
	return out
}

// Millis converts durations to milliseconds.
func Millis(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d.Nanoseconds()) / 1e6
	}
	return out
}
