package vm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"

	"golang.org/x/sys/unix"
)

// memPage is the unit the guest memory digest and copy work in: the host's
// page size, the granule in which a page is either all zero or not.
const memPage = 4096

// memChunk is how much of a data extent is read at once.
const memChunk = 1 << 20

// MemDigest summarises a guest memory file: its size, how many pages hold
// data, and a SHA-256 of the offset and content of every non-zero page
// (zero pages read the same from a hole, so leaving them out loses nothing:
// a page that changes to or from zero changes the set of offsets hashed).
type MemDigest struct {
	Size     int64  `json:"size"`
	Pages    int64  `json:"nonzero_pages"`
	SHA256   string `json:"sha256"`
	DataSize int64  `json:"data_extents_bytes"`
}

// digestMemory reads the memory file src and, when dst is not nil, writes
// every non-zero page of it at the same offset into dst (which must be
// empty; it is sized to src). Only the file's data extents are read
// (SEEK_DATA/SEEK_HOLE): a guest touches a fraction of its RAM, the rest is
// holes that cost nothing to skip.
func digestMemory(src *os.File, dst *os.File) (*MemDigest, error) {
	st, err := src.Stat()
	if err != nil {
		return nil, err
	}
	d := &MemDigest{Size: st.Size()}
	if dst != nil {
		if err := dst.Truncate(d.Size); err != nil {
			return nil, fmt.Errorf("size the memory copy: %w", err)
		}
	}
	h := sha256.New()
	var hdr [8]byte
	binary.LittleEndian.PutUint64(hdr[:], uint64(d.Size))
	h.Write(hdr[:])
	buf := make([]byte, memChunk)
	zero := make([]byte, memPage)
	fd := int(src.Fd())
	for off := int64(0); off < d.Size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole up to the end
		}
		if err != nil {
			return nil, fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("seek hole: %w", err)
		}
		d.DataSize += hole - data
		if err := digestExtent(src, dst, data, hole, buf, zero, h, d); err != nil {
			return nil, err
		}
		off = hole
	}
	d.SHA256 = hex.EncodeToString(h.Sum(nil))
	return d, nil
}

// digestExtent hashes (and copies) the non-zero pages of [from, to).
func digestExtent(src, dst *os.File, from, to int64, buf, zero []byte, h hash.Hash, d *MemDigest) error {
	var hdr [8]byte
	for off := from; off < to; {
		n := int64(len(buf))
		if to-off < n {
			n = to - off
		}
		if _, err := src.ReadAt(buf[:n], off); err != nil {
			return fmt.Errorf("read memory at %#x: %w", off, err)
		}
		// Runs of non-zero pages are written with one pwrite.
		run := int64(-1)
		flush := func(end int64) error {
			if run < 0 || dst == nil {
				run = -1
				return nil
			}
			_, err := dst.WriteAt(buf[run:end], off+run)
			run = -1
			if err != nil {
				return fmt.Errorf("write memory copy: %w", err)
			}
			return nil
		}
		for p := int64(0); p < n; p += memPage {
			end := min(p+memPage, n)
			page := buf[p:end]
			if bytes.Equal(page, zero[:len(page)]) {
				if err := flush(p); err != nil {
					return err
				}
				continue
			}
			binary.LittleEndian.PutUint64(hdr[:], uint64(off+p))
			h.Write(hdr[:])
			h.Write(page)
			d.Pages++
			if run < 0 {
				run = p
			}
		}
		if err := flush(n); err != nil {
			return err
		}
		off += n
	}
	return nil
}
