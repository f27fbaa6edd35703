package vhostuser

import (
	"encoding/binary"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func socketPair(t *testing.T) (a, b *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "sock")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

func header(req, flags, size uint32) []byte {
	b := make([]byte, 12)
	binary.LittleEndian.PutUint32(b[0:], req)
	binary.LittleEndian.PutUint32(b[4:], flags)
	binary.LittleEndian.PutUint32(b[8:], size)
	return b
}

func TestReadMessageWithFDs(t *testing.T) {
	a, b := socketPair(t)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	// The fd rides on the header; the payload comes in a later write.
	if _, _, err := a.WriteMsgUnix(header(reqSetVringKick, 1, 8), unix.UnixRights(efd), nil); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		if _, err := a.Write(u64Bytes(1)); err != nil {
			t.Errorf("payload write: %v", err)
		}
	}()
	m, err := readMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	defer m.closeFiles()
	if m.request != reqSetVringKick || len(m.files) != 1 {
		t.Fatalf("message %d with %d fds", m.request, len(m.files))
	}
	if v, err := m.u64(); err != nil || v != 1 {
		t.Fatalf("u64 = %d %v", v, err)
	}
	if _, _, err := m.vringState(); err != nil {
		t.Fatal("8-byte vring state rejected")
	}
	// Received fds are non-blocking, so Close can wake a kick reader.
	rc, err := m.files[0].SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	if err := rc.Control(func(fd uintptr) { flags, _ = unix.FcntlInt(fd, unix.F_GETFL, 0) }); err != nil {
		t.Fatal(err)
	}
	if flags&unix.O_NONBLOCK == 0 {
		t.Fatal("received fd is blocking")
	}
}

func TestReadMessageRejects(t *testing.T) {
	t.Run("version", func(t *testing.T) {
		a, b := socketPair(t)
		if _, err := a.Write(header(reqGetFeatures, 2, 0)); err != nil {
			t.Fatal(err)
		}
		if _, err := readMessage(b); err == nil {
			t.Fatal("version 2 accepted")
		}
	})
	t.Run("oversized", func(t *testing.T) {
		a, b := socketPair(t)
		efd, _ := unix.Eventfd(0, unix.EFD_CLOEXEC)
		defer unix.Close(efd)
		if _, _, err := a.WriteMsgUnix(header(reqSetMemTable, 1, maxPayload+1), unix.UnixRights(efd), nil); err != nil {
			t.Fatal(err)
		}
		before := countFDs(t)
		if _, err := readMessage(b); err == nil {
			t.Fatal("oversized payload accepted")
		}
		if after := countFDs(t); after > before {
			t.Fatalf("received fd leaked (%d → %d)", before, after)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		a, b := socketPair(t)
		if _, err := a.Write(header(reqSetFeatures, 1, 8)[:12]); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Write([]byte{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		a.Close()
		if _, err := readMessage(b); err == nil {
			t.Fatal("truncated payload accepted")
		}
	})
	t.Run("payload sizes", func(t *testing.T) {
		m := &message{request: reqSetFeatures, payload: make([]byte, 4)}
		if _, err := m.u64(); err == nil {
			t.Fatal("4-byte u64 accepted")
		}
		if _, _, err := m.vringState(); err == nil {
			t.Fatal("4-byte vring state accepted")
		}
	})
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestNotifier(t *testing.T) {
	var nilN *Notifier
	nilN.Notify() // no call fd yet: a no-op
	(&Notifier{}).Notify()

	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	n := &Notifier{}
	n.set(os.NewFile(uintptr(efd), "call"))
	defer n.set(nil)
	n.Notify()
	var b [8]byte
	if _, err := unix.Read(efd, b[:]); err != nil || binary.LittleEndian.Uint64(b[:]) != 1 {
		t.Fatalf("eventfd read %d %v", binary.LittleEndian.Uint64(b[:]), err)
	}
	// A saturated counter must not block the caller (it holds the
	// device lock).
	binary.LittleEndian.PutUint64(b[:], 0xfffffffffffffffe)
	if _, err := unix.Write(efd, b[:]); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { n.Notify(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Notify blocked on a saturated eventfd")
	}
}
