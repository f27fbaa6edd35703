// Package vhostuser is the backend (device) side of the vhost-user protocol,
// as QEMU drives it: it reads frontend messages with their file descriptors,
// keeps the negotiated features, the guest memory table and the vring set-up,
// starts and stops virtqueues and hands them to a Device, and answers the
// GET_* messages and REPLY_ACK requests.
package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Request codes (frontend → backend) used by vhost-user-vsock.
const (
	reqGetFeatures         = 1
	reqSetFeatures         = 2
	reqSetOwner            = 3
	reqResetOwner          = 4
	reqSetMemTable         = 5
	reqSetLogBase          = 6
	reqSetLogFD            = 7
	reqSetVringNum         = 8
	reqSetVringAddr        = 9
	reqSetVringBase        = 10
	reqGetVringBase        = 11
	reqSetVringKick        = 12
	reqSetVringCall        = 13
	reqSetVringErr         = 14
	reqGetProtocolFeatures = 15
	reqSetProtocolFeatures = 16
	reqGetQueueNum         = 17
	reqSetVringEnable      = 18
	reqSetSlaveReqFD       = 21
	reqGetConfig           = 24
	reqSetConfig           = 25
)

// Header flags.
const (
	flagVersion   = 0x1
	flagReply     = 0x4
	flagNeedReply = 0x8
)

// Feature bits.
const (
	FeatureVersion1         = 1 << 32
	FeatureProtocolFeatures = 1 << 30
	FeatureEventIdx         = 1 << 29

	ProtocolFeatureMQ       = 1 << 0
	ProtocolFeatureReplyAck = 1 << 3
	ProtocolFeatureConfig   = 1 << 9
)

const (
	headerLen = 12
	// maxPayload bounds what we read for one message; the largest message
	// vsock sees is SET_MEM_TABLE (8+32*8 bytes) or GET_CONFIG (12+256).
	maxPayload = 4096
	maxFDs     = 8
	vringNoFD  = 0x100
	vringIdx   = 0xff
)

type message struct {
	request uint32
	flags   uint32
	payload []byte
	files   []*os.File
}

func (m *message) needReply() bool { return m.flags&flagNeedReply != 0 }

func (m *message) closeFiles() {
	for _, f := range m.files {
		f.Close()
	}
	m.files = nil
}

// takeFile removes and returns the single attached fd, or nil.
func (m *message) takeFile() *os.File {
	if len(m.files) == 0 {
		return nil
	}
	f := m.files[0]
	m.files = m.files[1:]
	return f
}

func (m *message) u64() (uint64, error) {
	if len(m.payload) != 8 {
		return 0, fmt.Errorf("request %d: payload of %d bytes, want 8", m.request, len(m.payload))
	}
	return binary.LittleEndian.Uint64(m.payload), nil
}

// vringState is struct vhost_vring_state.
func (m *message) vringState() (index, num uint32, err error) {
	if len(m.payload) != 8 {
		return 0, 0, fmt.Errorf("request %d: payload of %d bytes, want 8", m.request, len(m.payload))
	}
	return binary.LittleEndian.Uint32(m.payload), binary.LittleEndian.Uint32(m.payload[4:]), nil
}

var errTooManyFDs = errors.New("too many file descriptors attached")

// readMessage reads one message and any fds sent with it (received
// close-on-exec by the Go runtime).
func readMessage(c *net.UnixConn) (*message, error) {
	var hdr [headerLen]byte
	m := &message{}
	if err := readFull(c, hdr[:], m); err != nil {
		m.closeFiles()
		return nil, err
	}
	m.request = binary.LittleEndian.Uint32(hdr[0:])
	m.flags = binary.LittleEndian.Uint32(hdr[4:])
	size := binary.LittleEndian.Uint32(hdr[8:])
	if m.flags&0x3 != flagVersion {
		m.closeFiles()
		return nil, fmt.Errorf("request %d: unsupported version in flags %#x", m.request, m.flags)
	}
	if size > maxPayload {
		m.closeFiles()
		return nil, fmt.Errorf("request %d: payload of %d bytes is too large", m.request, size)
	}
	m.payload = make([]byte, size)
	if err := readFull(c, m.payload, m); err != nil {
		m.closeFiles()
		return nil, err
	}
	return m, nil
}

func readFull(c *net.UnixConn, buf []byte, m *message) error {
	oob := make([]byte, unix.CmsgSpace(4*maxFDs))
	for got := 0; got < len(buf); {
		n, oobn, _, _, err := c.ReadMsgUnix(buf[got:], oob)
		if oobn > 0 {
			if ferr := collectFDs(oob[:oobn], m); ferr != nil && err == nil {
				err = ferr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && got > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if n == 0 {
			return io.EOF
		}
		got += n
	}
	return nil
}

func collectFDs(oob []byte, m *message) error {
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("parse control message: %w", err)
	}
	var tooMany bool
	for _, cm := range cmsgs {
		fds, err := unix.ParseUnixRights(&cm)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if len(m.files) >= maxFDs {
				unix.Close(fd)
				tooMany = true
				continue
			}
			// Non-blocking so that os.File parks readers in the runtime
			// poller and Close wakes them (kick eventfds).
			_ = unix.SetNonblock(fd, true)
			m.files = append(m.files, os.NewFile(uintptr(fd), "vhost-user-fd"))
		}
	}
	if tooMany {
		return errTooManyFDs
	}
	return nil
}

func writeReply(c *net.UnixConn, request uint32, payload []byte) error {
	buf := make([]byte, headerLen+len(payload))
	binary.LittleEndian.PutUint32(buf[0:], request)
	binary.LittleEndian.PutUint32(buf[4:], flagVersion|flagReply)
	binary.LittleEndian.PutUint32(buf[8:], uint32(len(payload)))
	copy(buf[headerLen:], payload)
	_, err := c.Write(buf)
	return err
}

func u64Bytes(v uint64) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, v)
	return b
}
