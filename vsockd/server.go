// Package vsockd is a vhost-user-vsock device backend: it gives a QEMU guest
// (device vhost-user-vsock-pci) a virtio-vsock device whose host side is the
// Firecracker "hybrid vsock" convention over Unix sockets:
//
//   - host → guest: connect to UDSPath, write "CONNECT <port>\n", read
//     "OK <hostport>\n", then the socket is the stream; the socket is closed
//     without OK if the guest does not accept.
//   - guest → host: the guest connects to CID 2 port P and the backend
//     connects to the Unix socket "<UDSPath>_<P>"; the guest sees a reset if
//     nobody listens there.
//
// One Server serves one VM at a time and is ready for the next VM when the
// frontend disconnects.
package vsockd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wren-vm/wren/vsockd/vhostuser"
)

// Config configures a Server.
type Config struct {
	// GuestCID is the context ID the guest gets (3 or more).
	GuestCID uint64
	// UDSPath is the hybrid vsock socket.
	UDSPath string
	// BufAlloc is the receive buffer we advertise per stream (default 256 KiB).
	BufAlloc uint32
	// ConnectTimeout bounds a connection set-up in either direction and the
	// CONNECT line (default 10s: TCG guests are slow).
	ConnectTimeout time.Duration
	// MaxConns bounds concurrent streams (default 1024).
	MaxConns int
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
}

// Server is a vhost-user-vsock backend.
type Server struct {
	cfg    Config
	dev    *device
	vu     *vhostuser.Server
	hybrid *net.UnixListener
}

// New validates cfg and binds the hybrid socket UDSPath (replacing a stale
// socket file there).
func New(cfg Config) (*Server, error) {
	if cfg.GuestCID < 3 || cfg.GuestCID >= 0xffffffff {
		return nil, fmt.Errorf("guest CID %d is reserved or out of range", cfg.GuestCID)
	}
	if cfg.UDSPath == "" {
		return nil, errors.New("no UDS path")
	}
	if cfg.BufAlloc == 0 {
		cfg.BufAlloc = 256 << 10
	}
	if cfg.BufAlloc < 4096 {
		return nil, fmt.Errorf("buffer size %d is below 4096", cfg.BufAlloc)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ln, err := ListenUnix(cfg.UDSPath)
	if err != nil {
		return nil, fmt.Errorf("hybrid vsock socket: %w", err)
	}
	dev := newDevice(cfg)
	return &Server{
		cfg:    cfg,
		dev:    dev,
		hybrid: ln,
		vu:     &vhostuser.Server{Dev: dev, NumQueues: 2, Log: cfg.Logger},
	}, nil
}

// Close releases the hybrid socket of a Server that will not be served
// (Serve closes it itself).
func (s *Server) Close() error {
	return s.hybrid.Close()
}

// ListenUnix listens on a Unix stream socket at path, first removing a stale
// socket file (but nothing else) left there. The vhost-user socket must be
// listening before QEMU starts: QEMU connects once and does not retry.
func ListenUnix(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(true)
	return ln, nil
}

// Serve runs the backend until ctx is done: it serves vhost-user frontends
// accepted on vhostLn, one VM after another, and host connections on the
// hybrid socket. On return every connection, goroutine and mapping it made is
// gone and both sockets are closed.
func (s *Server) Serve(ctx context.Context, vhostLn *net.UnixListener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.acceptHybrid(ctx)
	}()
	err := s.vu.Serve(ctx, vhostLn)
	cancel()
	s.hybrid.Close()
	wg.Wait()
	s.dev.mu.Lock()
	s.dev.resetConns()
	s.dev.mu.Unlock()
	s.dev.wg.Wait()
	return err
}

func (s *Server) acceptHybrid(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { s.hybrid.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	// Bound clients that connect and never finish their CONNECT line.
	pending := make(chan struct{}, maxPendingHandshakes)
	for {
		c, err := s.hybrid.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like pass; keep serving.
			s.cfg.Logger.Error("hybrid vsock accept failed", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		select {
		case pending <- struct{}{}:
		default:
			s.cfg.Logger.Warn("too many pending hybrid handshakes: dropping a client")
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-pending }()
			s.handshake(ctx, c)
		}()
	}
}

// handshake reads the CONNECT line and hands the socket to the device.
func (s *Server) handshake(ctx context.Context, c *net.UnixConn) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(s.cfg.ConnectTimeout))
	port, err := ReadConnectLine(c)
	if !stop() {
		return // closed by shutdown
	}
	if err != nil {
		s.cfg.Logger.Info("bad hybrid vsock handshake", "err", err)
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if err := s.dev.hostConnect(c, port); err != nil {
		// Debug, not info: a host waiting for a booting guest's agent is
		// refused every few tens of milliseconds until it listens.
		s.cfg.Logger.Debug("host connect refused", "port", port, "err", err)
	}
}

const maxPendingHandshakes = 256

// maxConnectLine bounds "CONNECT <port>\n".
const maxConnectLine = 32

// ReadConnectLine reads "CONNECT <port>\n" one byte at a time, so that bytes
// the client sends after the line stay in the socket for the stream.
func ReadConnectLine(r io.Reader) (uint32, error) {
	var line []byte
	var b [1]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, fmt.Errorf("read CONNECT line: %w", err)
		}
		if b[0] == '\n' {
			break
		}
		if len(line) >= maxConnectLine {
			return 0, errors.New("CONNECT line too long")
		}
		line = append(line, b[0])
	}
	return ParseConnectLine(string(line))
}

// ParseConnectLine parses "CONNECT <port>" (verb case-insensitive, no newline).
func ParseConnectLine(line string) (uint32, error) {
	f := strings.Fields(line)
	if len(f) != 2 || !strings.EqualFold(f[0], "CONNECT") {
		return 0, fmt.Errorf("malformed CONNECT line %q", line)
	}
	p, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("bad port in CONNECT line %q", line)
	}
	return uint32(p), nil
}

// Dial connects to guest port through the hybrid socket at udsPath and
// completes the CONNECT handshake; the returned connection is the stream.
// It fails when the guest does not accept (nobody listening on port).
func Dial(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		c.Close()
		return nil, fmt.Errorf("send CONNECT: %w", err)
	}
	// Read the reply byte-wise so no stream bytes are consumed.
	var line []byte
	var b [1]byte
	for len(line) < maxConnectLine {
		if _, err := io.ReadFull(c, b[:]); err != nil {
			c.Close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("guest port %d: connection refused (%w)", port, err)
		}
		if b[0] == '\n' {
			if !strings.HasPrefix(string(line), "OK ") {
				c.Close()
				return nil, fmt.Errorf("unexpected reply %q", line)
			}
			return c, nil
		}
		line = append(line, b[0])
	}
	c.Close()
	return nil, errors.New("reply line too long")
}
