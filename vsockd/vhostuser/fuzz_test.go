package vhostuser

import (
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/wren-vm/wren/vsockd/guestmem"
	"github.com/wren-vm/wren/vsockd/virtq"
	"golang.org/x/sys/unix"
)

type stubDevice struct {
	sync.Mutex
	started map[int]bool
	starts  int
}

func (d *stubDevice) Features() uint64 { return FeatureEventIdx }
func (d *stubDevice) Config() []byte   { return []byte{3, 0, 0, 0, 0, 0, 0, 0} }
func (d *stubDevice) QueueStarted(i int, q *virtq.Queue, call *Notifier) {
	if d.started[i] {
		panic("queue started twice")
	}
	d.started[i] = true
	d.starts++
}
func (d *stubDevice) QueueStopped(i int) {
	if !d.started[i] {
		panic("stopping a queue that was not started")
	}
	d.started[i] = false
}
func (d *stubDevice) Kick(int) {}

// FuzzDispatch drives a session with arbitrary message sequences (no fds):
// no panic, and queues are started and stopped in pairs.
func FuzzDispatch(f *testing.F) {
	f.Add(append(append(msg(reqGetFeatures, 1), msg(reqSetFeatures, 1, 0, 0, 0, 0x60, 1, 0, 0, 0)...),
		msg(reqGetVringBase, 1, 1, 0, 0, 0, 0, 0, 0, 0)...))
	f.Add(append(msg(reqSetVringNum, 9, 0, 0, 0, 0, 128, 0, 0, 0), msg(reqSetVringKick, 1, 0, 1, 0, 0, 0, 0, 0, 0)...))
	f.Add(msg(reqGetConfig, 1, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
	f.Add(msg(reqSetProtocolFeatures, 1, 8, 2, 0, 0, 0, 0, 0, 0))
	f.Add(startSequence())
	f.Fuzz(func(t *testing.T, data []byte) { runMessages(t, data) })
}

// The start sequence really starts (and then stops) a ring, so the fuzzer
// begins from a state where queues are live.
func TestDispatchStartsRing(t *testing.T) {
	if dev := runMessages(t, startSequence()); dev.starts != 2 {
		t.Fatalf("ring started %d times, want 2 (enable, re-enable)", dev.starts)
	}
}

func msg(req, flags byte, payload ...byte) []byte {
	return append([]byte{req, flags, byte(len(payload))}, payload...)
}

// startSequence sets up, enables, disables, re-enables and stops vring 0.
func startSequence() []byte {
	addr := []byte{0, 0, 0, 0, 0, 0, 0, 0}
	addr = append(addr, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0) // desc at UVA 0x10000
	addr = append(addr, 0x00, 0x02, 0x01, 0, 0, 0, 0, 0) // used
	addr = append(addr, 0x00, 0x01, 0x01, 0, 0, 0, 0, 0) // avail
	addr = append(addr, 0, 0, 0, 0, 0, 0, 0, 0)
	var start []byte
	for _, m := range [][]byte{
		msg(reqSetFeatures, 1, 0, 0, 0, 0x60, 1, 0, 0, 0),
		msg(reqSetVringNum, 1, 0, 0, 0, 0, 8, 0, 0, 0),
		msg(reqSetVringAddr, 1, addr...),
		msg(reqSetVringKick, 1, 0, 0, 0, 0, 0, 0, 0, 0),
		msg(reqSetVringEnable, 1, 0, 0, 0, 0, 1, 0, 0, 0),
		msg(reqSetVringEnable, 1, 0, 0, 0, 0, 0, 0, 0, 0),
		msg(reqSetVringEnable, 1, 0, 0, 0, 0, 1, 0, 0, 0),
		msg(reqGetVringBase, 1, 0, 0, 0, 0, 0, 0, 0, 0),
	} {
		start = append(start, m...)
	}
	return start
}

// runMessages replays data as a message sequence on a fresh session and
// tears it down.
func runMessages(t *testing.T, data []byte) *stubDevice {
	a, b := socketPair(t)
	go func() { _, _ = io.Copy(io.Discard, a) }() // drains the replies until the teardown
	dev := &stubDevice{started: map[int]bool{}}
	s := &Server{Dev: dev, NumQueues: 2, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ss := &session{s: s, conn: b, log: s.Log, rings: make([]vring, 2)}
	for i := range ss.rings {
		ss.rings[i].call = &Notifier{}
	}
	// Guest RAM as if SET_MEM_TABLE had run, so rings can start.
	mem, err := guestmem.New([]guestmem.Region{{GuestPhysAddr: 0, UserAddr: 0x10000, Data: make([]byte, 1<<16)}})
	if err != nil {
		t.Fatal(err)
	}
	ss.mem = mem
	for len(data) >= 3 {
		n := int(data[2])
		if len(data) < 3+n {
			break
		}
		m := &message{request: uint32(data[0]), flags: uint32(data[1]&^3) | flagVersion, payload: data[3 : 3+n]}
		data = data[3+n:]
		if m.request == reqSetVringKick || m.request == reqSetVringCall {
			efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			m.files = []*os.File{os.NewFile(uintptr(efd), "eventfd")}
		}
		if err := ss.handle(m); err != nil {
			t.Fatalf("handle: %v", err)
		}
	}
	ss.teardown()
	for i, on := range dev.started {
		if on {
			t.Fatalf("queue %d still started after teardown", i)
		}
	}
	return dev
}
