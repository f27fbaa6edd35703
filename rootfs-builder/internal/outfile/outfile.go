// Package outfile puts a finished temporary file in place of a build
// product, unless the product already holds the same bytes.
package outfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// Commit renames tmp to path, or removes tmp when path already holds the
// same bytes. A rebuild from unchanged input (wrenctl vm up builds the
// guest's boot files on every start) then leaves the product alone: its
// inode and page cache stay, and the disk gets nothing to write back while
// the VM it is for boots. It reports whether path was replaced.
func Commit(tmp, path string) (replaced bool, err error) {
	same, err := sameContent(tmp, path)
	if err != nil {
		return false, err
	}
	if same {
		return false, os.Remove(tmp)
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, err
	}
	return true, nil
}

// sameContent reports whether b exists and has a's bytes.
func sameContent(a, b string) (bool, error) {
	fb, err := os.Open(b)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer fb.Close()
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	sa, err := fa.Stat()
	if err != nil {
		return false, err
	}
	sb, err := fb.Stat()
	if err != nil {
		return false, err
	}
	if !sb.Mode().IsRegular() || sa.Size() != sb.Size() {
		return false, nil
	}
	const chunk = 1 << 20
	ra, rb := bufio.NewReaderSize(fa, chunk), bufio.NewReaderSize(fb, chunk)
	bufA, bufB := make([]byte, chunk), make([]byte, chunk)
	for {
		na, errA := io.ReadFull(ra, bufA)
		nb, errB := io.ReadFull(rb, bufB)
		if na != nb || !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		endA, endB := isEnd(errA), isEnd(errB)
		if endA && endB {
			return true, nil
		}
		if errA != nil && !endA {
			return false, fmt.Errorf("compare %s: %w", a, errA)
		}
		if errB != nil && !endB {
			return false, fmt.Errorf("compare %s: %w", b, errB)
		}
		if endA != endB {
			return false, nil
		}
	}
}

func isEnd(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
