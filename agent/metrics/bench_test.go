package metrics

import "testing"

func BenchmarkGather(b *testing.B) {
	c := New("")
	b.ReportAllocs()
	for b.Loop() {
		if len(c.Gather()) == 0 {
			b.Fatal("empty")
		}
	}
}
