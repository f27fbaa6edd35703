package uevent

import "testing"

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(capturedLoopAdd); err != nil {
			b.Fatal(err)
		}
	}
}
