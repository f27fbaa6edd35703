package bench

import (
	"os"
	"testing"
)

const statusSample = `Name:	wren-agent
Umask:	0022
State:	S (sleeping)
Tgid:	4242
Uid:	0	0	0	0
VmRSS:	    7508 kB
RssAnon:	    1096 kB
RssFile:	    6412 kB
RssShmem:	       0 kB
Threads:	5
Cpus_allowed_list:	0-1
`

const rollupSample = `00400000-7ffd2b1d6000 ---p 00000000 00:00 0                          [rollup]
Rss:                7508 kB
Pss:                7502 kB
Pss_Dirty:          1100 kB
Pss_Anon:           1090 kB
Pss_File:           6412 kB
Pss_Shmem:             0 kB
`

func TestParseKeyValues(t *testing.T) {
	st, err := ParseKeyValues([]byte(statusSample))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"VmRSS": 7508, "RssAnon": 1096, "RssFile": 6412, "RssShmem": 0, "Threads": 5, "Umask": 22, "Tgid": 4242}
	for k, v := range want {
		if st[k] != v {
			t.Errorf("%s = %d, want %d", k, st[k], v)
		}
	}
	for _, k := range []string{"Name", "State", "Uid", "Cpus_allowed_list"} {
		if _, ok := st[k]; ok {
			t.Errorf("%s parsed as a number", k)
		}
	}
	sm, err := ParseKeyValues([]byte(rollupSample))
	if err != nil {
		t.Fatal(err)
	}
	if sm["Pss"] != 7502 || sm["Pss_Anon"] != 1090 || sm["Pss_File"] != 6412 || len(sm) != 6 {
		t.Errorf("rollup = %v", sm)
	}
}

func TestReadProcSelf(t *testing.T) {
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS <= 0 || s.RssAnon <= 0 || s.PSS <= 0 || s.Threads < 1 || s.FDs < 3 {
		t.Fatalf("implausible sample of this process: %+v", s)
	}
	if s.RssAnon+s.RssFile > s.RSS {
		t.Errorf("RssAnon %d + RssFile %d > VmRSS %d", s.RssAnon, s.RssFile, s.RSS)
	}
}

func TestReadProcGone(t *testing.T) {
	if _, err := ReadProc(1 << 30); err == nil {
		t.Fatal("ReadProc of a pid that cannot exist succeeded")
	}
}
