// Package uevent listens for kernel uevents on NETLINK_KOBJECT_UEVENT (no
// udevd is needed), remembers every device it has seen, lets callers wait for
// a device to appear, and onlines hot-added memory blocks.
package uevent

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Actions the kernel reports.
const (
	ActionAdd    = "add"
	ActionRemove = "remove"
	ActionChange = "change"
	ActionBind   = "bind"
	ActionOnline = "online"
)

// Event is one parsed kernel uevent.
type Event struct {
	Action    string
	DevPath   string // sysfs path without the /sys prefix, e.g. /devices/virtual/block/loop0
	DevName   string // node name below /dev, e.g. vda or vfio/3
	DevType   string
	Subsystem string
	Driver    string
	Interface string // INTERFACE of net devices
	SeqNum    uint64
	Major     int64 // -1 when the event has no MAJOR
	Minor     int64 // -1 when the event has no MINOR
	Env       map[string]string
}

// maxEventSize bounds a uevent message; the kernel's own limit is
// UEVENT_BUFFER_SIZE (2048) plus the header, udev's is 8 KiB.
const maxEventSize = 8192

// Parse decodes a kernel uevent: "ACTION@DEVPATH\0KEY=VALUE\0...". Messages
// from udevd's "libudev" group carry a binary header and are rejected.
func Parse(b []byte) (Event, error) {
	ev := Event{Major: -1, Minor: -1}
	if len(b) == 0 {
		return ev, errors.New("empty uevent")
	}
	if len(b) > maxEventSize {
		return ev, fmt.Errorf("uevent of %d bytes exceeds %d", len(b), maxEventSize)
	}
	if bytes.HasPrefix(b, []byte("libudev\x00")) {
		return ev, errors.New("udev-formatted message, not a kernel uevent")
	}
	fields := bytes.Split(b, []byte{0})
	header := string(fields[0])
	at := strings.IndexByte(header, '@')
	if at <= 0 || at == len(header)-1 {
		return ev, fmt.Errorf("uevent header %q is not ACTION@DEVPATH", truncate(header))
	}
	ev.Env = make(map[string]string, len(fields))
	for _, f := range fields[1:] {
		if len(f) == 0 {
			continue
		}
		k, v, ok := strings.Cut(string(f), "=")
		if !ok || k == "" {
			return ev, fmt.Errorf("uevent field %q is not KEY=VALUE", truncate(string(f)))
		}
		ev.Env[k] = v
	}
	ev.Action = ev.Env["ACTION"]
	ev.DevPath = ev.Env["DEVPATH"]
	if ev.Action == "" {
		ev.Action = header[:at]
	}
	if ev.DevPath == "" {
		ev.DevPath = header[at+1:]
	}
	if ev.Action != header[:at] || ev.DevPath != header[at+1:] {
		return ev, fmt.Errorf("uevent header %q disagrees with ACTION=%q DEVPATH=%q", truncate(header), truncate(ev.Action), truncate(ev.DevPath))
	}
	ev.DevName = ev.Env["DEVNAME"]
	ev.DevType = ev.Env["DEVTYPE"]
	ev.Subsystem = ev.Env["SUBSYSTEM"]
	ev.Driver = ev.Env["DRIVER"]
	ev.Interface = ev.Env["INTERFACE"]
	if s, ok := ev.Env["SEQNUM"]; ok {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return ev, fmt.Errorf("uevent SEQNUM %q: %w", truncate(s), err)
		}
		ev.SeqNum = n
	}
	var err error
	if ev.Major, err = parseDevNum(ev.Env, "MAJOR"); err != nil {
		return ev, err
	}
	if ev.Minor, err = parseDevNum(ev.Env, "MINOR"); err != nil {
		return ev, err
	}
	return ev, nil
}

func parseDevNum(env map[string]string, key string) (int64, error) {
	s, ok := env[key]
	if !ok {
		return -1, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return -1, fmt.Errorf("uevent %s %q: %w", key, truncate(s), err)
	}
	return int64(n), nil
}

// parseUeventFile reads the KEY=VALUE lines of a sysfs "uevent" attribute,
// which is how a device present before the listener started is described.
func parseUeventFile(devPath string, b []byte) Event {
	ev := Event{Action: ActionAdd, DevPath: devPath, Major: -1, Minor: -1, Env: map[string]string{}}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k != "" {
			ev.Env[k] = v
		}
	}
	ev.DevName = ev.Env["DEVNAME"]
	ev.DevType = ev.Env["DEVTYPE"]
	ev.Driver = ev.Env["DRIVER"]
	ev.Interface = ev.Env["INTERFACE"]
	ev.Major, _ = parseDevNum(ev.Env, "MAJOR")
	ev.Minor, _ = parseDevNum(ev.Env, "MINOR")
	return ev
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
