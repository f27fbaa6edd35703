package stdio

import (
	"context"
	"testing"
)

// BenchmarkReadFullPipe reads a stream whose writer keeps the pipe full, as
// figure 7's dd does: the cost per reply and the garbage per reply.
func BenchmarkReadFullPipe(b *testing.B) {
	for _, bc := range []struct {
		name       string
		pipe, size int
	}{
		{"pipe64K/len32K", 0, 32 << 10},
		{"pipe64K/len1M", 0, 1 << 20},
		{"pipe1M/len1M", 1 << 20, 1 << 20},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := NewPipes(bc.pipe)
			if err != nil {
				b.Fatal(err)
			}
			_, w, _ := s.ChildStdio()
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				chunk := make([]byte, 1<<20)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
			}()
			ctx := context.Background()
			var total int64
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				data, err := s.Read(ctx, Stdout, bc.size)
				if err != nil {
					b.Fatal(err)
				}
				total += int64(len(data))
			}
			b.StopTimer()
			b.ReportMetric(float64(total)/float64(b.N), "bytes/read")
			b.SetBytes(total / int64(b.N))
			close(stop)
			s.Close() // the writer gets EPIPE
			s.CloseChildEnds()
			<-done
		})
	}
}

// BenchmarkReadSparse reads small outputs with a large Len (an interactive
// process, a shim asking for 1 MiB): the garbage per reply should be the
// output, not the Len.
func BenchmarkReadSparse(b *testing.B) {
	for _, pipe := range []int{0, 1 << 20} {
		name := "pipe64K"
		if pipe > 0 {
			name = "pipe1M"
		}
		b.Run(name, func(b *testing.B) {
			s, err := NewPipes(pipe)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			defer s.CloseChildEnds()
			_, w, _ := s.ChildStdio()
			line := []byte("a line of output from an interactive process\n")
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := w.Write(line); err != nil {
					b.Fatal(err)
				}
				data, err := s.Read(ctx, Stdout, 1<<20)
				if err != nil || len(data) != len(line) {
					b.Fatalf("read %d bytes, %v", len(data), err)
				}
			}
		})
	}
}
