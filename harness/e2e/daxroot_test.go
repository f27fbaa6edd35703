package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wren-vm/wren/harness/bench"
	"github.com/wren-vm/wren/harness/vm"
)

// TestPodVMDAXRoot runs the TestPodVM cases on make kernel's kernel booted
// from a DAX root image (wrenctl vm up --dax-root, Kata's image mode)
// instead of an initramfs: the root is the read-only nvdimm, and the
// agent's pages must stay out of guest RAM.
func TestPodVMDAXRoot(t *testing.T) {
	requireVM(t)
	t.Parallel()
	v, art := startPodVM(t, vm.ArtifactOptions{Kernel: vm.KernelWren, RootImage: true}, false)
	if art.Initrd != "" || art.RootImage == "" {
		t.Fatalf("artifacts for a DAX root: initramfs %q, root image %q", art.Initrd, art.RootImage)
	}
	// Rounded to 2 MiB, not to Kata's 128 (each 128 MiB costs the guest 2 MiB
	// of struct pages).
	st, err := os.Stat(art.RootImage)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size()%(2<<20) != 0 || st.Size() >= 128<<20 {
		t.Errorf("root image %s is %d bytes, want a multiple of 2 MiB under 128 MiB", art.RootImage, st.Size())
	}
	runPodCasesFor(t, v, art.KernelVersion, podCases{
		noModules: true, daxRootAgent: filepath.Join(binaries(t), "wren-agent"),
		skip: map[string]string{"DAXImage": "the root image is the guest's nvdimm, and a second one beside it is not supported; DAXRoot checks DAX"},
	})
}

// testDAXRoot: the agent runs from the nvdimm's partition, mounted
// read-only with DAX (its own "guest root" record: DAX is only had from a
// pmem device), and tmpfs does not hold
// it (guest Shmem), as it would with an initramfs.
func (p *pod) testDAXRoot(t *testing.T, agent string) {
	var root map[string]any
	for _, rec := range logRecords(vm.Tail(p.vm.AgentLog, 100000)) {
		if rec["msg"] == "guest root" {
			root = rec
		}
	}
	if root == nil {
		t.Fatalf("the agent logged no guest root record:\n%s", vm.Tail(p.vm.AgentLog, 20))
	}
	opts := fmt.Sprint(root["options"]) + "," + fmt.Sprint(root["super_options"])
	if root["fstype"] != "ext4" || !hasOption(opts, "ro") || !hasOption(opts, "dax=always") {
		t.Errorf("guest root %v, want ext4, read-only, with dax=always", root)
	}

	st, err := os.Stat(agent)
	if err != nil {
		t.Fatal(err)
	}
	c := p.newContainer(t, "meminfo", "cat", "/proc/meminfo")
	out := p.run(t, c, nil)
	if out.code != 0 {
		t.Fatalf("cat /proc/meminfo: status %d, stderr %q", out.code, out.stderr)
	}
	kb := meminfo(t, out.stdout)
	t.Logf("agent %d KiB; guest Shmem %d KiB, Cached %d KiB, used (MemTotal - MemAvailable) %d KiB",
		st.Size()>>10, kb["Shmem"], kb["Cached"], kb["MemTotal"]-kb["MemAvailable"])
	if kb["Shmem"]*1024 >= st.Size()/2 {
		t.Errorf("guest Shmem %d KiB, not under half the agent's %d KiB: the agent is held in tmpfs", kb["Shmem"], st.Size()>>10)
	}
}

func hasOption(list, opt string) bool {
	for _, o := range strings.Split(list, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

// meminfo parses /proc/meminfo into KiB per field.
func meminfo(t *testing.T, text string) map[string]int64 {
	t.Helper()
	kb, err := bench.ParseKeyValues([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"MemTotal", "MemAvailable", "Shmem", "Cached"} {
		if _, ok := kb[k]; !ok {
			t.Fatalf("no %s in /proc/meminfo:\n%s", k, text)
		}
	}
	return kb
}
