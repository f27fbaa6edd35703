// Package metrics renders GetMetrics' Prometheus text exposition: the
// agent process (kata_agent_*) and the guest (kata_guest_*), read from
// /proc at scrape time, with the names Kata's agent uses.
package metrics

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// clockTicks is USER_HZ, which is 100 on every Linux ABI the agent runs on.
const clockTicks = 100

// Collector renders metrics; it is safe for concurrent scrapes.
type Collector struct {
	proc    string
	scrapes atomic.Uint64
}

// New returns a Collector reading procRoot ("" means /proc).
func New(procRoot string) *Collector {
	if procRoot == "" {
		procRoot = "/proc"
	}
	return &Collector{proc: procRoot}
}

// family accumulates the samples of one metric.
type family struct {
	name, help, typ string
	samples         []sample
}

type sample struct {
	labels [][2]string
	value  float64
}

func (f *family) add(v float64, labels ...string) {
	s := sample{value: v}
	for i := 0; i+1 < len(labels); i += 2 {
		s.labels = append(s.labels, [2]string{labels[i], labels[i+1]})
	}
	f.samples = append(f.samples, s)
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func (f *family) write(b *bytes.Buffer) {
	if len(f.samples) == 0 {
		return
	}
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", f.name, f.help, f.name, f.typ)
	for _, s := range f.samples {
		b.WriteString(f.name)
		if len(s.labels) > 0 {
			b.WriteByte('{')
			for i, l := range s.labels {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(b, `%s="%s"`, l[0], labelEscaper.Replace(l[1]))
			}
			b.WriteByte('}')
		}
		b.WriteByte(' ')
		b.WriteString(formatValue(s.value))
		b.WriteByte('\n')
	}
}

func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// Gather renders every metric. Sources that cannot be read are left out
// rather than failing the scrape.
func (c *Collector) Gather() string {
	n := c.scrapes.Add(1)
	var fams []*family
	scrape := &family{name: "kata_agent_scrape_count", help: "Metrics scrape count", typ: "counter"}
	scrape.add(float64(n))
	fams = append(fams, scrape)
	fams = append(fams, c.agentProcess()...)
	fams = append(fams, c.guest()...)
	var b bytes.Buffer
	for _, f := range fams {
		f.write(&b)
	}
	return b.String()
}

func (c *Collector) read(rel string) []byte {
	b, err := os.ReadFile(filepath.Join(c.proc, rel))
	if err != nil {
		return nil
	}
	return b
}

func (c *Collector) agentProcess() []*family {
	var fams []*family
	// /proc/self/stat: the command may contain spaces and parentheses, so
	// fields are counted from the last ')'.
	if st := string(c.read("self/stat")); st != "" {
		if i := strings.LastIndexByte(st, ')'); i > 0 {
			f := strings.Fields(st[i+1:]) // f[0] is field 3 (state)
			field := func(n int) float64 {
				if n-3 < len(f) && n-3 >= 0 {
					v, _ := strconv.ParseFloat(f[n-3], 64)
					return v
				}
				return 0
			}
			one := func(name, help string, v float64) {
				fam := &family{name: name, help: help, typ: "gauge"}
				fam.add(v)
				fams = append(fams, fam)
			}
			one("kata_agent_threads", "Agent process threads", field(20))
			// Not in Kata's set: a leak of goroutines is the Go agent's
			// typical slow death, and nothing else outside can see it.
			one("kata_agent_goroutines", "Agent goroutines (Go runtime)", float64(runtime.NumGoroutine()))
			one("kata_agent_total_time", "Agent process total time (seconds)", (field(14)+field(15))/clockTicks)
			one("kata_agent_total_vm", "Agent process total virtual memory (bytes)", field(23))
			one("kata_agent_total_rss", "Agent process total resident set size (bytes)", field(24)*float64(os.Getpagesize()))
			ps := &family{name: "kata_agent_proc_stat", help: "Agent process /proc/self/stat fields", typ: "gauge"}
			for n, item := range map[int]string{10: "minflt", 12: "majflt", 14: "utime", 15: "stime", 16: "cutime", 17: "cstime"} {
				ps.add(field(n), "item", item)
			}
			sortSamples(ps)
			fams = append(fams, ps)
		}
	}
	status := &family{name: "kata_agent_proc_status", help: "Agent process /proc/self/status values (kB fields in bytes)", typ: "gauge"}
	eachLine(c.read("self/status"), func(line string) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return
		}
		fs := strings.Fields(v)
		if len(fs) == 0 || len(fs) > 2 {
			return
		}
		n, err := strconv.ParseFloat(fs[0], 64)
		if err != nil {
			return
		}
		if len(fs) == 2 && fs[1] == "kB" {
			n *= 1024
		}
		status.add(n, "item", k)
	})
	fams = append(fams, status)
	fams = append(fams, keyValueFamily(c.read("self/io"), ":", "kata_agent_io_stat", "Agent process /proc/self/io", 1))
	fams = append(fams, goMemory())
	return fams
}

// goMemoryClasses lists the runtime/metrics names under /memory/classes/
// that do not overlap (the leaves of the tree): together they are all the
// memory the Go runtime has mapped, which is how RssAnon splits into heap,
// stacks and runtime metadata (docs/perf/footprint.md). Not in Kata's set.
// Built at the first scrape, not at init, so that an agent nobody scrapes
// does not carry it.
var goMemoryClasses = sync.OnceValue(func() []string {
	var out []string
	for _, d := range metrics.All() {
		name, ok := strings.CutPrefix(d.Name, "/memory/classes/")
		if !ok || d.Kind != metrics.KindUint64 || name == "total:bytes" {
			continue
		}
		out = append(out, d.Name)
	}
	return out
})

func goMemory() *family {
	fam := &family{name: "kata_agent_go_memory_bytes", help: "Agent Go runtime memory by class (runtime/metrics /memory/classes)", typ: "gauge"}
	names := goMemoryClasses()
	samples := make([]metrics.Sample, len(names))
	for i, n := range names {
		samples[i].Name = n
	}
	metrics.Read(samples)
	for _, s := range samples {
		if s.Value.Kind() != metrics.KindUint64 {
			continue
		}
		class := strings.TrimSuffix(strings.TrimPrefix(s.Name, "/memory/classes/"), ":bytes")
		fam.add(float64(s.Value.Uint64()), "class", class)
	}
	return fam
}

func (c *Collector) guest() []*family {
	var fams []*family
	if f := strings.Fields(string(c.read("loadavg"))); len(f) >= 4 {
		load := &family{name: "kata_guest_load", help: "Guest system load", typ: "gauge"}
		for i, item := range []string{"load1", "load5", "load15"} {
			v, _ := strconv.ParseFloat(f[i], 64)
			load.add(v, "item", item)
		}
		fams = append(fams, load)
		if run, total, ok := strings.Cut(f[3], "/"); ok {
			tasks := &family{name: "kata_guest_tasks", help: "Guest system tasks", typ: "gauge"}
			r, _ := strconv.ParseFloat(run, 64)
			tt, _ := strconv.ParseFloat(total, 64)
			tasks.add(r, "item", "running")
			tasks.add(tt, "item", "total")
			fams = append(fams, tasks)
		}
	}
	cpu := &family{name: "kata_guest_cpu_time", help: "Guest CPU time (seconds)", typ: "counter"}
	items := []string{"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice"}
	eachLine(c.read("stat"), func(line string) {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasPrefix(f[0], "cpu") {
			return
		}
		for i, v := range f[1:] {
			if i >= len(items) {
				break
			}
			n, _ := strconv.ParseFloat(v, 64)
			cpu.add(n/clockTicks, "cpu", f[0], "item", items[i])
		}
	})
	fams = append(fams, cpu)
	fams = append(fams, keyValueFamily(c.read("vmstat"), " ", "kata_guest_vm_stat", "Guest /proc/vmstat", 1))
	fams = append(fams, keyValueFamily(c.read("meminfo"), ":", "kata_guest_meminfo", "Guest /proc/meminfo (bytes where the kernel reports kB)", 1024))

	netdev := &family{name: "kata_guest_netdev_stat", help: "Guest network device statistics", typ: "counter"}
	netItems := []string{"recv_bytes", "recv_packets", "recv_errs", "recv_drop", "recv_fifo", "recv_frame", "recv_compressed", "recv_multicast",
		"sent_bytes", "sent_packets", "sent_errs", "sent_drop", "sent_fifo", "sent_colls", "sent_carrier", "sent_compressed"}
	eachLine(c.read("net/dev"), func(line string) {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			return
		}
		f := strings.Fields(rest)
		for i, v := range f {
			if i >= len(netItems) {
				break
			}
			n, _ := strconv.ParseFloat(v, 64)
			netdev.add(n, "interface", strings.TrimSpace(name), "item", netItems[i])
		}
	})
	fams = append(fams, netdev)

	disk := &family{name: "kata_guest_diskstat", help: "Guest disk statistics", typ: "counter"}
	diskItems := []string{"reads", "reads_merged", "sectors_read", "time_reading", "writes", "writes_merged", "sectors_written", "time_writing",
		"in_progress", "time_in_progress", "weighted_time_in_progress", "discards", "discards_merged", "sectors_discarded", "time_discarding", "flushes", "time_flushing"}
	eachLine(c.read("diskstats"), func(line string) {
		f := strings.Fields(line)
		if len(f) < 4 || strings.HasPrefix(f[2], "loop") || strings.HasPrefix(f[2], "ram") {
			return
		}
		for i, v := range f[3:] {
			if i >= len(diskItems) {
				break
			}
			n, _ := strconv.ParseFloat(v, 64)
			disk.add(n, "disk", f[2], "item", diskItems[i])
		}
	})
	fams = append(fams, disk)
	return fams
}

// keyValueFamily turns "key<sep>value [kB]" lines into one family.
func keyValueFamily(b []byte, sep, name, help string, kbScale float64) *family {
	fam := &family{name: name, help: help, typ: "gauge"}
	eachLine(b, func(line string) {
		k, v, ok := strings.Cut(line, sep)
		if !ok {
			return
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			return
		}
		n, err := strconv.ParseFloat(fs[0], 64)
		if err != nil {
			return
		}
		if len(fs) > 1 && fs[1] == "kB" {
			n *= kbScale
		}
		fam.add(n, "item", strings.TrimSpace(k))
	})
	return fam
}

func eachLine(b []byte, f func(string)) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f(sc.Text())
	}
}

func sortSamples(f *family) {
	sort.Slice(f.samples, func(i, j int) bool { return f.samples[i].labels[0][1] < f.samples[j].labels[0][1] })
}
