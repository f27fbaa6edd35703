package stdio

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPipeCapacity(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, 128<<10); err != nil {
		t.Fatal(err)
	}
	if got := pipeCapacity(r); got != 128<<10 {
		t.Errorf("pipeCapacity = %d, want %d", got, 128<<10)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "plain"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := pipeCapacity(f); got != 0 {
		t.Errorf("pipeCapacity of a regular file = %d, want 0", got)
	}
}
