package cpio

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Reader reads a newc archive record by record. It is used to check what
// the builder wrote; it accepts only what Writer produces (newc, no CRC).
type Reader struct {
	r       *bufio.Reader
	off     int64
	pending int64
	pad     int
	done    bool
}

// NewReader returns a Reader reading from r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReader(r)} }

// Next returns the next record's header; its data can then be read from
// the Reader. It returns io.EOF after the trailer.
func (r *Reader) Next() (*Header, error) {
	if r.done {
		return nil, io.EOF
	}
	if _, err := r.r.Discard(int(r.pending) + r.pad); err != nil {
		return nil, fmt.Errorf("cpio: skip data: %w", unexpected(err))
	}
	r.off += r.pending + int64(r.pad)
	r.pending, r.pad = 0, 0
	var raw [headerLen]byte
	if _, err := io.ReadFull(r.r, raw[:]); err != nil {
		return nil, fmt.Errorf("cpio: header at %d: %w", r.off, unexpected(err))
	}
	if string(raw[:6]) != magic {
		return nil, fmt.Errorf("cpio: bad magic %q at offset %d", raw[:6], r.off)
	}
	var f [13]uint32
	for i := range f {
		v, err := strconv.ParseUint(string(raw[6+8*i:14+8*i]), 16, 32)
		if err != nil {
			return nil, fmt.Errorf("cpio: header field %d at offset %d: %w", i, r.off, err)
		}
		f[i] = uint32(v)
	}
	nameSize := int(f[11])
	if nameSize < 1 || nameSize > maxNameLen+1 {
		return nil, fmt.Errorf("cpio: bad name size %d at offset %d", nameSize, r.off)
	}
	name := make([]byte, nameSize+pad4(headerLen+nameSize))
	if _, err := io.ReadFull(r.r, name); err != nil {
		return nil, fmt.Errorf("cpio: name at %d: %w", r.off, unexpected(err))
	}
	if name[nameSize-1] != 0 {
		return nil, fmt.Errorf("cpio: name not NUL-terminated at offset %d", r.off)
	}
	r.off += int64(headerLen + len(name))
	h := &Header{
		Ino:   f[0],
		Type:  Type(f[1] & typeMask),
		Perm:  f[1] & 0o7777,
		UID:   f[2],
		GID:   f[3],
		NLink: f[4],
		MTime: f[5],
		Size:  f[6],
		Major: f[9],
		Minor: f[10],
		Name:  string(name[:nameSize-1]),
	}
	if h.Name == trailer {
		r.done = true
		return nil, io.EOF
	}
	r.pending = int64(h.Size)
	r.pad = pad4(int(h.Size))
	return h, nil
}

// Read reads the current record's data.
func (r *Reader) Read(p []byte) (int, error) {
	if r.pending == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.pending {
		p = p[:r.pending]
	}
	n, err := r.r.Read(p)
	r.pending -= int64(n)
	r.off += int64(n)
	if err == io.EOF && r.pending > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
