package vsockd

import (
	"net"
	"time"

	"github.com/wren-vm/wren/vsockd/vsockpkt"
)

// connKey identifies a stream: host-side port and guest-side port (the guest
// CID is fixed per device).
type connKey struct {
	local, peer uint32
}

type connState int

const (
	// stLocalInit: the host connected and we sent REQUEST; awaiting RESPONSE.
	stLocalInit connState = iota
	// stPeerInit: the guest sent REQUEST; we are dialing <uds>_<port>.
	stPeerInit
	// stEstablished: bytes flow both ways.
	stEstablished
)

// Pending control packets, kept as flags so that the per-connection backlog
// is bounded however fast the guest sends (the spec requires the tx queue to
// be processed even while rx is full).
const (
	pendRequest uint8 = 1 << iota
	pendResponse
	pendCreditUpdate
	pendCreditRequest
	pendShutdown
)

// conn is one vsock stream and its host Unix socket. All fields are guarded
// by the device lock, except uds's I/O, which the reader and writer
// goroutines do without it.
type conn struct {
	key     connKey
	state   connState
	uds     *net.UnixConn
	removed bool
	closed  chan struct{} // closed on removal; ends the I/O goroutines
	timer   *time.Timer   // connect timeout (host-initiated)

	// guest → host
	wq          []byte // received from the guest, not yet handed to the writer
	writing     int    // handed to the writer, not yet written
	wake        chan struct{}
	okLine      []byte // "OK <port>\n", written before any data
	recvCnt     uint32 // bytes received from the guest
	fwdCnt      uint32 // bytes written to the host socket
	lastFwdSent uint32 // fwd_cnt the guest last heard from us
	peerShut    uint32 // SHUTDOWN flags the guest sent
	closedWrite bool   // CloseWrite done on uds

	// host → guest
	rdata         []byte // read from the host socket, not yet sent to the guest
	rnext         []byte // the chunk read after rdata (non-nil only if rdata is not empty)
	consumed      chan struct{}
	eof           bool // the host socket hit EOF
	shutSent      bool
	txCnt         uint32 // bytes sent to the guest
	peerBufAlloc  uint32
	peerFwdCnt    uint32
	creditReqSent bool

	pend    uint8
	inCtlq  bool
	inDataq bool
}

func newConn(key connKey, state connState) *conn {
	return &conn{
		key:      key,
		state:    state,
		closed:   make(chan struct{}),
		wake:     make(chan struct{}, 1),
		consumed: make(chan struct{}, 1),
	}
}

// peerFree is how many more bytes the guest has room for.
func (c *conn) peerFree() uint32 {
	inFlight := c.txCnt - c.peerFwdCnt
	if inFlight >= c.peerBufAlloc {
		return 0
	}
	return c.peerBufAlloc - inFlight
}

// buffered is how much guest data we hold for the host socket.
func (c *conn) buffered() int { return len(c.wq) + c.writing }

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// nextCtl picks and clears the most urgent pending control op.
func (c *conn) nextCtl() (vsockpkt.Op, uint32, bool) {
	order := []struct {
		bit uint8
		op  vsockpkt.Op
	}{
		{pendRequest, vsockpkt.OpRequest},
		{pendResponse, vsockpkt.OpResponse},
		{pendCreditUpdate, vsockpkt.OpCreditUpdate},
		{pendCreditRequest, vsockpkt.OpCreditRequest},
		{pendShutdown, vsockpkt.OpShutdown},
	}
	for _, o := range order {
		if c.pend&o.bit != 0 {
			c.pend &^= o.bit
			var flags uint32
			if o.op == vsockpkt.OpShutdown {
				// We only ever stop sending; the guest may still send
				// to the host until it closes (a host half-close).
				flags = vsockpkt.ShutdownSend
			}
			return o.op, flags, true
		}
	}
	return 0, 0, false
}
