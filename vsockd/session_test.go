package vsockd

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wren-vm/wren/vsockd/virtq/virtqtest"
	"github.com/wren-vm/wren/vsockd/vsockpkt"
	"golang.org/x/sys/unix"
)

// A Go stand-in for QEMU 7.2's vhost-user-vsock-pci frontend: it replays the
// message sequence QEMU sends (realize, driver start, stop, reboot, exit)
// over a real socket with real memfd guest RAM and eventfds, and plays the
// guest driver on the shared rings.

const (
	vuGetFeatures         = 1
	vuSetFeatures         = 2
	vuSetOwner            = 3
	vuSetMemTable         = 5
	vuSetVringNum         = 8
	vuSetVringAddr        = 9
	vuSetVringBase        = 10
	vuGetVringBase        = 11
	vuSetVringKick        = 12
	vuSetVringCall        = 13
	vuSetVringErr         = 14
	vuGetProtocolFeatures = 15
	vuSetProtocolFeatures = 16
	vuSetVringEnable      = 18
	vuGetConfig           = 24

	fVersion1  = 1 << 32
	fProtocol  = 1 << 30
	pfReplyAck = 1 << 3
	pfConfig   = 1 << 9

	needReply = 0x8
	ramSize   = 1 << 20
	ringSize  = 128
	qemuVA    = 0x7f12_0000_0000 // pretend frontend virtual address of region 0
)

type frontend struct {
	t testing.TB
	c *net.UnixConn
}

func (f *frontend) send(req, flags uint32, payload []byte, fds ...int) {
	f.t.Helper()
	b := make([]byte, 12+len(payload))
	binary.LittleEndian.PutUint32(b[0:], req)
	binary.LittleEndian.PutUint32(b[4:], 1|flags)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(payload)))
	copy(b[12:], payload)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := f.c.WriteMsgUnix(b, oob, nil); err != nil {
		f.t.Fatalf("send request %d: %v", req, err)
	}
}

func (f *frontend) recv(req uint32) []byte {
	f.t.Helper()
	_ = f.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 12)
	if _, err := io.ReadFull(f.c, hdr); err != nil {
		f.t.Fatalf("reply to %d: %v", req, err)
	}
	if got := binary.LittleEndian.Uint32(hdr[0:]); got != req {
		f.t.Fatalf("reply for request %d, want %d", got, req)
	}
	// QEMU rejects anything but exactly VERSION|REPLY.
	if flags := binary.LittleEndian.Uint32(hdr[4:]); flags != 0x5 {
		f.t.Fatalf("reply flags %#x, want 0x5", flags)
	}
	p := make([]byte, binary.LittleEndian.Uint32(hdr[8:]))
	if _, err := io.ReadFull(f.c, p); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *frontend) getU64(req uint32) uint64 {
	f.t.Helper()
	f.send(req, 0, nil)
	p := f.recv(req)
	if len(p) != 8 {
		f.t.Fatalf("reply to %d: %d bytes, want 8", req, len(p))
	}
	return binary.LittleEndian.Uint64(p)
}

func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func state(i, n uint32) []byte {
	return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, i), n)
}

// ack sends a NEED_REPLY request and returns the backend's status.
func (f *frontend) ack(req uint32, payload []byte, fds ...int) uint64 {
	f.t.Helper()
	f.send(req, needReply, payload, fds...)
	p := f.recv(req)
	if len(p) != 8 {
		f.t.Fatalf("ack of %d: %d bytes", req, len(p))
	}
	return binary.LittleEndian.Uint64(p)
}

// eventfds the test created; closed before the fd leak check.
var testEventfds []int

func closeTestEventfds() {
	for _, fd := range testEventfds {
		unix.Close(fd)
	}
	testEventfds = nil
}

func eventfd(t testing.TB) int {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	testEventfds = append(testEventfds, fd)
	return fd
}

// guestRAM is one memfd region shared with the backend.
type guestRAM struct {
	fd   int
	data []byte
	gpa  uint64
	va   uint64
}

func newGuestRAM(t testing.TB, gpa, va uint64) *guestRAM {
	fd, err := unix.MemfdCreate("guest-ram", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, ramSize); err != nil {
		t.Fatal(err)
	}
	data, err := unix.Mmap(fd, 0, ramSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Munmap(data); unix.Close(fd) })
	return &guestRAM{fd: fd, data: data, gpa: gpa, va: va}
}

// vmState is the guest side of one driver start.
type vmState struct {
	rx, tx     *virtqtest.Driver
	kick, call [2]int
}

// startDriver replays QEMU's DRIVER_OK sequence (B) and returns the
// guest-side rings.
func startDriver(t testing.TB, f *frontend, rams [2]*guestRAM) *vmState {
	t.Helper()
	for i := range rams[0].data {
		rams[0].data[i] = 0
	}
	for i := range rams[1].data {
		rams[1].data[i] = 0
	}
	vm := &vmState{
		rx: virtqtest.NewRAM(rams[0].data, rams[0].gpa, ringSize),
		tx: virtqtest.NewRAM(rams[1].data, rams[1].gpa, ringSize),
	}
	f.send(vuSetFeatures, 0, u64(fVersion1|fProtocol))
	table := binary.LittleEndian.AppendUint32(nil, 2)
	table = binary.LittleEndian.AppendUint32(table, 0)
	for _, r := range rams {
		table = binary.LittleEndian.AppendUint64(table, r.gpa)
		table = binary.LittleEndian.AppendUint64(table, ramSize)
		table = binary.LittleEndian.AppendUint64(table, r.va)
		table = binary.LittleEndian.AppendUint64(table, 0)
	}
	if st := f.ack(vuSetMemTable, table, rams[0].fd, rams[1].fd); st != 0 {
		t.Fatalf("SET_MEM_TABLE status %d", st)
	}
	for i, d := range []*virtqtest.Driver{vm.rx, vm.tx} {
		r := rams[i]
		va := func(gpa uint64) uint64 { return gpa - r.gpa + r.va }
		f.send(vuSetVringNum, 0, state(uint32(i), ringSize))
		f.send(vuSetVringBase, 0, state(uint32(i), 0))
		addr := binary.LittleEndian.AppendUint32(nil, uint32(i))
		addr = binary.LittleEndian.AppendUint32(addr, 0)
		addr = binary.LittleEndian.AppendUint64(addr, va(d.Layout.DescAddr))
		addr = binary.LittleEndian.AppendUint64(addr, va(d.Layout.UsedAddr))
		addr = binary.LittleEndian.AppendUint64(addr, va(d.Layout.AvailAddr))
		addr = binary.LittleEndian.AppendUint64(addr, 0)
		if st := f.ack(vuSetVringAddr, addr); st != 0 {
			t.Fatalf("SET_VRING_ADDR %d status %d", i, st)
		}
		vm.kick[i] = eventfd(t)
		f.send(vuSetVringKick, 0, u64(uint64(i)), vm.kick[i])
	}
	for i := range 2 {
		f.send(vuSetVringEnable, 0, state(uint32(i), 1))
	}
	// The guest notifiers arrive last (and may be swapped at any time).
	for i := range 2 {
		vm.call[i] = eventfd(t)
		// Acked, so that everything before it has been applied too.
		if st := f.ack(vuSetVringCall, u64(uint64(i)), vm.call[i]); st != 0 {
			t.Fatalf("SET_VRING_CALL status %d", st)
		}
	}
	return vm
}

func kickFD(t testing.TB, fd int) {
	if _, err := unix.Write(fd, u64(1)); err != nil {
		t.Fatal(err)
	}
}

// waitCall waits for the backend to signal fd.
func waitCall(t testing.TB, fd int) {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, 5000)
	if err != nil || n != 1 {
		t.Fatalf("no interrupt from the backend (%d, %v)", n, err)
	}
	var b [8]byte
	if _, err := unix.Read(fd, b[:]); err != nil {
		t.Fatal(err)
	}
}

func (vm *vmState) sendPacket(t testing.TB, h vsockpkt.Header, payload []byte) {
	hdr := make([]byte, vsockpkt.HeaderLen)
	h.Len = uint32(len(payload))
	h.Encode(hdr)
	segs := []virtqtest.Seg{{Data: hdr}}
	if len(payload) > 0 {
		segs = append(segs, virtqtest.Seg{Data: payload})
	}
	vm.tx.Post(segs...)
	kickFD(t, vm.kick[1])
}

// recvPacket posts rx buffers, kicks, waits for an interrupt and decodes
// one packet.
func (vm *vmState) recvPacket(t testing.TB) (vsockpkt.Header, []byte) {
	t.Helper()
	for vm.rx.Free() >= 2 {
		vm.rx.Post(virtqtest.Seg{WriteLen: vsockpkt.HeaderLen}, virtqtest.Seg{WriteLen: 4096})
	}
	kickFD(t, vm.kick[0])
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if used := vm.rx.Collect(); len(used) > 0 {
			if len(used) != 1 {
				t.Fatalf("%d packets, want 1", len(used))
			}
			h, err := vsockpkt.Decode(used[0].Written)
			if err != nil {
				t.Fatal(err)
			}
			return h, used[0].Written[vsockpkt.HeaderLen:]
		}
		waitCall(t, vm.call[0])
	}
	t.Fatal("no rx packet")
	return vsockpkt.Header{}, nil
}

// connectThroughGuest does a hybrid CONNECT that the guest side accepts.
func connectThroughGuest(t testing.TB, vm *vmState, uds string, port uint32) net.Conn {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	res := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := Dial(ctx, uds, port)
		res <- result{c, err}
	}()
	req, _ := vm.recvPacket(t)
	if req.Op != vsockpkt.OpRequest || req.DstPort != port {
		t.Fatalf("got %v to port %d, want REQUEST to %d", req.Op, req.DstPort, port)
	}
	vm.sendPacket(t, vsockpkt.Header{SrcCID: guestCID, DstCID: 2, SrcPort: port, DstPort: req.SrcPort,
		Type: vsockpkt.TypeStream, Op: vsockpkt.OpResponse, BufAlloc: 1 << 20}, nil)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	// Data flows host → guest.
	if _, err := r.c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	h, payload := vm.recvPacket(t)
	if h.Op != vsockpkt.OpRW || string(payload) != "ping" {
		t.Fatalf("got %v %q, want RW ping", h.Op, payload)
	}
	return r.c
}

// ramMappings counts mappings of the test's guest RAM memfds.
func ramMappings(t testing.TB) int {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "memfd:guest-ram")
}

// newFDs is the fds in after that were not open (to the same thing) in
// before. Earlier tests' fds may still close in the background, so only new
// ones count; the directory fd of the listing itself has no target by then.
func newFDs(before, after map[string]string) map[string]string {
	out := map[string]string{}
	for fd, target := range after {
		if target != "" && before[fd] != target {
			out[fd] = target
		}
	}
	return out
}

// openFDs lists this process's open fds (number → target).
func openFDs(t testing.TB) map[string]string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	fds := map[string]string{}
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		fds[e.Name()] = target
	}
	return fds
}

func TestVhostUserSession(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t)
	cfg.UDSPath = filepath.Join(dir, "v.sock")
	t.Cleanup(closeTestEventfds)
	rams := [2]*guestRAM{newGuestRAM(t, 0x100000, qemuVA), newGuestRAM(t, 0x400000, qemuVA+0x10000000)}
	baseFDs, baseG, baseMaps := openFDs(t), runtime.NumGoroutine(), ramMappings(t)

	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := ListenUnix(filepath.Join(dir, "vu.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()

	for vmNo := 0; vmNo < 2; vmNo++ {
		// A probe that connects and leaves must not cost the VM its turn.
		if probe, err := net.Dial("unix", filepath.Join(dir, "vu.sock")); err == nil {
			probe.Close()
		}
		c, err := net.Dial("unix", filepath.Join(dir, "vu.sock"))
		if err != nil {
			t.Fatal(err)
		}
		f := &frontend{t: t, c: c.(*net.UnixConn)}

		// A. realize
		feat := f.getU64(vuGetFeatures)
		if feat&fVersion1 == 0 || feat&fProtocol == 0 {
			t.Fatalf("features %#x lack VERSION_1 or PROTOCOL_FEATURES", feat)
		}
		pf := f.getU64(vuGetProtocolFeatures)
		if pf&pfConfig == 0 {
			t.Fatalf("protocol features %#x lack CONFIG", pf)
		}
		f.send(vuSetProtocolFeatures, 0, u64(pf&(pfConfig|pfReplyAck)))
		f.send(vuSetOwner, 0, nil)
		f.getU64(vuGetFeatures)
		for i := range 2 {
			f.send(vuSetVringCall, 0, u64(uint64(i)), eventfd(t))
			f.send(vuSetVringErr, 0, u64(uint64(i)), eventfd(t))
		}
		cfgReq := make([]byte, 12+8)
		binary.LittleEndian.PutUint32(cfgReq[4:], 8)
		f.send(vuGetConfig, 0, cfgReq)
		cfgReply := f.recv(vuGetConfig)
		if len(cfgReply) != 20 || binary.LittleEndian.Uint64(cfgReply[12:]) != guestCID {
			t.Fatalf("GET_CONFIG reply % x", cfgReply)
		}

		// B. driver start, C. traffic; then D. stop and a reboot.
		for boot := 0; boot < 2; boot++ {
			vm := startDriver(t, f, rams)
			hc := connectThroughGuest(t, vm, cfg.UDSPath, 1024)

			// D. stop: rings disabled, then GET_VRING_BASE for each.
			for i := range 2 {
				f.send(vuSetVringEnable, 0, state(uint32(i), 0))
			}
			wantBase := []uint32{uint32(vm.rx.UsedIdx()), 2} // tx saw RESPONSE (no RW from guest)
			for i := range 2 {
				f.send(vuGetVringBase, 0, state(uint32(i), 0))
				p := f.recv(vuGetVringBase)
				if len(p) != 8 || binary.LittleEndian.Uint32(p) != uint32(i) {
					t.Fatalf("GET_VRING_BASE reply % x", p)
				}
				if got := binary.LittleEndian.Uint32(p[4:]); i == 1 && got != 1 || i == 0 && got != wantBase[0] {
					t.Fatalf("vring %d base %d", i, got)
				}
			}
			// The host side of the stream ends with the device.
			_ = hc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(hc); err != nil {
				t.Fatalf("host stream after device stop: %v", err)
			}
			hc.Close()
		}

		// Bad requests are refused without ending the session.
		if st := f.ack(vuSetVringNum, state(0, 100)); st == 0 {
			t.Fatal("SET_VRING_NUM 100 (not a power of two) accepted")
		}
		if st := f.ack(vuSetVringNum, state(5, 128)); st == 0 {
			t.Fatal("SET_VRING_NUM for vring 5 accepted")
		}
		if st := f.ack(99, nil); st == 0 {
			t.Fatal("unknown request acked as success")
		}
		if st := f.ack(vuSetMemTable, make([]byte, 8+32), rams[0].fd, rams[1].fd); st == 0 {
			t.Fatal("SET_MEM_TABLE with 0 regions and 2 fds accepted")
		}
		f.send(vuGetVringBase, 0, state(9, 0))
		if p := f.recv(vuGetVringBase); len(p) != 8 {
			t.Fatalf("GET_VRING_BASE for a bad index: %d-byte reply", len(p))
		}
		if f.getU64(vuGetFeatures)&fVersion1 == 0 {
			t.Fatal("session unusable after bad requests")
		}

		if vmNo == 1 {
			// QEMU killed while the device runs: no stop messages,
			// just EOF. The stream ends; the next frontend is served.
			vm := startDriver(t, f, rams)
			hc := connectThroughGuest(t, vm, cfg.UDSPath, 1024)
			c.Close()
			_ = hc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(hc); err != nil {
				t.Fatalf("host stream after frontend death: %v", err)
			}
			hc.Close()
		}
		// QEMU exits: the backend must take the next VM.
		c.Close()
	}

	// A malformed header ends that session but not the server.
	c, err := net.Dial("unix", filepath.Join(dir, "vu.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0}); err != nil { // version 2
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("bad version: %v, want the backend to hang up", err)
	}
	c.Close()
	c, err = net.Dial("unix", filepath.Join(dir, "vu.sock"))
	if err != nil {
		t.Fatal(err)
	}
	f := &frontend{t: t, c: c.(*net.UnixConn)}
	f.getU64(vuGetFeatures)
	c.Close()

	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	// No fd or goroutine outlives the server.
	closeTestEventfds()
	// Closing an fd that another goroutine still uses completes when that
	// goroutine lets go; give the runtime a moment.
	var leaked map[string]string
	for deadline := time.Now().Add(2 * time.Second); ; {
		leaked = newFDs(baseFDs, openFDs(t))
		if len(leaked) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(leaked) > 0 {
		t.Fatalf("fds opened during the test and still open after Serve: %v", leaked)
	}
	if n := ramMappings(t); n != baseMaps {
		t.Fatalf("%d mappings of guest RAM after Serve, %d before (the test's own)", n, baseMaps)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseG && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseG {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Serve, %d before:\n%s", n, baseG, buf[:runtime.Stack(buf, true)])
	}
}
