// Command vsockprobe runs inside a container of a pod VM and tries to reach
// vsock ports the way a hostile workload would: for every CID and port
// given, it connects, sends a ttrpc Health.Check request and waits briefly
// for an answer. One line per target:
//
//	CID:PORT refused <errno>   the connection was not made
//	CID:PORT closed            the peer closed it without a byte
//	CID:PORT silent            connected, and nothing came back
//	CID:PORT answered <n>      the peer sent n bytes
//
// The e2e tests build it statically and copy it into the container's
// root filesystem.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
)

func main() {
	cids := flag.String("cids", "1,2,3", "comma-separated context IDs")
	ports := flag.String("ports", "1024", "comma-separated ports")
	wait := flag.Duration("wait", 2*time.Second, "how long to wait for an answer")
	flag.Parse()
	for _, c := range strings.Split(*cids, ",") {
		cid, err := strconv.ParseUint(c, 10, 32)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad cid", c)
			os.Exit(2)
		}
		for _, p := range strings.Split(*ports, ",") {
			port, err := strconv.ParseUint(p, 10, 32)
			if err != nil {
				fmt.Fprintln(os.Stderr, "bad port", p)
				os.Exit(2)
			}
			fmt.Printf("%d:%d %s\n", cid, port, probe(uint32(cid), uint32(port), *wait))
		}
	}
}

func probe(cid, port uint32, wait time.Duration) string {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "refused socket:" + errName(err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: port}); err != nil {
		return "refused " + errName(err)
	}
	// A ttrpc Health.Check: an agent API answers it, a shell echoes it, a
	// log stream sends log lines regardless.
	_, _ = unix.Write(fd, checkFrame())
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, int(wait.Milliseconds()))
	if err != nil {
		return "refused poll:" + errName(err)
	}
	if n == 0 {
		return "silent"
	}
	buf := make([]byte, 4096)
	got, err := unix.Read(fd, buf)
	if err != nil || got <= 0 {
		return "closed"
	}
	return "answered " + strconv.Itoa(got)
}

func errName(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// checkFrame is one ttrpc request frame: a 10-byte header (length, stream
// id, type 1 = request, flags) and a ttrpc Request naming grpc.Health/Check
// with an empty CheckRequest.
func checkFrame() []byte {
	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendString(req, "grpc.Health")
	req = protowire.AppendTag(req, 2, protowire.BytesType)
	req = protowire.AppendString(req, "Check")
	req = protowire.AppendTag(req, 3, protowire.BytesType)
	req = protowire.AppendBytes(req, nil)
	hdr := make([]byte, 10)
	binary.BigEndian.PutUint32(hdr[0:], uint32(len(req)))
	binary.BigEndian.PutUint32(hdr[4:], 1)
	hdr[8] = 1
	return append(hdr, req...)
}
