// Package cpio writes and reads the "newc" (SVR4, magic 070701) cpio format
// that the Linux kernel unpacks as an initramfs.
//
// The Archive type collects entries and writes them byte-reproducibly: entries
// sorted by path, parent directories added, inode numbers assigned in order,
// one fixed mtime, and owners exactly as given (root by default). Nothing of
// the host (mtimes, owners, inode or device numbers) leaks into the output.
package cpio

import (
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Type is the kind of an archive entry.
type Type uint32

// Entry types, with their S_IFMT values as stored in the mode field.
const (
	TypeFile     Type = 0o100000
	TypeDir      Type = 0o040000
	TypeSymlink  Type = 0o120000
	TypeCharDev  Type = 0o020000
	TypeBlockDev Type = 0o060000
	TypeFIFO     Type = 0o010000
	TypeSocket   Type = 0o140000
)

const typeMask = 0o170000

func (t Type) String() string {
	switch t {
	case TypeFile:
		return "file"
	case TypeDir:
		return "dir"
	case TypeSymlink:
		return "symlink"
	case TypeCharDev:
		return "chardev"
	case TypeBlockDev:
		return "blockdev"
	case TypeFIFO:
		return "fifo"
	case TypeSocket:
		return "socket"
	}
	return fmt.Sprintf("type(%#o)", uint32(t))
}

// Header describes one record of a newc archive.
type Header struct {
	Name     string // path inside the archive, without a leading "/"
	Type     Type
	Perm     uint32 // permission bits including setuid/setgid/sticky (07777)
	UID, GID uint32
	NLink    uint32
	MTime    uint32
	Size     uint32 // data size: file contents, or the symlink target's length
	Ino      uint32
	// Major and Minor are the device number of a character or block device.
	Major, Minor uint32
}

// Mode is the st_mode value stored in the header: type and permission bits.
func (h *Header) Mode() uint32 { return uint32(h.Type) | h.Perm&0o7777 }

const (
	magic      = "070701"
	headerLen  = 110
	trailer    = "TRAILER!!!"
	maxNameLen = 4096
)

// Writer writes newc records in the order they are given. Most callers want
// Archive, which orders and normalises entries first.
type Writer struct {
	w       io.Writer
	pending int64 // data bytes still expected for the current record
	pad     int   // padding after the current record's data
	closed  bool
}

// NewWriter returns a Writer that writes records to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// ErrWriteTooLong is returned when more data is written than the header said.
var ErrWriteTooLong = errors.New("cpio: write too long")

// WriteHeader starts a new record. Its data (h.Size bytes) must then be
// written with Write before the next header.
func (w *Writer) WriteHeader(h *Header) error {
	if w.closed {
		return errors.New("cpio: write after close")
	}
	if err := w.finishRecord(); err != nil {
		return err
	}
	if err := checkName(h.Name); err != nil && h.Name != trailer {
		return err
	}
	if h.Type != TypeFile && h.Type != TypeSymlink && h.Size != 0 {
		return fmt.Errorf("cpio: %s %q cannot carry %d data bytes", h.Type, h.Name, h.Size)
	}
	var rmajor, rminor uint32
	if h.Type == TypeCharDev || h.Type == TypeBlockDev {
		rmajor, rminor = h.Major, h.Minor
	}
	nameSize := len(h.Name) + 1
	hdr := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		magic, h.Ino, h.Mode(), h.UID, h.GID, h.NLink, h.MTime, h.Size,
		0, 0, rmajor, rminor, nameSize, 0)
	buf := make([]byte, 0, headerLen+nameSize+3)
	buf = append(buf, hdr...)
	buf = append(buf, h.Name...)
	buf = append(buf, 0)
	buf = append(buf, make([]byte, pad4(len(buf)))...)
	if _, err := w.w.Write(buf); err != nil {
		return fmt.Errorf("cpio: write header %q: %w", h.Name, err)
	}
	w.pending = int64(h.Size)
	w.pad = pad4(int(h.Size))
	return nil
}

// Write writes data of the current record.
func (w *Writer) Write(p []byte) (int, error) {
	if int64(len(p)) > w.pending {
		n, err := w.Write(p[:w.pending])
		if err == nil {
			err = ErrWriteTooLong
		}
		return n, err
	}
	n, err := w.w.Write(p)
	w.pending -= int64(n)
	return n, err
}

func (w *Writer) finishRecord() error {
	if w.pending != 0 {
		return fmt.Errorf("cpio: record short by %d bytes", w.pending)
	}
	if w.pad > 0 {
		if _, err := w.w.Write(make([]byte, w.pad)); err != nil {
			return fmt.Errorf("cpio: write padding: %w", err)
		}
		w.pad = 0
	}
	return nil
}

// Close finishes the last record and writes the trailer. It does not close
// the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	if err := w.WriteHeader(&Header{Name: trailer, NLink: 1}); err != nil {
		return err
	}
	w.closed = true
	return w.finishRecord()
}

func pad4(n int) int { return (4 - n%4) % 4 }

// checkName rejects names that are not clean relative paths, so an archive
// can never carry "..", absolute or duplicate-slash names into the guest.
func checkName(name string) error {
	if name == "" || name == "." {
		return errors.New("cpio: empty name")
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("cpio: name too long (%d bytes)", len(name))
	}
	if strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("cpio: name %q contains NUL", name)
	}
	if path.Clean(name) != name || strings.HasPrefix(name, "/") || name == ".." || strings.HasPrefix(name, "../") {
		return fmt.Errorf("cpio: name %q is not a clean relative path", name)
	}
	return nil
}

// CleanName turns a guest path such as "/lib/modules/x.ko" into the form
// stored in the archive ("lib/modules/x.ko").
func CleanName(p string) (string, error) {
	name := strings.TrimPrefix(path.Clean("/"+p), "/")
	if err := checkName(name); err != nil {
		return "", err
	}
	return name, nil
}
