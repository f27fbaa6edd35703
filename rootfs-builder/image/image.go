// Package image builds the guest's root filesystem as a Kata-layout DAX
// disk image, so one read-only file on the host can back every pod's root
// through an NVDIMM (page cache shared, no per-VM copy):
//
//	0        MBR #1: one partition from 3 MiB to the end (for virtio-blk readers)
//	4 KiB    NVDIMM PFN info block ("NVDIMM_PFN_INFO", fsdax, data offset 2 MiB)
//	2 MiB    MBR #2: the same partition at 1 MiB relative to 2 MiB, which is
//	         where /dev/pmem0 starts once libnvdimm honours the PFN block
//	3 MiB    ext4, made with mke2fs -d -E offset= (no root, no loop device)
//
// The file size is rounded up to 128 MiB: QEMU plugs the NVDIMM as memory,
// and Linux hot-adds memory in 128 MiB blocks. A guest mounts /dev/pmem0p1
// with -o dax.
package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/rootfs-builder/cpio"
	"github.com/wren-vm/wren/rootfs-builder/internal/outfile"
)

// Layout constants (Kata osbuilder image_builder.sh / nsdax.gpl.c).
const (
	MiB           = 1 << 20
	PFNOffset     = 4096    // where libnvdimm looks for the info block
	DataOffset    = 2 * MiB // start of /dev/pmem0 inside the image
	PartOffset    = 3 * MiB // the filesystem
	DefaultAlign  = 128 * MiB
	sectorSize    = 512
	pfnModeRAM    = 1 // struct pages in guest RAM, not on the device
	pfnAlignment  = 2 * MiB
	minFSBytes    = 32 * MiB
	fsBlockSize   = 4096
	pfnInfoSize   = 4096
	pfnSignature  = "NVDIMM_PFN_INFO\x00"
	mbrDiskSigVal = 0x5752454e // "WREN"
	fsUUID        = "5752454e-0000-4000-8000-000000000001"
)

// Options describe an image.
type Options struct {
	// Tree is the content, e.g. from initramfs.Archive. Device nodes are
	// skipped: the guest's devtmpfs provides them.
	Tree *cpio.Archive
	// Out is the image file to write.
	Out string
	// Align rounds the file size up; default DefaultAlign.
	Align int64
	// ExtraBytes of free space in the filesystem beyond what the content
	// needs (default 16 MiB).
	ExtraBytes int64
	// MTime is every file's mtime and the filesystem's creation time.
	MTime uint32
	// Progress receives one line per step (nil: silent).
	Progress io.Writer
}

func progress(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// Build writes the image described by opts.
func Build(ctx context.Context, opts Options) error {
	if opts.Tree == nil {
		return errors.New("image: no content tree")
	}
	if opts.Out == "" {
		return errors.New("image: no output path")
	}
	if _, err := exec.LookPath("mke2fs"); err != nil {
		return errors.New("image: mke2fs not found (apt-get install e2fsprogs)")
	}
	if opts.Align == 0 {
		opts.Align = DefaultAlign
	}
	if opts.Align%MiB != 0 || opts.Align <= 0 {
		return fmt.Errorf("image: alignment %d is not a positive multiple of 1 MiB", opts.Align)
	}
	if opts.ExtraBytes == 0 {
		opts.ExtraBytes = 16 * MiB
	}
	outDir := filepath.Dir(opts.Out)
	stage, err := os.MkdirTemp(outDir, ".image-stage-")
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer os.RemoveAll(stage) // only regular files, dirs and symlinks: no mounts
	progress(opts.Progress, "image: staging content in %s", stage)
	content, err := stageTree(opts.Tree, stage, opts.MTime)
	if err != nil {
		return err
	}
	// Metadata overhead of ext4 (inode tables, journal, bitmaps) is well
	// under a third of a small filesystem; the rest is slack.
	fsBytes := roundUp(content+content/3+opts.ExtraBytes, MiB)
	fsBytes = max(fsBytes, minFSBytes)
	total := roundUp(PartOffset+fsBytes, opts.Align)
	fsBytes = total - PartOffset

	tmp, err := os.CreateTemp(outDir, "."+filepath.Base(opts.Out)+"-")
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := tmp.Truncate(total); err != nil {
		return fmt.Errorf("image: size %d: %w", total, err)
	}
	if err := writeHeader(tmp, total); err != nil {
		return err
	}
	progress(opts.Progress, "image: mke2fs ext4 %d MiB at offset %d MiB (image %d MiB)", fsBytes/MiB, PartOffset/MiB, total/MiB)
	if err := mkfs(ctx, tmp.Name(), stage, fsBytes, opts.MTime); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	replaced, err := outfile.Commit(tmp.Name(), opts.Out)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	if !replaced {
		progress(opts.Progress, "image: %s unchanged (%d MiB)", opts.Out, total/MiB)
		return nil
	}
	progress(opts.Progress, "image: wrote %s (%d MiB)", opts.Out, total/MiB)
	return nil
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// stageTree writes the archive's files, directories and symlinks under dir
// with the archive's modes, owners and mtime, and returns the bytes used.
func stageTree(tree *cpio.Archive, dir string, mtime uint32) (int64, error) {
	var used int64
	ts := []unix.Timespec{{Sec: int64(mtime)}, {Sec: int64(mtime)}}
	var dirs []string
	err := tree.Walk(func(name string, e cpio.Entry) error {
		p := filepath.Join(dir, filepath.FromSlash(name))
		switch e.Type {
		case cpio.TypeDir:
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, p)
			used += fsBlockSize
		case cpio.TypeFile:
			n, err := writeFile(p, e)
			if err != nil {
				return err
			}
			used += roundUp(n, fsBlockSize)
		case cpio.TypeSymlink:
			if err := os.Symlink(e.Target, p); err != nil {
				return err
			}
		default:
			return nil // device nodes, fifos, sockets: not in a disk image
		}
		if os.Geteuid() == 0 {
			if err := os.Lchown(p, int(e.UID), int(e.GID)); err != nil {
				return err
			}
		}
		if e.Type != cpio.TypeSymlink {
			if err := os.Chmod(p, os.FileMode(e.Perm&0o777)|modeBits(e.Perm)); err != nil {
				return err
			}
		}
		if e.Type != cpio.TypeDir {
			return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("image: stage content: %w", err)
	}
	// Directory mtimes last: creating entries inside changes them.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, dirs[i], ts, 0); err != nil {
			return 0, fmt.Errorf("image: stage content: %w", err)
		}
	}
	return used, nil
}

func modeBits(perm uint32) os.FileMode {
	var m os.FileMode
	if perm&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if perm&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if perm&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

func writeFile(p string, e cpio.Entry) (int64, error) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var src io.Reader = bytes.NewReader(e.Data)
	if e.Source != "" {
		s, err := os.Open(e.Source)
		if err != nil {
			return 0, err
		}
		defer s.Close()
		src = s
	}
	n, err := io.Copy(f, src)
	if err != nil {
		return 0, err
	}
	return n, f.Close()
}

// mbr returns a DOS partition table with one Linux partition.
func mbr(startLBA, sectors uint32) []byte {
	b := make([]byte, sectorSize)
	binary.LittleEndian.PutUint32(b[440:], mbrDiskSigVal)
	e := b[446:462]
	// CHS fields are the "use LBA" sentinel values.
	copy(e, []byte{0x00, 0xfe, 0xff, 0xff, 0x83, 0xfe, 0xff, 0xff})
	binary.LittleEndian.PutUint32(e[8:], startLBA)
	binary.LittleEndian.PutUint32(e[12:], sectors)
	b[510], b[511] = 0x55, 0xaa
	return b
}

// PFNInfo returns the libnvdimm PFN info block (struct nd_pfn_sb, version
// 1.2) that turns the NVDIMM's namespace into an fsdax device whose data
// starts at DataOffset, with its Fletcher-64 checksum.
func PFNInfo() []byte {
	b := make([]byte, pfnInfoSize)
	copy(b[0:16], pfnSignature)
	// uuid (16..32) and parent_uuid (32..48) stay zero: a label-less
	// (io) namespace has a zero uuid. flags (48) is zero.
	binary.LittleEndian.PutUint16(b[52:], 1)                        // version_major
	binary.LittleEndian.PutUint16(b[54:], 2)                        // version_minor
	binary.LittleEndian.PutUint64(b[56:], DataOffset)               // dataoff
	binary.LittleEndian.PutUint64(b[64:], 0)                        // npfns
	binary.LittleEndian.PutUint32(b[72:], pfnModeRAM)               // mode
	binary.LittleEndian.PutUint32(b[76:], 0)                        // start_pad
	binary.LittleEndian.PutUint32(b[80:], 0)                        // end_trunc
	binary.LittleEndian.PutUint32(b[84:], pfnAlignment)             // align
	binary.LittleEndian.PutUint64(b[pfnInfoSize-8:], fletcher64(b)) // checksum
	return b
}

// fletcher64 is the kernel's nd_fletcher64 over little-endian 32-bit words.
func fletcher64(b []byte) uint64 {
	var lo uint32
	var hi uint64
	for i := 0; i+4 <= len(b); i += 4 {
		lo += binary.LittleEndian.Uint32(b[i:])
		hi += uint64(lo)
	}
	return hi<<32 | uint64(lo)
}

func writeHeader(f *os.File, total int64) error {
	sectors := uint32((total - PartOffset) / sectorSize)
	for _, w := range []struct {
		off  int64
		data []byte
	}{
		{0, mbr(PartOffset/sectorSize, sectors)},
		{PFNOffset, PFNInfo()},
		{DataOffset, mbr((PartOffset-DataOffset)/sectorSize, sectors)},
	} {
		if _, err := f.WriteAt(w.data, w.off); err != nil {
			return fmt.Errorf("image: write header: %w", err)
		}
	}
	return nil
}

// mkfs makes the ext4 filesystem from the staged tree inside the image at
// PartOffset. UUID, directory hash seed and timestamps are fixed, so the
// same content gives the same filesystem.
func mkfs(ctx context.Context, img, stage string, fsBytes int64, mtime uint32) error {
	uuid := fsUUID
	cmd := exec.CommandContext(ctx, "mke2fs", "-q", "-F", "-t", "ext4", "-b", strconv.Itoa(fsBlockSize),
		"-L", "wren-guest", "-U", uuid, "-m", "0",
		"-E", "offset="+strconv.Itoa(PartOffset)+",hash_seed="+uuid+",root_owner=0:0",
		"-d", stage, img, strconv.FormatInt(fsBytes/fsBlockSize, 10))
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME="+strconv.FormatUint(uint64(mtime), 10))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("image: mke2fs: %w\n%s", err, out)
	}
	return fixCtimes(ctx, img, stage, mtime)
}

// fixCtimes sets every inode's ctime to mtime. mke2fs -d copies each staged
// file's ctime, which records when staging happened and cannot be set on
// the host, so without this two builds a second apart differ.
func fixCtimes(ctx context.Context, img, stage string, mtime uint32) error {
	var cmds strings.Builder
	err := filepath.WalkDir(stage, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(stage, p)
		if err != nil {
			return err
		}
		name := "/" + filepath.ToSlash(rel)
		if rel == "." {
			name = "/"
		}
		if strings.ContainsAny(name, "\"\n\\") {
			return fmt.Errorf("image: cannot set the ctime of %q in the image (quote or newline in the name)", name)
		}
		fmt.Fprintf(&cmds, "set_inode_field \"%s\" ctime @%d\n", name, mtime)
		return nil
	})
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "debugfs", "-w", "-f", "-", img+"?offset="+strconv.Itoa(PartOffset))
	cmd.Stdin = strings.NewReader(cmds.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("image: debugfs (set ctimes): %w\n%s", err, out)
	}
	// debugfs reports failed requests on its output but still exits 0.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "set_inode_field:") {
			return fmt.Errorf("image: debugfs (set ctimes): %s", line)
		}
	}
	return nil
}
