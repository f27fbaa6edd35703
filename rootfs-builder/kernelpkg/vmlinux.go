package kernelpkg

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// bzImage boot protocol offsets (Documentation/x86/boot.rst).
const (
	offSetupSects    = 0x1f1
	offHeaderMagic   = 0x202 // "HdrS"
	offVersion       = 0x206
	offPayloadOffset = 0x248
	offPayloadLength = 0x24c
)

// Payload returns the compressed kernel inside a bzImage and the name of
// its compression, using the payload_offset/payload_length fields of the
// boot protocol (2.08+) rather than scanning for magic bytes.
func Payload(bz []byte) (data []byte, compression string, err error) {
	if len(bz) < offPayloadLength+4 || string(bz[offHeaderMagic:offHeaderMagic+4]) != "HdrS" {
		return nil, "", ErrNotBzImage
	}
	if v := binary.LittleEndian.Uint16(bz[offVersion:]); v < 0x208 {
		return nil, "", fmt.Errorf("boot protocol %#x has no payload fields (need 2.08+)", v)
	}
	setup := int(bz[offSetupSects])
	if setup == 0 {
		setup = 4
	}
	start := (setup + 1) * 512
	off := int(binary.LittleEndian.Uint32(bz[offPayloadOffset:]))
	n := int(binary.LittleEndian.Uint32(bz[offPayloadLength:]))
	if start+off < start || start+off+n > len(bz) || n <= 0 {
		return nil, "", fmt.Errorf("payload %d+%d outside the %d-byte image", start+off, n, len(bz))
	}
	p := bz[start+off : start+off+n]
	switch {
	case bytes.HasPrefix(p, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return p, "xz", nil
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		return p, "gzip", nil
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return p, "zstd", nil
	case bytes.HasPrefix(p, []byte{0x7f, 'E', 'L', 'F'}):
		return p, "none", nil
	}
	return nil, "", fmt.Errorf("unknown payload compression (first bytes % x)", p[:min(len(p), 8)])
}

// ExtractVmlinuxFile writes the ELF kernel contained in the bzImage at
// bzPath to out. xz payloads (Debian) use x86 BCJ filters that pure-Go xz
// readers lack, so xz and zstd go through the xz-utils/zstd commands; gzip
// is decoded in Go.
func ExtractVmlinuxFile(ctx context.Context, bzPath, out string) error {
	bz, err := os.ReadFile(bzPath)
	if err != nil {
		return fmt.Errorf("read kernel: %w", err)
	}
	payload, comp, err := Payload(bz)
	if err != nil {
		return fmt.Errorf("%s: %w", bzPath, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".vmlinux-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	switch comp {
	case "none":
		_, err = tmp.Write(payload)
	case "gzip":
		var zr *gzip.Reader
		if zr, err = gzip.NewReader(bytes.NewReader(payload)); err == nil {
			_, err = io.Copy(tmp, zr)
		}
	case "xz", "zstd":
		tool := map[string]string{"xz": "xz", "zstd": "zstd"}[comp]
		if _, lerr := exec.LookPath(tool); lerr != nil {
			return fmt.Errorf("%s: kernel payload is %s-compressed; install %s (apt-get install %s)", bzPath, comp, tool, map[string]string{"xz": "xz-utils", "zstd": "zstd"}[comp])
		}
		cmd := exec.CommandContext(ctx, tool, "-dc")
		if comp == "xz" {
			cmd.Args = append(cmd.Args, "--single-stream")
		}
		cmd.Stdin = bytes.NewReader(payload)
		cmd.Stdout = tmp
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err = cmd.Run(); err != nil {
			err = fmt.Errorf("%s -dc: %w: %s", tool, err, stderr.Bytes())
		}
	}
	if err != nil {
		return fmt.Errorf("decompress %s kernel payload of %s: %w", comp, bzPath, err)
	}
	if err := checkELF(tmp); err != nil {
		return fmt.Errorf("%s: extracted kernel: %w", bzPath, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}

func checkELF(f *os.File) error {
	var hdr [20]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return fmt.Errorf("read ELF header: %w", err)
	}
	if !bytes.HasPrefix(hdr[:], []byte{0x7f, 'E', 'L', 'F', 2}) {
		return fmt.Errorf("not a 64-bit ELF file")
	}
	return nil
}
