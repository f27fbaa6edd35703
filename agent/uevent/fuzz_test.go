package uevent

import "testing"

func FuzzParse(f *testing.F) {
	for _, b := range [][]byte{capturedLoopAdd, capturedBdiAdd, capturedLoopChange, capturedLoopRemove,
		[]byte("add@/devices/system/memory/memory3\x00ACTION=add\x00SUBSYSTEM=memory\x00")} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := Parse(b)
		if err != nil {
			return
		}
		if ev.Action == "" || ev.DevPath == "" {
			t.Fatalf("accepted event without action or devpath: %+v", ev)
		}
		if (ev.Major < -1) || (ev.Minor < -1) {
			t.Fatalf("negative device number %+v", ev)
		}
	})
}
