package client

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzHandshake feeds arbitrary VMM replies to the CONNECT handshake: it
// must never panic, must accept only an "OK " line, and must not consume
// anything past the reply's newline.
func FuzzHandshake(f *testing.F) {
	for _, s := range []string{"OK 1024\n", "OK 1\nttrpc-bytes", "NO\n", "", "OK", strings.Repeat("A", 100) + "\n", "OK \n\x00\x01"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, reply []byte) {
		rw := readWriter{bytes.NewReader(reply), &bytes.Buffer{}}
		_, err := handshake(rw, 1024)
		if rw.Buffer.String() != "CONNECT 1024\n" {
			t.Fatalf("wrote %q", rw.Buffer.String())
		}
		line, _, hasNL := bytes.Cut(reply, []byte("\n"))
		ok := hasNL && len(line) <= maxHandshakeLine && bytes.HasPrefix(line, []byte("OK "))
		if ok != (err == nil) {
			t.Fatalf("reply %q: err = %v, want ok=%v", reply, err, ok)
		}
		if err == nil {
			if rest := len(reply) - len(line) - 1; rw.Reader.Len() != rest {
				t.Fatalf("reply %q: %d bytes left unread, want %d", reply, rw.Reader.Len(), rest)
			}
		}
	})
}

type readWriter struct {
	*bytes.Reader
	*bytes.Buffer
}

func (rw readWriter) Read(p []byte) (int, error)  { return rw.Reader.Read(p) }
func (rw readWriter) Write(p []byte) (int, error) { return rw.Buffer.Write(p) }
