// Command wren-vsockd is a vhost-user-vsock backend for QEMU's
// vhost-user-vsock-pci device, exposing guest vsock as Firecracker-style
// hybrid vsock on a Unix socket.
//
//	wren-vsockd --socket VHOST_USER_SOCKET --uds-path UDS --guest-cid N
//
// It binds both sockets, then prints "READY" on stdout: start QEMU only after
// that line (QEMU connects to the vhost-user socket once and never retries).
// It serves one VM after another until SIGINT/SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wren-vm/wren/vsockd"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "wren-vsockd:", err)
		os.Exit(1)
	}
}

func run() error {
	socket := flag.String("socket", "", "vhost-user socket to listen on (QEMU's chardev path)")
	uds := flag.String("uds-path", "", "hybrid vsock Unix socket (host connects with CONNECT <port>)")
	cid := flag.Uint64("guest-cid", 3, "guest context ID")
	bufAlloc := flag.Uint("buf-alloc", 256<<10, "per-stream receive buffer advertised to the guest")
	connTimeout := flag.Duration("connect-timeout", 10*time.Second, "connection set-up timeout")
	verbose := flag.Bool("v", false, "debug logging")
	flag.Parse()
	if *socket == "" || *uds == "" {
		flag.Usage()
		return fmt.Errorf("--socket and --uds-path are required")
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	srv, err := vsockd.New(vsockd.Config{
		GuestCID:       *cid,
		UDSPath:        *uds,
		BufAlloc:       uint32(*bufAlloc),
		ConnectTimeout: *connTimeout,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	ln, err := vsockd.ListenUnix(*socket)
	if err != nil {
		srv.Close()
		return fmt.Errorf("vhost-user socket: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Println("READY")
	log.Info("listening", "socket", *socket, "uds", *uds, "guest_cid", *cid)
	return srv.Serve(ctx, ln)
}
