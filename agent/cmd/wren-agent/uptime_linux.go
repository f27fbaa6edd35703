package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, which is 100 on every Linux architecture Wren
// targets; /proc reports process start times in these units.
const clockTicks = 100

// sinceProcessStart measures from the kernel's record of when this process
// started, so the figure includes the Go runtime's own start-up.
func sinceProcessStart() (time.Duration, error) {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses; fields resume
	// after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/self/stat")
	}
	fields := strings.Fields(string(stat[i+1:]))
	const startTimeField = 22 - 3 // field 22 of stat(5), counted after pid and comm
	if len(fields) <= startTimeField {
		return 0, fmt.Errorf("malformed /proc/self/stat")
	}
	startTicks, err := strconv.ParseUint(fields[startTimeField], 10, 64)
	if err != nil {
		return 0, err
	}
	up, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	upFields := strings.Fields(string(up))
	if len(upFields) == 0 {
		return 0, fmt.Errorf("malformed /proc/uptime")
	}
	uptime, err := strconv.ParseFloat(upFields[0], 64)
	if err != nil {
		return 0, err
	}
	started := time.Duration(startTicks) * time.Second / clockTicks
	return time.Duration(uptime*float64(time.Second)) - started, nil
}
