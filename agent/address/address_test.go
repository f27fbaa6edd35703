package address

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Address
		wantErr string
	}{
		{in: "vsock://-1:1024", want: Address{Scheme: Vsock, CID: -1, Port: 1024}},
		{in: "vsock://3:1024", want: Address{Scheme: Vsock, CID: 3, Port: 1024}},
		{in: "hvsock:///run/vm/vsock.sock:1024", want: Address{Scheme: HybridVsock, Path: "/run/vm/vsock.sock", Port: 1024}},
		{in: "hvsock://rel/v:sock:7", want: Address{Scheme: HybridVsock, Path: "rel/v:sock", Port: 7}},
		{in: "unix:///tmp/a.sock", want: Address{Scheme: Unix, Path: "/tmp/a.sock"}},
		{in: "unix://@wren", want: Address{Scheme: Unix, Path: "wren", Abstract: true}},
		{in: "vsock://3", wantErr: "want vsock://CID:PORT"},
		{in: "vsock://x:1", wantErr: "bad context id"},
		{in: "vsock://-2:1", wantErr: "bad context id"},
		{in: "vsock://3:99999999999", wantErr: "bad port"},
		{in: "hvsock:///a/b", wantErr: "want hvsock://UDS_PATH:PORT"},
		{in: "hvsock:///a/b:x", wantErr: "bad port"},
		{in: "hvsock://:5", wantErr: "want hvsock://UDS_PATH:PORT"},
		{in: "unix://relative", wantErr: "must be absolute"},
		{in: "unix://@", wantErr: "empty abstract"},
		{in: "tcp://1.2.3.4:5", wantErr: "unknown scheme"},
		{in: "/tmp/sock", wantErr: "missing scheme"},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) error = %v, want it to contain %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if got.String() != tt.in {
			t.Errorf("Parse(%q).String() = %q", tt.in, got.String())
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"vsock://-1:1024", "hvsock:///a:1", "unix://@x", "unix:///p", "vsock://:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if err != nil {
			return
		}
		// A parsed address must survive a round trip through its string form.
		b, err := Parse(a.String())
		if err != nil || a != b {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v, %v", s, a, a.String(), b, err)
		}
	})
}
