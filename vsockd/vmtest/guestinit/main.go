// Command guestinit is the /init of the throwaway guest that the wren-vsockd
// VM tests boot. It loads the modules of the initramfs load list
// (agent/kmodload), then serves vsock ports for the host to exercise:
//
//	1234  echo: copies everything back, half-closes on EOF
//	1235  dial: reads "DIAL <port>\n", connects to CID 2 <port> and relays
//	      between the two streams; answers "ERR <reason>\n" if that fails
//	1236  sink: reads to EOF, then writes the byte count as a decimal line
//	1237  source: reads "<n>\n", writes n bytes of a fixed pattern, closes
//	1238  reset: answers "OK\n", then unbinds and rebinds the vsock PCI
//	      device (a device reset, as a guest reboot does to the backend)
//
// Port 1239 is never listened on. It prints "GUEST READY" on the console
// once all listeners are up, and never exits (it is PID 1).
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/kmodload"
	"github.com/wren-vm/wren/lib/kmod"
)

const cidAny = 0xffffffff

func main() {
	if err := setup(); err != nil {
		fmt.Println("GUEST FAILED:", err)
	}
	for {
		time.Sleep(time.Hour)
	}
}

func setup() error {
	for _, m := range []struct{ fs, dir string }{{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}} {
		_ = os.MkdirAll(m.dir, 0o755)
		_ = unix.Mount(m.fs, m.dir, m.fs, 0, "")
	}
	if _, err := kmodload.LoadList(kmod.ListPath); err != nil {
		return err
	}
	serve(1234, echo)
	serve(1235, dialRelay)
	serve(1236, sink)
	serve(1237, source)
	serve(1238, resetDevice)
	fmt.Println("GUEST READY")
	return nil
}

func serve(port uint32, h func(*vsock.Conn)) {
	var ln *vsock.Listener
	var err error
	// The transport registers asynchronously after module load.
	for i := 0; i < 100; i++ {
		if ln, err = vsock.ListenContextID(cidAny, port, nil); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		fmt.Println("GUEST FAILED: listen", port, err)
		return
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			go func() {
				defer c.Close()
				h(c.(*vsock.Conn))
			}()
		}
	}()
}

func echo(c *vsock.Conn) {
	_, _ = io.Copy(c, c)
	_ = c.CloseWrite()
	// Wait for the host to close before closing (so the host reads all).
	_, _ = io.Copy(io.Discard, c)
}

func dialRelay(c *vsock.Conn) {
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	port, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(line), "DIAL "), 10, 32)
	if err != nil {
		fmt.Fprintf(c, "ERR bad line\n")
		return
	}
	h, err := vsock.Dial(vsock.Host, uint32(port), nil)
	if err != nil {
		fmt.Fprintf(c, "ERR %v\n", err)
		return
	}
	defer h.Close()
	fmt.Fprintf(c, "OK\n")
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(h, r)
		_ = h.CloseWrite()
		close(done)
	}()
	_, _ = io.Copy(c, h)
	_ = c.CloseWrite()
	<-done
}

func sink(c *vsock.Conn) {
	n, _ := io.Copy(io.Discard, c)
	fmt.Fprintf(c, "%d\n", n)
}

func source(c *vsock.Conn) {
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil {
		return
	}
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for n > 0 {
		k := min(n, int64(len(buf)))
		w, err := c.Write(buf[:k])
		if err != nil {
			return
		}
		n -= int64(w)
	}
	_ = c.CloseWrite()
	_, _ = io.Copy(io.Discard, c)
}

var _ net.Conn = (*vsock.Conn)(nil)

func resetDevice(c *vsock.Conn) {
	// The PCI function whose virtio child the vsock driver drives.
	devs, _ := filepath.Glob("/sys/bus/virtio/drivers/vmw_vsock_virtio_transport/virtio*")
	if len(devs) != 1 {
		fmt.Fprintf(c, "ERR %d vsock devices\n", len(devs))
		return
	}
	real, err := filepath.EvalSymlinks(devs[0])
	if err != nil {
		fmt.Fprintf(c, "ERR %v\n", err)
		return
	}
	pci := filepath.Base(filepath.Dir(real))
	fmt.Fprintf(c, "OK\n")
	c.Close()
	go func() {
		time.Sleep(200 * time.Millisecond)
		for _, op := range []string{"unbind", "bind"} {
			if err := os.WriteFile("/sys/bus/pci/drivers/virtio-pci/"+op, []byte(pci), 0o200); err != nil {
				fmt.Println("GUEST FAILED: reset", op, err)
				return
			}
		}
		fmt.Println("GUEST RESET DONE")
	}()
}
