package cpio

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"sort"
)

// Entry is one path of an Archive. Owners are root unless set.
type Entry struct {
	Type     Type
	Perm     uint32
	UID, GID uint32
	// Data holds a file's contents when Source is empty.
	Data []byte
	// Source is a host file whose contents are read when the archive is
	// written (only its bytes are used, never its metadata).
	Source string
	// Target is a symlink's target.
	Target       string
	Major, Minor uint32
}

// Archive collects entries by path and writes them reproducibly.
type Archive struct {
	// MTime is the modification time of every entry (seconds since the
	// epoch; 0 unless set, e.g. from SOURCE_DATE_EPOCH).
	MTime   uint32
	entries map[string]Entry
}

// NewArchive returns an empty Archive.
func NewArchive() *Archive { return &Archive{entries: map[string]Entry{}} }

// Add records e at guest path p. Adding the same path twice is an error
// unless both entries are directories with the same attributes, so two
// sources cannot silently shadow each other.
func (a *Archive) Add(p string, e Entry) error {
	name, err := CleanName(p)
	if err != nil {
		return err
	}
	switch e.Type {
	case TypeFile:
		if e.Source != "" && e.Data != nil {
			return fmt.Errorf("cpio: %s: both Data and Source set", p)
		}
	case TypeSymlink:
		if e.Target == "" {
			return fmt.Errorf("cpio: symlink %s: empty target", p)
		}
	case TypeDir, TypeCharDev, TypeBlockDev, TypeFIFO, TypeSocket:
	default:
		return fmt.Errorf("cpio: %s: unknown entry type %#o", p, uint32(e.Type))
	}
	if old, ok := a.entries[name]; ok {
		if old.Type == TypeDir && e.Type == TypeDir && old.Perm == e.Perm && old.UID == e.UID && old.GID == e.GID {
			return nil
		}
		return fmt.Errorf("cpio: duplicate entry /%s", name)
	}
	a.entries[name] = e
	return nil
}

// Dir adds a directory.
func (a *Archive) Dir(p string, perm uint32) error {
	return a.Add(p, Entry{Type: TypeDir, Perm: perm})
}

// File adds a file with the given contents.
func (a *Archive) File(p string, perm uint32, data []byte) error {
	if data == nil {
		data = []byte{}
	}
	return a.Add(p, Entry{Type: TypeFile, Perm: perm, Data: data})
}

// HostFile adds a file whose contents come from a host path.
func (a *Archive) HostFile(p string, perm uint32, source string) error {
	return a.Add(p, Entry{Type: TypeFile, Perm: perm, Source: source})
}

// Symlink adds a symbolic link to target.
func (a *Archive) Symlink(p, target string) error {
	return a.Add(p, Entry{Type: TypeSymlink, Perm: 0o777, Target: target})
}

// CharDev adds a character device node.
func (a *Archive) CharDev(p string, perm, major, minor uint32) error {
	return a.Add(p, Entry{Type: TypeCharDev, Perm: perm, Major: major, Minor: minor})
}

// Has reports whether an entry exists at guest path p.
func (a *Archive) Has(p string) bool {
	name, err := CleanName(p)
	if err != nil {
		return false
	}
	_, ok := a.entries[name]
	return ok
}

// Names returns the archive's paths in the order they will be written,
// including parent directories added implicitly.
func (a *Archive) Names() []string {
	all := map[string]bool{}
	for name := range a.entries {
		all[name] = true
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			all[d] = true
		}
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	// Plain byte order puts every directory before its contents ("a" <
	// "a/b"), which the kernel's unpacker needs.
	sort.Strings(names)
	return names
}

// WriteTo writes the archive, including the trailer, to w.
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	tw := NewWriter(cw)
	for i, name := range a.Names() {
		e, ok := a.entries[name]
		if !ok {
			e = Entry{Type: TypeDir, Perm: 0o755}
		}
		if err := a.writeEntry(tw, name, uint32(i+1), e); err != nil {
			return cw.n, err
		}
	}
	if err := tw.Close(); err != nil {
		return cw.n, err
	}
	return cw.n, nil
}

func (a *Archive) writeEntry(tw *Writer, name string, ino uint32, e Entry) error {
	h := &Header{
		Name:  name,
		Type:  e.Type,
		Perm:  e.Perm,
		UID:   e.UID,
		GID:   e.GID,
		NLink: 1,
		MTime: a.MTime,
		Ino:   ino,
		Major: e.Major,
		Minor: e.Minor,
	}
	if e.Type == TypeDir {
		h.NLink = 2
	}
	var body io.Reader
	switch {
	case e.Type == TypeSymlink:
		h.Size = uint32(len(e.Target))
		body = bytes.NewReader([]byte(e.Target))
	case e.Type == TypeFile && e.Source != "":
		f, err := os.Open(e.Source)
		if err != nil {
			return fmt.Errorf("cpio: /%s: %w", name, err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("cpio: /%s: %w", name, err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("cpio: /%s: source %s is not a regular file", name, e.Source)
		}
		if st.Size() > math.MaxUint32 {
			return fmt.Errorf("cpio: /%s: source %s too large for newc (%d bytes)", name, e.Source, st.Size())
		}
		h.Size = uint32(st.Size())
		body = io.LimitReader(f, st.Size())
	case e.Type == TypeFile:
		if len(e.Data) > math.MaxUint32 {
			return fmt.Errorf("cpio: /%s: too large for newc", name)
		}
		h.Size = uint32(len(e.Data))
		body = bytes.NewReader(e.Data)
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if body == nil {
		return nil
	}
	n, err := io.Copy(tw, body)
	if err != nil {
		return fmt.Errorf("cpio: /%s: %w", name, err)
	}
	if n != int64(h.Size) {
		return fmt.Errorf("cpio: /%s: source changed size while writing (%d of %d bytes)", name, n, h.Size)
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Walk calls fn for every entry in write order, including the parent
// directories the archive adds (as 0755 root-owned directories).
func (a *Archive) Walk(fn func(name string, e Entry) error) error {
	for _, name := range a.Names() {
		e, ok := a.entries[name]
		if !ok {
			e = Entry{Type: TypeDir, Perm: 0o755}
		}
		if err := fn(name, e); err != nil {
			return err
		}
	}
	return nil
}
