package metrics

import (
	"bytes"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

var sampleLine = regexp.MustCompile(`^([a-z_]+)(\{([a-z_]+="(?:[^"\\]|\\.)*",?)*\})? (\S+)$`)

// parse checks the exposition format and returns value by series.
func parse(t *testing.T, text string) map[string]float64 {
	t.Helper()
	typed := map[string]bool{}
	out := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(line, "# TYPE ") {
			f := strings.Fields(line)
			if len(f) != 4 || (f[3] != "gauge" && f[3] != "counter") {
				t.Fatalf("bad TYPE line %q", line)
			}
			typed[f[2]] = true
			continue
		}
		if strings.HasPrefix(line, "# HELP ") {
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("malformed sample %q", line)
		}
		if !typed[m[1]] {
			t.Fatalf("sample %q before its TYPE", line)
		}
		v, err := strconv.ParseFloat(m[4], 64)
		if err != nil {
			t.Fatalf("value in %q: %v", line, err)
		}
		series := m[1] + m[2]
		if _, dup := out[series]; dup {
			t.Fatalf("duplicate series %s", series)
		}
		out[series] = v
	}
	return out
}

func TestGatherFromThisProcess(t *testing.T) {
	c := New("")
	first := parse(t, c.Gather())
	second := parse(t, c.Gather())
	if first["kata_agent_scrape_count"] != 1 || second["kata_agent_scrape_count"] != 2 {
		t.Fatalf("scrape counts %v, %v", first["kata_agent_scrape_count"], second["kata_agent_scrape_count"])
	}
	if second["kata_agent_threads"] < 1 || second["kata_agent_total_rss"] <= 0 {
		t.Fatalf("agent process metrics: threads %v rss %v", second["kata_agent_threads"], second["kata_agent_total_rss"])
	}
	// Goroutines are counted live: 50 more parked ones show up.
	release := make(chan struct{})
	for range 50 {
		go func() { <-release }()
	}
	third := parse(t, c.Gather())
	close(release)
	if third["kata_agent_goroutines"] < second["kata_agent_goroutines"]+50 {
		t.Fatalf("goroutines %v then %v, want 50 more", second["kata_agent_goroutines"], third["kata_agent_goroutines"])
	}
	// MemTotal never changes: it must match /proc/meminfo, in bytes.
	b, _ := os.ReadFile("/proc/meminfo")
	var kb float64
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ = strconv.ParseFloat(f[1], 64)
		}
	}
	if got := second[`kata_guest_meminfo{item="MemTotal"}`]; got != kb*1024 {
		t.Fatalf("MemTotal %v, want %v", got, kb*1024)
	}
	for _, series := range []string{`kata_guest_load{item="load1"}`, `kata_guest_cpu_time{cpu="cpu",item="user"}`, `kata_guest_tasks{item="total"}`,
		`kata_guest_netdev_stat{interface="lo",item="recv_bytes"}`, `kata_agent_proc_status{item="VmRSS"}`, `kata_agent_io_stat{item="rchar"}`} {
		if _, ok := second[series]; !ok {
			t.Errorf("series %s missing", series)
		}
	}
}

func TestGatherSurvivesMissingProc(t *testing.T) {
	c := New(t.TempDir())
	got := parse(t, c.Gather())
	// Only what does not come from /proc is left: the scrape count and
	// the Go runtime's own memory classes.
	for series := range got {
		if series != "kata_agent_scrape_count" && !strings.HasPrefix(series, "kata_agent_go_memory_bytes{") {
			t.Errorf("with no /proc: unexpected series %s", series)
		}
	}
	if got["kata_agent_scrape_count"] != 1 {
		t.Fatalf("with no /proc: %v", got)
	}
}

func TestLabelEscaping(t *testing.T) {
	f := &family{name: "x", help: "h", typ: "gauge"}
	f.add(1, "interface", "we\"ird\\na\nme")
	var b bytes.Buffer
	f.write(&b)
	if !strings.Contains(b.String(), `x{interface="we\"ird\\na\nme"} 1`) {
		t.Fatalf("escaping: %q", b.String())
	}
}

func TestGoMemoryClasses(t *testing.T) {
	c := New("")
	// Collect first, so that no garbage in "before" can be collected
	// between the two scrapes and hide the growth.
	runtime.GC()
	before := parse(t, c.Gather())
	for _, class := range []string{"heap/objects", "heap/stacks", "metadata/other", "os-stacks"} {
		if _, ok := before[`kata_agent_go_memory_bytes{class="`+class+`"}`]; !ok {
			t.Fatalf("no Go memory class %q in the scrape", class)
		}
	}
	// 8 MiB held across the second scrape must show in heap/objects.
	held := make([][]byte, 8)
	for i := range held {
		held[i] = make([]byte, 1<<20)
	}
	after := parse(t, c.Gather())
	grew := after[`kata_agent_go_memory_bytes{class="heap/objects"}`] - before[`kata_agent_go_memory_bytes{class="heap/objects"}`]
	if grew < 8<<20 {
		t.Fatalf("heap/objects grew by %.0f bytes while 8 MiB were held", grew)
	}
	var total float64
	for series, v := range after {
		if strings.HasPrefix(series, "kata_agent_go_memory_bytes{") {
			total += v
		}
	}
	// The classes are the leaves of runtime/metrics' tree: their sum is all
	// the memory the runtime has mapped, which includes the held 8 MiB.
	if total < 8<<20 {
		t.Fatalf("Go memory classes sum to %.0f bytes", total)
	}
	runtime.KeepAlive(held)
}
