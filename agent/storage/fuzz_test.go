package storage

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func FuzzParseOptions(f *testing.F) {
	f.Add("ro,nosuid,size=64m,rshared")
	f.Add("lowerdir=/a:/b,upperdir=/u,workdir=/w,io.katacontainers.fs-opt.overlay-rw")
	f.Add("trans=virtio,version=9p2000.L,cache=mmap,msize=8192,nodev")
	f.Add("rw,,defaults,bind,ro")
	f.Add("remount,size=2m")
	f.Fuzz(func(t *testing.T, s string) {
		opts := strings.Split(s, ",")
		mo, err := ParseOptions(opts)
		if err != nil {
			return
		}
		if mo.Flags&(unix.MS_REMOUNT|unix.MS_MOVE) != 0 {
			t.Fatalf("flags %#x act on an existing mount", mo.Flags)
		}
		data := mo.DataString()
		if len(data) > maxMountData || strings.ContainsRune(data, 0) {
			t.Fatalf("data %q escapes the limits", data)
		}
		for _, d := range mo.Data {
			if _, ok := flagOptions[d]; ok {
				t.Fatalf("flag %q leaked into data", d)
			}
			if strings.HasPrefix(d, kataOptionPrefix) {
				t.Fatalf("agent option %q leaked into data", d)
			}
		}
	})
}
