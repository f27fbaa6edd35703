package bench

import (
	"math"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want Summary
	}{
		{"empty", nil, Summary{}},
		{"one", []float64{7}, Summary{N: 1, Median: 7, P25: 7, P75: 7, P99: 7, Min: 7, Max: 7, Mean: 7}},
		{"odd unsorted", []float64{5, 1, 3}, Summary{N: 3, Median: 3, P25: 2, P75: 4, P99: 4.96, Min: 1, Max: 5, Mean: 3}},
		{"even", []float64{4, 1, 2, 3}, Summary{N: 4, Median: 2.5, P25: 1.75, P75: 3.25, P99: 3.97, Min: 1, Max: 4, Mean: 2.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Summarize(tc.in)
			if got.N != tc.want.N || !near(got.Median, tc.want.Median) || !near(got.P25, tc.want.P25) ||
				!near(got.P75, tc.want.P75) || !near(got.P99, tc.want.P99) || got.Min != tc.want.Min ||
				got.Max != tc.want.Max || !near(got.Mean, tc.want.Mean) {
				t.Errorf("Summarize(%v) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestSummarizeKeepsInput(t *testing.T) {
	in := []float64{3, 1, 2}
	Summarize(in)
	if in[0] != 3 || in[1] != 1 || in[2] != 2 {
		t.Fatalf("input reordered: %v", in)
	}
}

func TestSummarizeP99OfHundred(t *testing.T) {
	in := make([]float64, 100)
	for i := range in {
		in[i] = float64(i + 1)
	}
	in[99] = 1000 // one outlier moves p99 only part of the way
	s := Summarize(in)
	if !near(s.P99, 99+0.01*(1000-99)) || !near(s.Median, 50.5) {
		t.Fatalf("got %+v", s)
	}
}

func TestUnits(t *testing.T) {
	us := Micros([]time.Duration{1500 * time.Nanosecond})
	ms := Millis([]time.Duration{2500 * time.Microsecond})
	if !near(us[0], 1.5) || !near(ms[0], 2.5) {
		t.Fatalf("Micros %v Millis %v", us, ms)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
