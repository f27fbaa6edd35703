package vsockd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/wren-vm/wren/vsockd/vhostuser"
	"github.com/wren-vm/wren/vsockd/virtq"
	"github.com/wren-vm/wren/vsockd/vsockpkt"
)

const (
	queueRX = 0
	queueTX = 1

	// maxCtlBacklog bounds device-level control packets (RSTs) waiting for
	// rx buffers; beyond it RSTs are dropped, which only costs the guest
	// a timeout.
	maxCtlBacklog = 4096
	readChunk     = 64 << 10

	guestWarnBurst = 10
)

// device is the virtio-vsock device: it owns the rx/tx queues while the
// vhost-user frontend has them started, and multiplexes vsock streams onto
// host Unix sockets. mu guards everything, including the queues and the
// guest memory behind them; nothing blocks while holding it.
type device struct {
	mu  sync.Mutex
	cfg Config
	log *slog.Logger

	rx, tx         *virtq.Queue
	rxCall, txCall *vhostuser.Notifier
	brokenLogged   [2]bool

	conns     map[connKey]*conn
	ctl       []vsockpkt.Header // device-level control packets (RST)
	ctlConns  []*conn           // connections with pending control ops
	dataConns []*conn           // connections with host data to send
	nextPort  uint32
	scratch   []byte

	wg sync.WaitGroup // connection goroutines

	// Rate limit for warnings a guest can trigger at will.
	warnWindow time.Time
	warnCount  int
}

// guestWarn logs a warning caused by guest behaviour, at most
// guestWarnBurst per second, so that a hostile guest cannot flood the logs.
func (d *device) guestWarn(msg string, args ...any) {
	now := time.Now()
	if now.Sub(d.warnWindow) > time.Second {
		if d.warnCount > guestWarnBurst {
			d.log.Warn("suppressed guest-triggered warnings", "count", d.warnCount-guestWarnBurst)
		}
		d.warnWindow, d.warnCount = now, 0
	}
	d.warnCount++
	if d.warnCount <= guestWarnBurst {
		d.log.Warn(msg, args...)
	}
}

func newDevice(cfg Config) *device {
	return &device{
		cfg:      cfg,
		log:      cfg.Logger,
		conns:    make(map[connKey]*conn),
		nextPort: 1 << 30,
		scratch:  make([]byte, vsockpkt.HeaderLen+vsockpkt.MaxPayload),
	}
}

// Lock and Unlock make device a vhostuser.Device.
func (d *device) Lock()   { d.mu.Lock() }
func (d *device) Unlock() { d.mu.Unlock() }

// Features: the split ring with event index; no indirect descriptors.
func (d *device) Features() uint64 { return vhostuser.FeatureEventIdx }

func (d *device) Config() []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, d.cfg.GuestCID)
	return b
}

func (d *device) QueueStarted(i int, q *virtq.Queue, call *vhostuser.Notifier) {
	switch i {
	case queueRX:
		d.rx, d.rxCall = q, call
	case queueTX:
		d.tx, d.txCall = q, call
	default:
		return
	}
	d.brokenLogged[i] = false
	d.log.Info("vring started", "vring", i, "size", q.Size())
	d.pump()
}

func (d *device) QueueStopped(i int) {
	switch i {
	case queueRX:
		d.rx, d.rxCall = nil, nil
	case queueTX:
		d.tx, d.txCall = nil, nil
	default:
		return
	}
	// The guest resets all its sockets when the device stops (reboot,
	// driver unbind, QEMU exit); do the same on our side.
	d.resetConns()
	d.log.Info("vring stopped", "vring", i)
}

func (d *device) Kick(int) {
	d.mu.Lock()
	d.pump()
	d.mu.Unlock()
}

func (d *device) running() bool { return d.rx != nil && d.tx != nil }

func (d *device) resetConns() {
	n := len(d.conns)
	for _, c := range d.conns {
		d.remove(c)
	}
	d.ctl, d.ctlConns, d.dataConns = nil, nil, nil
	if n > 0 {
		d.log.Info("device stopped: closed connections", "count", n)
	}
}

// remove forgets c and closes its host socket. Lock held.
func (d *device) remove(c *conn) {
	if c.removed {
		return
	}
	c.removed = true
	delete(d.conns, c.key)
	close(c.closed)
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.uds != nil {
		c.uds.Close()
	}
	// Removed connections leave the work queues lazily; compact them when
	// churn (with rx starved) would otherwise let them pile up.
	if len(d.ctlConns) > 2*len(d.conns)+64 {
		d.ctlConns = liveConns(d.ctlConns, func(c *conn) { c.inCtlq = false })
	}
	if len(d.dataConns) > 2*len(d.conns)+64 {
		d.dataConns = liveConns(d.dataConns, func(c *conn) { c.inDataq = false })
	}
	d.log.Debug("connection closed", "local", c.key.local, "peer", c.key.peer)
}

func liveConns(q []*conn, drop func(*conn)) []*conn {
	out := q[:0]
	for _, c := range q {
		if c.removed {
			drop(c)
			continue
		}
		out = append(out, c)
	}
	clear(q[len(out):])
	return out
}

func (d *device) header(local, peer uint32, op vsockpkt.Op) vsockpkt.Header {
	return vsockpkt.Header{
		SrcCID: vsockpkt.HostCID, DstCID: d.cfg.GuestCID,
		SrcPort: local, DstPort: peer,
		Type: vsockpkt.TypeStream, Op: op,
	}
}

// queueRST schedules a reset of (local, peer). Lock held.
func (d *device) queueRST(local, peer uint32) {
	if len(d.ctl) >= maxCtlBacklog {
		d.guestWarn("control backlog full: dropping RST", "local", local, "peer", peer)
		return
	}
	d.ctl = append(d.ctl, d.header(local, peer, vsockpkt.OpRST))
}

// resetConn sends RST for c and removes it. Lock held.
func (d *device) resetConn(c *conn) {
	d.queueRST(c.key.local, c.key.peer)
	d.remove(c)
}

func (d *device) queueCtl(c *conn, bit uint8) {
	c.pend |= bit
	if !c.inCtlq {
		c.inCtlq = true
		d.ctlConns = append(d.ctlConns, c)
	}
}

func (d *device) queueData(c *conn) {
	if !c.inDataq && len(c.rdata) > 0 {
		c.inDataq = true
		d.dataConns = append(d.dataConns, c)
	}
}

// pump moves everything that can move: it drains the tx queue, then fills rx
// buffers with pending packets. Lock held.
func (d *device) pump() {
	if !d.running() {
		return
	}
	d.processTX()
	d.processRX()
}

func (d *device) queueBroken(i int, err error) {
	if !d.brokenLogged[i] {
		d.brokenLogged[i] = true
		d.log.Error("guest broke the virtqueue; queue halted until the driver resets it", "vring", i, "err", err)
	}
}

func (d *device) processTX() {
	pushed := false
	for {
		head, ok, err := d.tx.Pop()
		if err != nil {
			d.queueBroken(queueTX, err)
			break
		}
		if !ok {
			if d.tx.EnableKicks() {
				continue
			}
			break
		}
		chain, err := d.tx.Walk(head)
		if err == nil && len(chain.Writable) > 0 {
			err = errors.New("device-writable buffer in a tx chain")
		}
		var h vsockpkt.Header
		var payload []byte
		if err == nil {
			// Parse copies the packet out; only then may the guest
			// have the buffers back.
			h, payload, err = vsockpkt.Parse(chain.Readable, d.scratch)
		}
		d.tx.Push(head, 0)
		pushed = true
		if err != nil {
			d.guestWarn("dropping malformed tx chain", "head", head, "err", err)
			continue
		}
		d.handleGuestPacket(h, payload)
	}
	if pushed && d.tx.NeedNotify() {
		d.txCall.Notify()
	}
}

// handleGuestPacket applies one packet from the guest. payload is only valid
// during the call. Lock held.
func (d *device) handleGuestPacket(h vsockpkt.Header, payload []byte) {
	if h.SrcCID != d.cfg.GuestCID || h.DstCID != vsockpkt.HostCID {
		d.log.Debug("dropping packet with foreign addresses", "src_cid", h.SrcCID, "dst_cid", h.DstCID)
		return
	}
	key := connKey{local: h.DstPort, peer: h.SrcPort}
	if h.Type != vsockpkt.TypeStream {
		if h.Op != vsockpkt.OpRST {
			d.queueRST(key.local, key.peer)
		}
		return
	}
	c := d.conns[key]
	if c == nil {
		switch h.Op {
		case vsockpkt.OpRequest:
			d.guestConnect(key, h)
		case vsockpkt.OpRST:
		default:
			d.queueRST(key.local, key.peer)
		}
		return
	}
	// Every packet carries the guest's current credit.
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	if c.peerFree() > 0 {
		c.creditReqSent = false
		d.queueData(c)
	}

	switch h.Op {
	case vsockpkt.OpResponse:
		d.guestResponse(c)
	case vsockpkt.OpRW:
		d.guestData(c, payload)
	case vsockpkt.OpCreditUpdate:
		// Credit already applied above.
	case vsockpkt.OpCreditRequest:
		d.queueCtl(c, pendCreditUpdate)
	case vsockpkt.OpShutdown:
		d.guestShutdown(c, h.Flags)
	case vsockpkt.OpRST:
		d.remove(c)
	case vsockpkt.OpRequest:
		d.resetConn(c)
	default:
		d.resetConn(c)
	}
}

// guestResponse handles the guest's RESPONSE to a host-initiated stream:
// it is established, and the host client gets its OK line. Lock held.
func (d *device) guestResponse(c *conn) {
	if c.state != stLocalInit {
		d.resetConn(c)
		return
	}
	c.state = stEstablished
	if c.timer != nil {
		c.timer.Stop()
	}
	c.okLine = []byte("OK " + strconv.FormatUint(uint64(c.key.local), 10) + "\n")
	d.startIO(c)
	signal(c.wake)
}

// guestData queues an RW packet's payload for the host socket, within the
// credit the device gave. payload is only valid during the call. Lock held.
func (d *device) guestData(c *conn, payload []byte) {
	if c.state != stEstablished || c.peerShut&vsockpkt.ShutdownSend != 0 {
		d.resetConn(c)
		return
	}
	if c.buffered()+len(payload) > int(d.cfg.BufAlloc) {
		d.guestWarn("guest overran its credit: resetting", "local", c.key.local, "peer", c.key.peer)
		d.resetConn(c)
		return
	}
	c.recvCnt += uint32(len(payload))
	if c.closedWrite {
		return // the host socket is half-closed; nothing will read it
	}
	c.wq = append(c.wq, payload...)
	signal(c.wake)
}

// guestShutdown records the guest's SHUTDOWN flags: a guest that stops
// receiving drops what was waiting for it. Lock held.
func (d *device) guestShutdown(c *conn, flags uint32) {
	c.peerShut |= flags & (vsockpkt.ShutdownRcv | vsockpkt.ShutdownSend)
	if c.peerShut&vsockpkt.ShutdownRcv != 0 && len(c.rdata) > 0 {
		c.rdata, c.rnext = nil, nil
		signal(c.consumed)
	}
	d.afterWrite(c)
}

// afterWrite runs the close steps that wait for guest data to reach the host
// socket, and sends credit as it frees up. Lock held.
func (d *device) afterWrite(c *conn) {
	if c.removed || c.state != stEstablished {
		if c.state == stPeerInit && c.peerShut != 0 {
			d.resetConn(c)
		}
		return
	}
	drained := c.buffered() == 0 && c.okLine == nil
	if drained && c.peerShut&vsockpkt.ShutdownSend != 0 && !c.closedWrite {
		c.closedWrite = true
		_ = c.uds.CloseWrite()
	}
	if drained && c.peerShut == vsockpkt.ShutdownRcv|vsockpkt.ShutdownSend {
		d.resetConn(c)
		return
	}
	delta := c.fwdCnt - c.lastFwdSent
	guestView := d.cfg.BufAlloc - (c.recvCnt - c.lastFwdSent)
	if delta >= d.cfg.BufAlloc/4 || (delta > 0 && drained && guestView < vsockpkt.MaxPayload) {
		d.queueCtl(c, pendCreditUpdate)
	}
}

// guestConnect handles a REQUEST for a new stream: dial <uds>_<port>.
func (d *device) guestConnect(key connKey, h vsockpkt.Header) {
	if len(d.conns) >= d.cfg.MaxConns {
		d.guestWarn("too many connections: refusing guest connect", "port", key.local)
		d.queueRST(key.local, key.peer)
		return
	}
	c := newConn(key, stPeerInit)
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	d.conns[key] = c
	path := d.cfg.UDSPath + "_" + strconv.FormatUint(uint64(key.local), 10)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		nc, err := net.DialTimeout("unix", path, d.cfg.ConnectTimeout)
		d.mu.Lock()
		defer d.mu.Unlock()
		if c.removed {
			if err == nil {
				nc.Close()
			}
			return
		}
		if err != nil {
			d.log.Info("guest connect: nobody listening", "path", path, "err", err)
			d.resetConn(c)
			d.pump()
			return
		}
		c.uds = nc.(*net.UnixConn)
		c.state = stEstablished
		d.queueCtl(c, pendResponse)
		d.startIO(c)
		d.log.Debug("guest connection established", "port", key.local, "peer", key.peer)
		d.pump()
	}()
}

// hostConnect starts a host-initiated stream to guest port. It takes over
// uds (closing it on failure).
func (d *device) hostConnect(uds *net.UnixConn, port uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.running() {
		uds.Close()
		return fmt.Errorf("no running guest")
	}
	if len(d.conns) >= d.cfg.MaxConns {
		uds.Close()
		return fmt.Errorf("too many connections")
	}
	var key connKey
	for {
		key = connKey{local: d.nextPort, peer: port}
		d.nextPort++
		if d.nextPort >= 1<<31 {
			d.nextPort = 1 << 30
		}
		if d.conns[key] == nil {
			break
		}
	}
	c := newConn(key, stLocalInit)
	c.uds = uds
	d.conns[key] = c
	c.timer = time.AfterFunc(d.cfg.ConnectTimeout, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if !c.removed && c.state == stLocalInit {
			d.log.Info("guest did not answer connect", "port", port)
			d.resetConn(c)
			d.pump()
		}
	})
	d.queueCtl(c, pendRequest)
	d.pump()
	return nil
}

// startIO starts the goroutines that move bytes between c.uds and the
// device. Lock held.
func (d *device) startIO(c *conn) {
	d.wg.Add(2)
	go d.readLoop(c)
	go d.writeLoop(c)
}

// readLoop moves host socket data to the device, double-buffered: it reads
// the next chunk while the previous one waits for guest credit and rx
// buffers, so at most two chunks per stream are held.
func (d *device) readLoop(c *conn) {
	defer d.wg.Done()
	bufs := [2][]byte{make([]byte, readChunk), make([]byte, readChunk)}
	for k := 0; ; k ^= 1 {
		// bufs[k] is free once at most one chunk is queued (the other).
		for {
			d.mu.Lock()
			removed, full := c.removed, c.rnext != nil
			d.mu.Unlock()
			if removed {
				return
			}
			if !full {
				break
			}
			select {
			case <-c.consumed:
			case <-c.closed:
				return
			}
		}
		n, err := c.uds.Read(bufs[k])
		d.mu.Lock()
		if c.removed {
			d.mu.Unlock()
			return
		}
		if n > 0 && c.peerShut&vsockpkt.ShutdownRcv == 0 {
			if len(c.rdata) == 0 {
				c.rdata = bufs[k][:n]
			} else {
				c.rnext = bufs[k][:n]
			}
			d.queueData(c)
		}
		if err != nil {
			c.eof = true
			if len(c.rdata) == 0 && !c.shutSent {
				c.shutSent = true
				d.queueCtl(c, pendShutdown)
			}
		}
		d.pump()
		d.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (d *device) writeLoop(c *conn) {
	defer d.wg.Done()
	for {
		select {
		case <-c.wake:
		case <-c.closed:
			return
		}
		d.mu.Lock()
		if c.removed {
			d.mu.Unlock()
			return
		}
		pre, data := c.okLine, c.wq
		c.wq, c.writing = nil, len(data)
		d.mu.Unlock()

		var err error
		if pre != nil {
			_, err = c.uds.Write(pre)
		}
		n := 0
		if err == nil && len(data) > 0 {
			n, err = c.uds.Write(data)
		}

		d.mu.Lock()
		if c.removed {
			d.mu.Unlock()
			return
		}
		c.okLine = nil
		c.writing = 0
		c.fwdCnt += uint32(n)
		if err != nil {
			d.log.Debug("host socket write failed: resetting", "local", c.key.local, "peer", c.key.peer, "err", err)
			d.resetConn(c)
		} else {
			if len(c.wq) > 0 {
				signal(c.wake)
			}
			d.afterWrite(c)
		}
		d.pump()
		d.mu.Unlock()
	}
}

// pruneQueues drops stale entries at the heads of the rx work queues, so
// that a non-empty queue means there is a packet to send.
func (d *device) pruneQueues() {
	for len(d.ctlConns) > 0 {
		c := d.ctlConns[0]
		if !c.removed && c.pend != 0 {
			break
		}
		c.inCtlq = false
		d.ctlConns = d.ctlConns[1:]
	}
	for len(d.dataConns) > 0 {
		c := d.dataConns[0]
		if !c.removed && len(c.rdata) > 0 && c.state == stEstablished && c.peerShut&vsockpkt.ShutdownRcv == 0 {
			if c.peerFree() > 0 {
				break
			}
			if !c.creditReqSent {
				c.creditReqSent = true
				d.queueCtl(c, pendCreditRequest)
			}
		}
		c.inDataq = false
		d.dataConns = d.dataConns[1:]
	}
}

func (d *device) hasRXWork() bool {
	d.pruneQueues()
	return len(d.ctl) > 0 || len(d.ctlConns) > 0 || len(d.dataConns) > 0
}

func (d *device) processRX() {
	pushed := false
	for d.hasRXWork() {
		head, ok, err := d.rx.Pop()
		if err != nil {
			d.queueBroken(queueRX, err)
			break
		}
		if !ok {
			// Out of rx buffers with packets waiting: ask for a kick.
			if d.rx.EnableKicks() {
				continue
			}
			break
		}
		chain, err := d.rx.Walk(head)
		if err == nil && (len(chain.Readable) > 0 || chain.WriteLen < vsockpkt.HeaderLen) {
			err = fmt.Errorf("not a device-writable buffer of at least %d bytes", vsockpkt.HeaderLen)
		}
		if err != nil {
			d.guestWarn("dropping malformed rx chain", "head", head, "err", err)
			d.rx.Push(head, 0)
			pushed = true
			continue
		}
		n := d.fillRX(chain)
		d.rx.Push(head, n)
		pushed = true
	}
	if pushed && d.rx.NeedNotify() {
		d.rxCall.Notify()
	}
}

// fillRX writes the next pending packet into chain and returns its length.
func (d *device) fillRX(chain virtq.Chain) uint32 {
	var hdr [vsockpkt.HeaderLen]byte
	if len(d.ctl) > 0 {
		h := d.ctl[0]
		d.ctl = d.ctl[1:]
		if len(d.ctl) == 0 {
			d.ctl = nil
		}
		h.Encode(hdr[:])
		vsockpkt.Scatter(chain.Writable, 0, hdr[:])
		return vsockpkt.HeaderLen
	}
	if len(d.ctlConns) > 0 {
		c := d.ctlConns[0]
		d.ctlConns = d.ctlConns[1:]
		op, flags, _ := c.nextCtl()
		if c.pend != 0 {
			d.ctlConns = append(d.ctlConns, c)
		} else {
			c.inCtlq = false
		}
		if op == vsockpkt.OpCreditRequest && c.peerFree() > 0 {
			c.creditReqSent = false
			op = vsockpkt.OpCreditUpdate
		}
		h := d.connHeader(c, op)
		h.Flags = flags
		h.Encode(hdr[:])
		vsockpkt.Scatter(chain.Writable, 0, hdr[:])
		return vsockpkt.HeaderLen
	}
	c := d.dataConns[0]
	d.dataConns = d.dataConns[1:]
	n := uint64(len(c.rdata))
	n = min(n, chain.WriteLen-vsockpkt.HeaderLen, uint64(c.peerFree()), vsockpkt.MaxPayload)
	h := d.connHeader(c, vsockpkt.OpRW)
	h.Len = uint32(n)
	h.Encode(hdr[:])
	vsockpkt.Scatter(chain.Writable, 0, hdr[:])
	vsockpkt.Scatter(chain.Writable, vsockpkt.HeaderLen, c.rdata[:n])
	c.rdata = c.rdata[n:]
	c.txCnt += uint32(n)
	if len(c.rdata) == 0 && c.rnext != nil {
		c.rdata, c.rnext = c.rnext, nil
		signal(c.consumed)
	}
	if len(c.rdata) > 0 {
		d.dataConns = append(d.dataConns, c) // round robin
	} else {
		c.inDataq = false
		c.rdata = nil
		signal(c.consumed)
		if c.eof && !c.shutSent {
			c.shutSent = true
			d.queueCtl(c, pendShutdown)
		}
	}
	return vsockpkt.HeaderLen + uint32(n)
}

// connHeader is a header for c carrying our current credit.
func (d *device) connHeader(c *conn, op vsockpkt.Op) vsockpkt.Header {
	h := d.header(c.key.local, c.key.peer, op)
	h.BufAlloc = d.cfg.BufAlloc
	h.FwdCnt = c.fwdCnt
	c.lastFwdSent = c.fwdCnt
	return h
}
