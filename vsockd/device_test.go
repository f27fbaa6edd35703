package vsockd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wren-vm/wren/vsockd/virtq/virtqtest"
	"github.com/wren-vm/wren/vsockd/vsockpkt"
)

// These tests drive the device from the guest side with an in-memory driver
// (guest RAM is a Go byte slice) and from the host side with real Unix
// sockets.

const guestCID = 3

type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testConfig(t testing.TB) Config {
	return Config{
		GuestCID:       guestCID,
		UDSPath:        filepath.Join(t.TempDir(), "v.sock"),
		BufAlloc:       64 << 10,
		ConnectTimeout: 2 * time.Second,
		MaxConns:       64,
		Logger:         slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

type packet struct {
	vsockpkt.Header
	payload []byte
}

type guest struct {
	t       testing.TB
	d       *device
	rx, tx  *virtqtest.Driver
	inbox   []packet
	bufSize int
	emptyRX int
}

func newGuest(t testing.TB, cfg Config) *guest {
	t.Helper()
	g := &guest{t: t, d: newDevice(cfg), rx: virtqtest.New(4<<20, 256), tx: virtqtest.New(4<<20, 256), bufSize: 4096}
	g.d.mu.Lock()
	g.d.QueueStarted(queueRX, g.rx.Queue(), nil)
	g.d.QueueStarted(queueTX, g.tx.Queue(), nil)
	g.d.mu.Unlock()
	t.Cleanup(g.stop)
	return g
}

// stop stops the device as GET_VRING_BASE does and waits for every
// connection goroutine.
func (g *guest) stop() {
	g.d.mu.Lock()
	if g.d.rx != nil {
		g.d.QueueStopped(queueRX)
	}
	if g.d.tx != nil {
		g.d.QueueStopped(queueTX)
	}
	g.d.mu.Unlock()
	g.d.wg.Wait()
}

func (g *guest) kick() {
	g.d.mu.Lock()
	g.d.pump()
	g.d.mu.Unlock()
}

// send puts a packet on the tx queue the way Linux 6.1 does (header and
// payload in separate descriptors) and kicks.
func (g *guest) send(h vsockpkt.Header, payload []byte) {
	g.t.Helper()
	hdr := make([]byte, vsockpkt.HeaderLen)
	h.Len = uint32(len(payload))
	h.Encode(hdr)
	segs := []virtqtest.Seg{{Data: hdr}}
	if len(payload) > 0 {
		segs = append(segs, virtqtest.Seg{Data: payload})
	}
	if _, ok := g.tx.Post(segs...); !ok {
		g.t.Fatal("tx queue full")
	}
	g.kick()
	for _, u := range g.tx.Collect() {
		if u.Len != 0 {
			g.t.Fatalf("tx used len %d, want 0", u.Len)
		}
	}
}

func (g *guest) hdr(op vsockpkt.Op, src, dst uint32) vsockpkt.Header {
	return vsockpkt.Header{SrcCID: guestCID, DstCID: vsockpkt.HostCID, SrcPort: src, DstPort: dst,
		Type: vsockpkt.TypeStream, Op: op, BufAlloc: 256 << 10}
}

// refill keeps rx buffers posted (two descriptors each, like Linux 6.1).
func (g *guest) refill() {
	for g.rx.Free() >= 2 {
		g.rx.Post(virtqtest.Seg{WriteLen: vsockpkt.HeaderLen}, virtqtest.Seg{WriteLen: g.bufSize})
	}
}

func (g *guest) collect() {
	for _, u := range g.rx.Collect() {
		if u.Len == 0 {
			g.emptyRX++ // a buffer the device refused (malformed)
			continue
		}
		if u.Len < vsockpkt.HeaderLen {
			g.t.Fatalf("rx completion of %d bytes", u.Len)
		}
		h, err := vsockpkt.Decode(u.Written)
		if err != nil {
			g.t.Fatal(err)
		}
		if h.SrcCID != vsockpkt.HostCID || h.DstCID != guestCID || h.Type != vsockpkt.TypeStream {
			g.t.Fatalf("bad addressing in %+v", h)
		}
		if int(h.Len) != int(u.Len)-vsockpkt.HeaderLen {
			g.t.Fatalf("hdr.len %d in a %d-byte completion", h.Len, u.Len)
		}
		g.inbox = append(g.inbox, packet{h, append([]byte(nil), u.Written[vsockpkt.HeaderLen:]...)})
	}
}

// next waits for the next packet the device sends.
func (g *guest) next() packet {
	g.t.Helper()
	p, ok := g.tryNext(5 * time.Second)
	if !ok {
		g.t.Fatal("no packet from the device within 5s")
	}
	return p
}

func (g *guest) tryNext(wait time.Duration) (packet, bool) {
	deadline := time.Now().Add(wait)
	for {
		g.refill()
		g.kick()
		g.collect()
		if len(g.inbox) > 0 {
			p := g.inbox[0]
			g.inbox = g.inbox[1:]
			return p, true
		}
		if time.Now().After(deadline) {
			return packet{}, false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (g *guest) expect(op vsockpkt.Op) packet {
	g.t.Helper()
	p := g.next()
	if p.Op != op {
		g.t.Fatalf("got %v %+v, want %v", p.Op, p.Header, op)
	}
	return p
}

func (g *guest) expectNothing(wait time.Duration) {
	g.t.Helper()
	if p, ok := g.tryNext(wait); ok {
		g.t.Fatalf("unexpected %v %+v", p.Op, p.Header)
	}
}

// hostPair returns both ends of a fresh host Unix stream.
func hostPair(t testing.TB) (client net.Conn, server *net.UnixConn) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "pair.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client, s.(*net.UnixConn)
}

func readLine(t testing.TB, c net.Conn) (string, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil {
			return string(line), err
		}
		line = append(line, b[0])
		if b[0] == '\n' {
			return string(line), nil
		}
	}
}

// establish runs a host-initiated connect to guestPort and returns the host
// client and the guest's view (REQUEST packet).
func establish(t testing.TB, g *guest, guestPort uint32, guestBuf uint32) (net.Conn, packet) {
	t.Helper()
	client, server := hostPair(t)
	g.refill()
	if err := g.d.hostConnect(server, guestPort); err != nil {
		t.Fatal(err)
	}
	req := g.expect(vsockpkt.OpRequest)
	if req.DstPort != guestPort || req.SrcPort < 1<<30 || req.BufAlloc != g.d.cfg.BufAlloc {
		t.Fatalf("REQUEST %+v", req.Header)
	}
	resp := g.hdr(vsockpkt.OpResponse, guestPort, req.SrcPort)
	resp.BufAlloc = guestBuf
	g.send(resp, nil)
	line, err := readLine(t, client)
	if err != nil || line != fmt.Sprintf("OK %d\n", req.SrcPort) {
		t.Fatalf("handshake reply %q %v", line, err)
	}
	_ = client.SetReadDeadline(time.Time{})
	return client, req
}

// readAllGuest collects n bytes of RW payload for the stream, crediting as
// it goes; it fails on any other packet.
func (g *guest) readRW(t testing.TB, n int, local uint32) []byte {
	t.Helper()
	var got []byte
	for len(got) < n {
		p := g.next()
		switch p.Op {
		case vsockpkt.OpRW:
			if p.SrcPort != local {
				t.Fatalf("RW for port %d, want %d", p.SrcPort, local)
			}
			got = append(got, p.payload...)
		case vsockpkt.OpCreditUpdate, vsockpkt.OpCreditRequest:
		default:
			t.Fatalf("unexpected %v while reading data", p.Op)
		}
	}
	return got
}

func TestHostConnectRelaysBothWays(t *testing.T) {
	g := newGuest(t, testConfig(t))
	client, req := establish(t, g, 1024, 256<<10)
	local := req.SrcPort

	if _, err := client.Write([]byte("from host")); err != nil {
		t.Fatal(err)
	}
	if got := g.readRW(t, 9, local); string(got) != "from host" {
		t.Fatalf("guest got %q", got)
	}
	g.send(g.hdr(vsockpkt.OpRW, 1024, local), []byte("from guest"))
	buf := make([]byte, 10)
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "from guest" {
		t.Fatalf("host got %q %v", buf, err)
	}
}

func TestHostConnectRefused(t *testing.T) {
	g := newGuest(t, testConfig(t))
	client, server := hostPair(t)
	if err := g.d.hostConnect(server, 9); err != nil {
		t.Fatal(err)
	}
	req := g.expect(vsockpkt.OpRequest)
	g.send(g.hdr(vsockpkt.OpRST, 9, req.SrcPort), nil)
	if line, err := readLine(t, client); err != io.EOF || line != "" {
		t.Fatalf("refused connect: read %q %v, want EOF", line, err)
	}
	if n := len(g.d.conns); n != 0 {
		t.Fatalf("%d connections left", n)
	}
}

func TestHostConnectTimeout(t *testing.T) {
	cfg := testConfig(t)
	cfg.ConnectTimeout = 100 * time.Millisecond
	g := newGuest(t, cfg)
	client, server := hostPair(t)
	// With rx buffers posted the REQUEST leaves at once, before the timer
	// can fire however loaded the machine is.
	g.refill()
	if err := g.d.hostConnect(server, 9); err != nil {
		t.Fatal(err)
	}
	req := g.expect(vsockpkt.OpRequest)
	if line, err := readLine(t, client); err != io.EOF || line != "" {
		t.Fatalf("timed-out connect: read %q %v, want EOF", line, err)
	}
	// The guest is told to forget the half-open connection, and a late
	// RESPONSE is answered with RST.
	rst := g.expect(vsockpkt.OpRST)
	if rst.SrcPort != req.SrcPort || rst.DstPort != 9 {
		t.Fatalf("RST %+v", rst.Header)
	}
	g.send(g.hdr(vsockpkt.OpResponse, 9, req.SrcPort), nil)
	g.expect(vsockpkt.OpRST)
}

func TestHostConnectWithoutGuest(t *testing.T) {
	d := newDevice(testConfig(t))
	client, server := hostPair(t)
	if err := d.hostConnect(server, 1024); err == nil {
		t.Fatal("connect accepted with no running guest")
	}
	if _, err := readLine(t, client); err != io.EOF {
		t.Fatalf("client not closed: %v", err)
	}
}

func TestGuestConnect(t *testing.T) {
	cfg := testConfig(t)
	g := newGuest(t, cfg)
	ln, err := net.Listen("unix", cfg.UDSPath+"_5000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g.send(g.hdr(vsockpkt.OpRequest, 40000, 5000), nil)
	resp := g.expect(vsockpkt.OpResponse)
	if resp.SrcPort != 5000 || resp.DstPort != 40000 || resp.BufAlloc != cfg.BufAlloc {
		t.Fatalf("RESPONSE %+v", resp.Header)
	}
	hc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	g.send(g.hdr(vsockpkt.OpRW, 40000, 5000), []byte("hi host"))
	buf := make([]byte, 7)
	_ = hc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(hc, buf); err != nil || string(buf) != "hi host" {
		t.Fatalf("host got %q %v", buf, err)
	}
	if _, err := hc.Write([]byte("hi guest")); err != nil {
		t.Fatal(err)
	}
	if got := g.readRW(t, 8, 5000); string(got) != "hi guest" {
		t.Fatalf("guest got %q", got)
	}
}

func TestGuestConnectNobodyListening(t *testing.T) {
	g := newGuest(t, testConfig(t))
	g.send(g.hdr(vsockpkt.OpRequest, 40000, 5001), nil)
	rst := g.expect(vsockpkt.OpRST)
	if rst.SrcPort != 5001 || rst.DstPort != 40000 {
		t.Fatalf("RST %+v", rst.Header)
	}
	if len(g.d.conns) != 0 {
		t.Fatal("connection left behind")
	}
}

// The device never sends more than the guest's advertised buffer allows,
// asks for credit when it runs out, and resumes on CREDIT_UPDATE.
func TestHostToGuestRespectsCredit(t *testing.T) {
	g := newGuest(t, testConfig(t))
	client, req := establish(t, g, 1024, 4096)
	local := req.SrcPort
	data := bytes.Repeat([]byte("0123456789"), 1000) // 10000 bytes
	// Blocks on credit; the reads below check what arrives.
	go func() { _, _ = client.Write(data) }()

	got := g.readRW(t, 4096, local)
	if len(got) != 4096 {
		t.Fatalf("sent %d bytes against 4096 credit", len(got))
	}
	if p := g.expect(vsockpkt.OpCreditRequest); p.SrcPort != local {
		t.Fatalf("CREDIT_REQUEST %+v", p.Header)
	}
	g.expectNothing(50 * time.Millisecond)

	upd := g.hdr(vsockpkt.OpCreditUpdate, 1024, local)
	upd.BufAlloc, upd.FwdCnt = 4096, 4096
	g.send(upd, nil)
	got = append(got, g.readRW(t, 4096, local)...)
	if len(got) != 8192 {
		t.Fatalf("sent %d bytes against 8192 credit", len(got))
	}
	g.expect(vsockpkt.OpCreditRequest)
	upd.FwdCnt = 8192
	g.send(upd, nil)
	got = append(got, g.readRW(t, 10000-8192, local)...)
	if !bytes.Equal(got, data) {
		t.Fatal("data corrupted")
	}
}

func TestGuestCreditOverrunResets(t *testing.T) {
	cfg := testConfig(t)
	cfg.BufAlloc = 4096
	g := newGuest(t, cfg)
	client, req := establish(t, g, 1024, 256<<10)
	g.send(g.hdr(vsockpkt.OpRW, 1024, req.SrcPort), make([]byte, 5000))
	if p := g.expect(vsockpkt.OpRST); p.SrcPort != req.SrcPort {
		t.Fatalf("RST %+v", p.Header)
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := io.Copy(io.Discard, client); err != nil || n != 0 {
		t.Fatalf("host read %d bytes, %v; want EOF and nothing", n, err)
	}
}

// As the host drains guest data the device returns credit.
func TestCreditUpdateAsHostConsumes(t *testing.T) {
	g := newGuest(t, testConfig(t)) // BufAlloc 64 KiB
	client, req := establish(t, g, 1024, 256<<10)
	total := 0
	for i := 0; i < 5; i++ {
		g.send(g.hdr(vsockpkt.OpRW, 1024, req.SrcPort), make([]byte, 4096))
		total += 4096
	}
	buf := make([]byte, total)
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, buf); err != nil {
		t.Fatal(err)
	}
	// Updates may come in steps as the writer drains; they must reach the
	// full count without going backwards.
	var last uint32
	for last != uint32(total) {
		p := g.expect(vsockpkt.OpCreditUpdate)
		if p.FwdCnt < last || p.FwdCnt > uint32(total) || p.BufAlloc != 64<<10 {
			t.Fatalf("CREDIT_UPDATE fwd_cnt %d buf_alloc %d after %d (total %d)", p.FwdCnt, p.BufAlloc, last, total)
		}
		last = p.FwdCnt
	}
}

func TestCreditRequestAnswered(t *testing.T) {
	g := newGuest(t, testConfig(t))
	_, req := establish(t, g, 1024, 256<<10)
	g.send(g.hdr(vsockpkt.OpCreditRequest, 1024, req.SrcPort), nil)
	p := g.expect(vsockpkt.OpCreditUpdate)
	if p.BufAlloc != 64<<10 || p.FwdCnt != 0 {
		t.Fatalf("CREDIT_UPDATE %+v", p.Header)
	}
}

func TestGuestShutdown(t *testing.T) {
	g := newGuest(t, testConfig(t))
	client, req := establish(t, g, 1024, 256<<10)
	local := req.SrcPort
	g.send(g.hdr(vsockpkt.OpRW, 1024, local), []byte("last words"))
	sh := g.hdr(vsockpkt.OpShutdown, 1024, local)
	sh.Flags = vsockpkt.ShutdownSend
	g.send(sh, nil)
	// The host reads the data then EOF, and can still write.
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "last words" {
		t.Fatalf("host read %q %v", got, err)
	}
	if _, err := client.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	if got := g.readRW(t, 5, local); string(got) != "reply" {
		t.Fatalf("guest got %q", got)
	}
	// Data after the guest said it is done sending is a protocol error.
	sh.Flags = vsockpkt.ShutdownRcv | vsockpkt.ShutdownSend
	g.send(sh, nil)
	if p := g.expect(vsockpkt.OpRST); p.SrcPort != local {
		t.Fatalf("RST %+v", p.Header)
	}
	if _, err := client.Write([]byte("x")); err == nil {
		// One write may still be buffered; the next must fail.
		time.Sleep(10 * time.Millisecond)
		if _, err := client.Write([]byte("x")); err == nil {
			t.Fatal("host socket still open after RST")
		}
	}
}

func TestHostEOFSendsShutdownAfterData(t *testing.T) {
	g := newGuest(t, testConfig(t))
	client, req := establish(t, g, 1024, 256<<10)
	if _, err := client.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := client.(*net.UnixConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got := g.readRW(t, 3, req.SrcPort); string(got) != "bye" {
		t.Fatalf("guest got %q", got)
	}
	p := g.expect(vsockpkt.OpShutdown)
	if p.Flags != vsockpkt.ShutdownSend {
		t.Fatalf("SHUTDOWN flags %d, want SEND only", p.Flags)
	}
	// The guest may still send to the half-closed host.
	g.send(g.hdr(vsockpkt.OpRW, 1024, req.SrcPort), []byte("ok"))
	buf := make([]byte, 2)
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "ok" {
		t.Fatalf("host got %q %v", buf, err)
	}
}

func TestStrayPackets(t *testing.T) {
	g := newGuest(t, testConfig(t))
	// Unknown connection → RST with ports swapped.
	g.send(g.hdr(vsockpkt.OpRW, 7, 8), []byte("x"))
	if p := g.expect(vsockpkt.OpRST); p.SrcPort != 8 || p.DstPort != 7 {
		t.Fatalf("RST %+v", p.Header)
	}
	// RST for an unknown connection is not answered.
	g.send(g.hdr(vsockpkt.OpRST, 7, 8), nil)
	// Foreign addresses are dropped silently.
	h := g.hdr(vsockpkt.OpRequest, 7, 8)
	h.SrcCID = 99
	g.send(h, nil)
	h = g.hdr(vsockpkt.OpRequest, 7, 8)
	h.DstCID = 5
	g.send(h, nil)
	g.expectNothing(50 * time.Millisecond)
	// SEQPACKET is not offered.
	h = g.hdr(vsockpkt.OpRequest, 7, 8)
	h.Type = vsockpkt.TypeSeqpacket
	g.send(h, nil)
	g.expect(vsockpkt.OpRST)
	// A second REQUEST on a live connection resets it.
	client, req := establish(t, g, 1024, 256<<10)
	g.send(g.hdr(vsockpkt.OpRequest, 1024, req.SrcPort), nil)
	g.expect(vsockpkt.OpRST)
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(client); err != nil {
		t.Fatal(err)
	}
}

func TestMalformedChainsDoNotStopTheDevice(t *testing.T) {
	cfg := testConfig(t)
	g := newGuest(t, cfg)
	// A tx descriptor pointing outside guest RAM.
	g.tx.SetDesc(200, 0xdead_0000_0000, 44, 0, 0)
	g.tx.PublishHead(200)
	// A tx chain whose header claims more payload than it carries.
	h := g.hdr(vsockpkt.OpRW, 7, 8)
	h.Len = 1000
	hdr := make([]byte, vsockpkt.HeaderLen)
	h.Encode(hdr)
	g.tx.Post(virtqtest.Seg{Data: hdr}, virtqtest.Seg{Data: []byte("short")})
	// A tx chain with a device-writable buffer.
	g.tx.Post(virtqtest.Seg{Data: hdr}, virtqtest.Seg{WriteLen: 10})
	// An rx buffer too small for a header.
	g.rx.Post(virtqtest.Seg{WriteLen: 20})
	g.kick()
	// The device still works: a guest connect gets its answer.
	g.send(g.hdr(vsockpkt.OpRequest, 40000, 5001), nil)
	g.expect(vsockpkt.OpRST)
	if g.emptyRX != 1 {
		t.Fatalf("%d rx buffers returned empty, want 1 (the undersized one)", g.emptyRX)
	}
	if g.d.tx.Broken() || g.d.rx.Broken() {
		t.Fatal("queue marked broken by a malformed chain")
	}
}

func TestDeviceStopClosesConnections(t *testing.T) {
	g := newGuest(t, testConfig(t))
	client, _ := establish(t, g, 1024, 256<<10)
	g.stop()
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(client); err != nil {
		t.Fatalf("host socket not closed at device stop: %v", err)
	}
	if len(g.d.conns) != 0 {
		t.Fatal("connections survive device stop")
	}
}

// Many streams at once, each with its own data, interleaved on the rings.
func TestManyConnections(t *testing.T) {
	g := newGuest(t, testConfig(t))
	const n = 40
	clients := make([]net.Conn, n)
	ports := make([]uint32, n)
	for i := range clients {
		clients[i], ports[i] = establishPort(t, g, uint32(2000+i))
	}
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Write(bytes.Repeat([]byte{byte(i)}, 10000)); err != nil {
				t.Errorf("client %d: %v", i, err)
			}
			if err := c.(*net.UnixConn).CloseWrite(); err != nil {
				t.Errorf("client %d: %v", i, err)
			}
		}()
	}
	got := map[uint32][]byte{}
	done := 0
	for done < n {
		p := g.next()
		switch p.Op {
		case vsockpkt.OpRW:
			got[p.SrcPort] = append(got[p.SrcPort], p.payload...)
		case vsockpkt.OpShutdown:
			done++
		case vsockpkt.OpCreditRequest, vsockpkt.OpCreditUpdate:
		default:
			t.Fatalf("unexpected %v", p.Op)
		}
	}
	wg.Wait()
	for i, p := range ports {
		if !bytes.Equal(got[p], bytes.Repeat([]byte{byte(i)}, 10000)) {
			t.Fatalf("stream %d: got %d bytes", i, len(got[p]))
		}
	}
}

func establishPort(t testing.TB, g *guest, port uint32) (net.Conn, uint32) {
	c, req := establish(t, g, port, 256<<10)
	return c, req.SrcPort
}

func TestConnectLine(t *testing.T) {
	good := map[string]uint32{"CONNECT 1024": 1024, "connect 5": 5, "Connect   4294967295": 4294967295}
	for line, want := range good {
		if got, err := ParseConnectLine(line); err != nil || got != want {
			t.Errorf("ParseConnectLine(%q) = %d %v", line, got, err)
		}
	}
	for _, line := range []string{"", "CONNECT", "CONNECT x", "CONNECT 4294967296", "CONNECT -1", "LISTEN 5", "CONNECT 1 2"} {
		if _, err := ParseConnectLine(line); err == nil {
			t.Errorf("ParseConnectLine(%q) accepted", line)
		}
	}
	// Bytes after the line stay unread.
	r := strings.NewReader("CONNECT 7\nrest")
	if p, err := ReadConnectLine(r); err != nil || p != 7 {
		t.Fatalf("ReadConnectLine = %d %v", p, err)
	}
	if rest, _ := io.ReadAll(r); string(rest) != "rest" {
		t.Fatalf("over-read: left %q", rest)
	}
	if _, err := ReadConnectLine(strings.NewReader(strings.Repeat("A", 100) + "\n")); err == nil {
		t.Fatal("overlong line accepted")
	}
	if _, err := ReadConnectLine(strings.NewReader("CONNECT 1")); err == nil {
		t.Fatal("line without newline accepted")
	}
}

// The hybrid front end over a real socket: handshake errors close the
// client, and Dial reports refusal.
func TestHybridHandshake(t *testing.T) {
	cfg := testConfig(t)
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := &guest{t: t, d: srv.dev, rx: virtqtest.New(4<<20, 256), tx: virtqtest.New(4<<20, 256), bufSize: 4096}
	srv.dev.mu.Lock()
	srv.dev.QueueStarted(queueRX, g.rx.Queue(), nil)
	srv.dev.QueueStarted(queueTX, g.tx.Queue(), nil)
	srv.dev.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.acceptHybrid(ctx); close(done) }()
	defer func() { cancel(); <-done; g.stop() }()

	bad, err := net.Dial("unix", cfg.UDSPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Write([]byte("HELLO\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := readLine(t, bad); err != io.EOF {
		t.Fatalf("bad handshake: %v, want EOF", err)
	}
	bad.Close()

	type result struct {
		c   net.Conn
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := Dial(context.Background(), cfg.UDSPath, 77)
		res <- result{c, err}
	}()
	req := g.expect(vsockpkt.OpRequest)
	g.send(g.hdr(vsockpkt.OpRST, 77, req.SrcPort), nil)
	if r := <-res; r.err == nil {
		r.c.Close()
		t.Fatal("Dial succeeded against a refusing guest")
	}
	go func() {
		c, err := Dial(context.Background(), cfg.UDSPath, 78)
		res <- result{c, err}
	}()
	req = g.expect(vsockpkt.OpRequest)
	g.send(g.hdr(vsockpkt.OpResponse, 78, req.SrcPort), nil)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.c.Close()
}

// A guest that churns connections while giving no rx buffers cannot grow
// the device's work queues without bound.
func TestChurnWithoutRXBuffersIsBounded(t *testing.T) {
	cfg := testConfig(t)
	g := newGuest(t, cfg)
	ln, err := net.Listen("unix", cfg.UDSPath+"_6000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for i := 0; i < 2000; i++ {
		src := uint32(10000 + i)
		g.send(g.hdr(vsockpkt.OpRequest, src, 6000), nil)
		// Wait for the dial to finish, then reset from the guest side.
		deadline := time.Now().Add(5 * time.Second)
		for {
			g.d.mu.Lock()
			c := g.d.conns[connKey{6000, src}]
			ready := c == nil || c.state == stEstablished
			g.d.mu.Unlock()
			if ready || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		g.send(g.hdr(vsockpkt.OpRST, src, 6000), nil)
	}
	g.d.mu.Lock()
	n, q := len(g.d.conns), len(g.d.ctlConns)
	g.d.mu.Unlock()
	if n != 0 || q > 2*n+64+1 {
		t.Fatalf("%d connections, %d queued control entries after churn", n, q)
	}
}
