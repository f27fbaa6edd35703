package vhostuser

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/wren-vm/wren/vsockd/guestmem"
	"github.com/wren-vm/wren/vsockd/virtq"
	"golang.org/x/sys/unix"
)

// Device is the virtio device behind the protocol. Its lock guards every
// queue and the guest memory the queues point into: the server holds it while
// it changes either, and the device holds it whenever it touches them.
type Device interface {
	sync.Locker
	// Features are the virtio feature bits the device offers; the server
	// adds VERSION_1 and PROTOCOL_FEATURES.
	Features() uint64
	// Config is the device's configuration space.
	Config() []byte
	// QueueStarted hands queue i to the device (called with the lock held).
	QueueStarted(i int, q *virtq.Queue, call *Notifier)
	// QueueStopped takes queue i away (called with the lock held); the
	// device must not use it after returning.
	QueueStopped(i int)
	// Kick reports that the driver notified queue i (called without the
	// lock).
	Kick(i int)
}

// Notifier signals the driver through the queue's call eventfd. The server
// may swap the fd at any time (QEMU does on every MSI-X mask/unmask), always
// under the device lock, so Notify must be called with that lock held.
type Notifier struct {
	f  *os.File
	rc syscall.RawConn
}

// Notify raises the queue's interrupt. It never blocks: the write goes
// straight to the non-blocking fd (not through os.File, which would park on
// EAGAIN while the caller holds the device lock); EAGAIN means the eventfd
// counter is saturated, so the interrupt is pending anyway.
func (n *Notifier) Notify() {
	if n == nil || n.rc == nil {
		return
	}
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	_ = n.rc.Write(func(fd uintptr) bool {
		_, _ = unix.Write(int(fd), one[:])
		return true
	})
}

func (n *Notifier) set(f *os.File) {
	if n.f != nil {
		n.f.Close()
	}
	n.f, n.rc = f, nil
	if f != nil {
		if rc, err := f.SyscallConn(); err == nil {
			n.rc = rc
		}
	}
}

type vring struct {
	num     uint16
	layout  virtq.Layout
	addrSet bool
	base    uint16
	kick    *os.File
	call    *Notifier
	enabled bool
	q       *virtq.Queue // non-nil from start to GET_VRING_BASE
	active  bool         // the device currently owns q
}

// Server serves one frontend connection at a time.
type Server struct {
	Dev       Device
	NumQueues int // vrings the frontend drives (2 for vsock: rx, tx)
	Log       *slog.Logger
}

type session struct {
	s        *Server
	conn     *net.UnixConn
	log      *slog.Logger
	acked    uint64 // features acked by SET_FEATURES
	protocol uint64 // protocol features acked
	mem      *guestmem.Memory
	rings    []vring
	kicks    sync.WaitGroup
}

const acceptRetryDelay = 100 * time.Millisecond

// MaxQueueSize is the largest vring the backend accepts.
const MaxQueueSize = 1024

// Serve accepts frontends on ln one after another until ctx is done, serving
// each to completion before taking the next: QEMU connects exactly once per
// VM, so the next connection is the next VM.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept vhost-user frontend: %w", err)
			}
			// EMFILE and the like pass; keep serving.
			s.Log.Error("accept vhost-user frontend", "err", err)
			time.Sleep(acceptRetryDelay)
			continue
		}
		if err := s.ServeConn(ctx, c); err != nil {
			s.Log.Warn("vhost-user session ended", "err", err)
		} else {
			s.Log.Info("vhost-user frontend disconnected")
		}
	}
}

// ServeConn runs one frontend session until the frontend disconnects or ctx
// is done, then releases everything the session set up (queues, eventfds,
// memory mappings, kick goroutines) and closes c.
func (s *Server) ServeConn(ctx context.Context, c *net.UnixConn) error {
	ss := &session{s: s, conn: c, log: s.Log, rings: make([]vring, s.NumQueues)}
	for i := range ss.rings {
		ss.rings[i].call = &Notifier{}
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer ss.teardown()
	for {
		m, err := readMessage(c)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := ss.handle(m); err != nil {
			return err
		}
	}
}

func (ss *session) teardown() {
	ss.s.Dev.Lock()
	for i := range ss.rings {
		ss.stopRing(i)
		r := &ss.rings[i]
		ss.setKick(i, nil)
		r.call.set(nil)
		r.q = nil
	}
	ss.mem.Close()
	ss.mem = nil
	ss.s.Dev.Unlock()
	ss.kicks.Wait()
	ss.conn.Close()
}

// handle processes one message. Only a failure to talk to the frontend is
// returned; a bad request is logged and, when the frontend asked, nacked.
func (ss *session) handle(m *message) error {
	defer m.closeFiles()
	var reply []byte
	err := ss.dispatch(m, &reply)
	if err != nil {
		ss.log.Warn("vhost-user request failed", "request", m.request, "err", err)
	}
	if reply != nil {
		return writeReply(ss.conn, m.request, reply)
	}
	if m.needReply() && ss.protocol&ProtocolFeatureReplyAck != 0 {
		var status uint64
		if err != nil {
			status = 1
		}
		return writeReply(ss.conn, m.request, u64Bytes(status))
	}
	return nil
}

func (ss *session) features() uint64 {
	return ss.s.Dev.Features() | FeatureVersion1 | FeatureProtocolFeatures
}

const protocolFeatures = ProtocolFeatureConfig | ProtocolFeatureReplyAck

// dispatch answers one request: the session-wide ones here, the per-vring
// ones in dispatchVring.
func (ss *session) dispatch(m *message, reply *[]byte) error {
	switch m.request {
	case reqGetFeatures:
		*reply = u64Bytes(ss.features())
	case reqSetFeatures:
		return ss.setFeatures(m)
	case reqGetProtocolFeatures:
		*reply = u64Bytes(protocolFeatures)
	case reqSetProtocolFeatures:
		f, err := m.u64()
		if err != nil {
			return err
		}
		ss.protocol = f & protocolFeatures
	case reqGetQueueNum:
		*reply = u64Bytes(uint64(len(ss.rings)))
	case reqSetOwner:
	case reqResetOwner:
		ss.resetOwner()
	case reqSetMemTable:
		return ss.setMemTable(m)
	case reqSetVringNum, reqSetVringAddr, reqSetVringBase, reqGetVringBase,
		reqSetVringKick, reqSetVringCall, reqSetVringErr, reqSetVringEnable:
		return ss.dispatchVring(m, reply)
	case reqGetConfig:
		return ss.getConfig(m, reply)
	case reqSetConfig:
		// The vsock config (the CID) is read-only.
	case reqSetSlaveReqFD, reqSetLogBase, reqSetLogFD:
		return fmt.Errorf("request %d: feature not offered", m.request)
	default:
		return fmt.Errorf("unknown request %d", m.request)
	}
	return nil
}

// dispatchVring answers the requests that set up, start and stop one vring.
func (ss *session) dispatchVring(m *message, reply *[]byte) error {
	switch m.request {
	case reqSetVringNum:
		return ss.setVringNum(m)
	case reqSetVringAddr:
		return ss.setVringAddr(m)
	case reqSetVringBase:
		return ss.setVringBase(m)
	case reqGetVringBase:
		return ss.getVringBase(m, reply)
	case reqSetVringKick, reqSetVringCall, reqSetVringErr:
		return ss.setVringFD(m)
	case reqSetVringEnable:
		return ss.setVringEnable(m)
	}
	return fmt.Errorf("request %d: not a vring request", m.request)
}

func (ss *session) setFeatures(m *message) error {
	f, err := m.u64()
	if err != nil {
		return err
	}
	if f&^ss.features() != 0 {
		return fmt.Errorf("SET_FEATURES %#x: bits %#x were not offered", f, f&^ss.features())
	}
	ss.s.Dev.Lock()
	ss.acked = f
	ss.startReady()
	ss.s.Dev.Unlock()
	ss.log.Info("features acked", "features", fmt.Sprintf("%#x", f), "event_idx", f&FeatureEventIdx != 0)
	return nil
}

// resetOwner takes every ring from the device and forgets the acked
// features, as if the frontend had just connected.
func (ss *session) resetOwner() {
	ss.s.Dev.Lock()
	for i := range ss.rings {
		ss.stopRing(i)
		ss.rings[i].q = nil
	}
	ss.acked = 0
	ss.s.Dev.Unlock()
}

func (ss *session) setVringNum(m *message) error {
	return ss.setStoppedRing(m, "SET_VRING_NUM", func(idx, num uint32, r *vring) error {
		if num == 0 || num > MaxQueueSize || num&(num-1) != 0 {
			return fmt.Errorf("vring %d: bad size %d", idx, num)
		}
		r.num = uint16(num)
		return nil
	})
}

func (ss *session) setVringBase(m *message) error {
	return ss.setStoppedRing(m, "SET_VRING_BASE", func(_, num uint32, r *vring) error {
		r.base = uint16(num)
		return nil
	})
}

// setStoppedRing applies a vring-state request (index and number) to a ring
// that is not started, under the device lock: a started ring's size and
// base belong to its queue.
func (ss *session) setStoppedRing(m *message, what string, set func(idx, num uint32, r *vring) error) error {
	idx, num, err := m.vringState()
	if err != nil {
		return err
	}
	r, err := ss.ring(idx)
	if err != nil {
		return err
	}
	ss.s.Dev.Lock()
	defer ss.s.Dev.Unlock()
	if r.q != nil {
		return fmt.Errorf("vring %d: %s while started", idx, what)
	}
	return set(idx, num, r)
}

// getVringBase stops the vring and replies with the index it stopped at, so
// that a later SET_VRING_BASE resumes there.
func (ss *session) getVringBase(m *message, reply *[]byte) error {
	idx, _, err := m.vringState()
	if err != nil {
		// QEMU waits for this reply whatever happens.
		*reply = make([]byte, 8)
		return err
	}
	ss.s.Dev.Lock()
	var base uint16
	if r, err := ss.ring(idx); err == nil {
		ss.stopRing(int(idx))
		if r.q != nil {
			r.base = r.q.LastAvail()
			r.q = nil
		}
		base = r.base
		// A stopped ring drops its eventfds; a restart sends new ones.
		ss.setKick(int(idx), nil)
		r.call.set(nil)
	}
	ss.s.Dev.Unlock()
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b[0:], idx)
	binary.LittleEndian.PutUint32(b[4:], uint32(base))
	*reply = b
	return nil
}

func (ss *session) setVringEnable(m *message) error {
	idx, num, err := m.vringState()
	if err != nil {
		return err
	}
	r, err := ss.ring(idx)
	if err != nil {
		return err
	}
	ss.s.Dev.Lock()
	defer ss.s.Dev.Unlock()
	r.enabled = num == 1
	if !r.enabled {
		ss.stopRing(int(idx))
	}
	ss.startReady()
	return nil
}

func (ss *session) ring(idx uint32) (*vring, error) {
	if idx >= uint32(len(ss.rings)) {
		return nil, fmt.Errorf("vring index %d out of range", idx)
	}
	return &ss.rings[idx], nil
}

func (ss *session) setMemTable(m *message) error {
	p := m.payload
	if len(p) < 8 {
		return fmt.Errorf("SET_MEM_TABLE: short payload")
	}
	n := binary.LittleEndian.Uint32(p)
	if n == 0 || n > maxFDs || len(p) != 8+32*int(n) {
		return fmt.Errorf("SET_MEM_TABLE: %d regions in %d bytes", n, len(p))
	}
	if len(m.files) != int(n) {
		return fmt.Errorf("SET_MEM_TABLE: %d regions but %d fds", n, len(m.files))
	}
	regions := make([]guestmem.MapRegion, n)
	for i := range regions {
		r := p[8+32*i:]
		regions[i] = guestmem.MapRegion{
			GuestPhysAddr: binary.LittleEndian.Uint64(r[0:]),
			Size:          binary.LittleEndian.Uint64(r[8:]),
			UserAddr:      binary.LittleEndian.Uint64(r[16:]),
			MmapOffset:    binary.LittleEndian.Uint64(r[24:]),
			File:          m.files[i],
		}
	}
	mem, err := guestmem.Map(regions)
	if err != nil {
		return fmt.Errorf("SET_MEM_TABLE: %w", err)
	}
	ss.s.Dev.Lock()
	old := ss.mem
	ss.mem = mem
	for i := range ss.rings {
		r := &ss.rings[i]
		if r.q == nil {
			continue
		}
		if err := r.q.Remap(mem, r.layout); err != nil {
			ss.log.Warn("vring no longer in guest memory", "vring", i, "err", err)
			ss.stopRing(i)
			r.q = nil
		}
	}
	ss.startReady()
	ss.s.Dev.Unlock()
	old.Close()
	ss.log.Info("guest memory mapped", "regions", n)
	return nil
}

func (ss *session) setVringAddr(m *message) error {
	if len(m.payload) != 40 {
		return fmt.Errorf("SET_VRING_ADDR: payload of %d bytes", len(m.payload))
	}
	p := m.payload
	idx := binary.LittleEndian.Uint32(p[0:])
	r, err := ss.ring(idx)
	if err != nil {
		return err
	}
	if binary.LittleEndian.Uint32(p[4:])&1 != 0 {
		return fmt.Errorf("vring %d: dirty logging not supported", idx)
	}
	ss.s.Dev.Lock()
	defer ss.s.Dev.Unlock()
	if ss.mem == nil {
		return fmt.Errorf("vring %d: SET_VRING_ADDR before SET_MEM_TABLE", idx)
	}
	if r.q != nil {
		return fmt.Errorf("vring %d: SET_VRING_ADDR while started", idx)
	}
	var gpa [3]uint64
	for i, off := range []int{8, 24, 16} { // desc, avail, used (wire order: desc, used, avail)
		if gpa[i], err = ss.mem.UserToGuest(binary.LittleEndian.Uint64(p[off:])); err != nil {
			return fmt.Errorf("vring %d: %w", idx, err)
		}
	}
	r.layout = virtq.Layout{DescAddr: gpa[0], AvailAddr: gpa[1], UsedAddr: gpa[2]}
	r.addrSet = true
	return nil
}

func (ss *session) setVringFD(m *message) error {
	v, err := m.u64()
	if err != nil {
		return err
	}
	idx := uint32(v & vringIdx)
	if v&^uint64(vringIdx|vringNoFD) != 0 {
		return fmt.Errorf("request %d: bad vring file word %#x", m.request, v)
	}
	var f *os.File
	if v&vringNoFD == 0 {
		if f = m.takeFile(); f == nil {
			return fmt.Errorf("request %d: vring %d: no fd attached", m.request, idx)
		}
	}
	if _, err := ss.ring(idx); err != nil {
		if f != nil {
			f.Close()
		}
		return err
	}
	ss.s.Dev.Lock()
	defer ss.s.Dev.Unlock()
	r := &ss.rings[idx]
	switch m.request {
	case reqSetVringKick:
		ss.setKick(int(idx), f)
		ss.startReady()
	case reqSetVringCall:
		r.call.set(f)
	case reqSetVringErr:
		// We never report ring errors this way.
		if f != nil {
			f.Close()
		}
	}
	return nil
}

// setKick replaces ring i's kick eventfd and its reader goroutine. Called
// with the device lock held; closing the old file ends its reader.
func (ss *session) setKick(i int, f *os.File) {
	r := &ss.rings[i]
	if r.kick != nil {
		r.kick.Close()
	}
	r.kick = f
	if f == nil {
		return
	}
	ss.kicks.Add(1)
	go func() {
		defer ss.kicks.Done()
		var buf [8]byte
		for {
			if _, err := f.Read(buf[:]); err != nil {
				return
			}
			ss.s.Dev.Kick(i)
		}
	}()
}

func (ss *session) getConfig(m *message, reply *[]byte) error {
	p := m.payload
	if len(p) < 12 {
		*reply = p
		return fmt.Errorf("GET_CONFIG: short payload")
	}
	off := binary.LittleEndian.Uint32(p[0:])
	size := binary.LittleEndian.Uint32(p[4:])
	if int(size) != len(p)-12 {
		*reply = p
		return fmt.Errorf("GET_CONFIG: size %d in a %d-byte payload", size, len(p))
	}
	out := append([]byte(nil), p...)
	cfg := ss.s.Dev.Config()
	if uint64(off) < uint64(len(cfg)) {
		copy(out[12:], cfg[off:])
	}
	*reply = out
	return nil
}

// stopRing takes ring i away from the device if it has it. Lock held.
func (ss *session) stopRing(i int) {
	r := &ss.rings[i]
	if r.active {
		ss.s.Dev.QueueStopped(i)
		r.active = false
	}
}

// startReady hands every ring that is fully set up and enabled to the device.
// Lock held.
func (ss *session) startReady() {
	for i := range ss.rings {
		r := &ss.rings[i]
		if r.active || ss.mem == nil || !r.addrSet || r.kick == nil || r.num == 0 {
			continue
		}
		// Without PROTOCOL_FEATURES acked, rings are enabled implicitly.
		if ss.acked&FeatureProtocolFeatures != 0 && !r.enabled {
			continue
		}
		if r.q == nil {
			l := r.layout
			l.Size = r.num
			q, err := virtq.New(ss.mem, l, r.base)
			if err != nil {
				ss.log.Warn("cannot start vring", "vring", i, "err", err)
				continue
			}
			q.EventIdx = ss.acked&FeatureEventIdx != 0
			r.layout = l
			r.q = q
		}
		r.active = true
		ss.s.Dev.QueueStarted(i, r.q, r.call)
	}
}
