package memagent

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// stall measures, as Kata's mem-agent does, the share of time tasks were
// stalled on memory or IO between two readings: the "some" totals of a
// memory and an IO pressure file (PSI), in microseconds, summed. The two
// together, because reclaim and compaction that go too far show up as
// refaults, which are IO, as much as memory stalls.
type stall struct {
	files [2]string // memory.pressure and io.pressure, or /proc/pressure/{memory,io}
	last  uint64
	at    time.Time
	ok    bool // last and at hold a reading
}

func newStall(memory, io string) *stall {
	return &stall{files: [2]string{memory, io}}
}

// percent returns the stall time since the previous reading as a share
// of the time that passed, and makes now the start of the next interval.
// The first reading has nothing to compare with and returns 0, as Kata's
// does; so does a reading whose totals went back (the files were
// replaced, as a cgroup of the same name is).
func (s *stall) percent(now time.Time) (uint64, error) {
	var total uint64
	for _, f := range s.files {
		n, err := someTotal(f)
		if err != nil {
			s.ok = false
			return 0, err
		}
		total += n
	}
	var pct uint64
	if s.ok && total > s.last {
		if us := now.Sub(s.at).Microseconds(); us > 0 {
			pct = (total - s.last) * 100 / uint64(us)
		}
	}
	s.last, s.at, s.ok = total, now, true
	return pct, nil
}

// someTotal reads the total of the "some" line of a PSI file:
//
//	some avg10=0.00 avg60=0.00 avg300=0.00 total=37820
//	full avg10=0.00 avg60=0.00 avg300=0.00 total=28881
func someTotal(name string) (uint64, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := bytes.Fields(sc.Bytes())
		if len(fields) == 0 || string(fields[0]) != "some" {
			continue
		}
		for _, f := range fields[1:] {
			if v, ok := bytes.CutPrefix(f, []byte("total=")); ok {
				n, err := strconv.ParseUint(string(v), 10, 64)
				if err != nil {
					return 0, fmt.Errorf("%s: bad total %q", name, v)
				}
				return n, nil
			}
		}
	}
	return 0, fmt.Errorf("%s: no \"some ... total=\" line", name)
}
