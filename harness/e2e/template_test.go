package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/harness/kata"
	"github.com/wren-vm/wren/harness/vm"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// podTemplate is one template of the TestPodVM machine, made by the first
// test that needs it and shared by the template tests of this package
// (making one boots a TCG guest).
type podTemplate struct {
	once sync.Once
	dir  string
	bins string
	art  *vm.Artifacts
	img  string
	err  error
}

var sharedTemplate podTemplate

// template returns the shared template, making it on first use in a
// directory that outlives the test that made it (TestMain removes it).
func (pt *podTemplate) get(t *testing.T) *podTemplate {
	t.Helper()
	requireVM(t)
	pt.once.Do(func() {
		pt.bins = binaries(t)
		work, err := templateWorkDir()
		if err != nil {
			pt.err = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		pt.art, pt.err = vm.BuildArtifacts(ctx, filepath.Join(pt.bins, "wren-agent"), filepath.Join(work, "boot"), false, nil)
		if pt.err != nil {
			return
		}
		pt.img = filepath.Join(work, "dax.img")
		buildDAXImage(t, pt.img)
		pt.dir = filepath.Join(work, "template")
		m, err := vm.CreateTemplate(ctx, podConfig(t, pt.bins, pt.art, pt.img, pt.dir))
		if err != nil {
			pt.err = err
			return
		}
		t.Logf("template: agent answered %.0f ms after QEMU started; saved in %.0f ms; %d MiB of %d MiB in use",
			m.BootMS, m.SaveMS, m.Mem.Pages*4096>>20, m.Mem.Size>>20)
	})
	if pt.err != nil {
		t.Fatalf("template: %v", pt.err)
	}
	return pt
}

// clone starts a clone of the shared template in dir.
func (pt *podTemplate) clone(t *testing.T, dir string, cid uint32) *vm.VM {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	v, st, err := vm.StartClone(ctx, pt.dir, vm.Config{
		Dir: dir, GuestCID: cid, Vsockd: filepath.Join(pt.bins, "wren-vsockd"),
		BootTimeout: 2 * time.Minute, Progress: testLog{t},
	})
	if err != nil {
		t.Fatalf("clone: %v", err)
	}
	t.Logf("clone: checks and memory copy (%d MiB) %.0f ms, then the agent answered %v after QEMU started",
		st.CopyBytes>>20, st.CheckMS, v.Booted)
	return v
}

// TestPodVMClone runs the TestPodVM cases against a clone of a template of
// the same machine: virtio-fs share and vsock hot-plugged after the
// restore, the DAX image and everything else restored.
func TestPodVMClone(t *testing.T) {
	pt := sharedTemplate.get(t)
	// Beside TestPodVM, once the template is made (the template tests
	// before it run alone).
	t.Parallel()
	v := pt.clone(t, filepath.Join(t.TempDir(), "clone"), 7)
	runPodCases(t, v, pt.art.KernelVersion)
}

// templateRoot holds the shared template; TestMain removes it.
var templateRoot string

func templateWorkDir() (string, error) {
	d, err := os.MkdirTemp("", "wren-e2e-template-")
	templateRoot = d
	return d, err
}

func TestMain(m *testing.M) {
	code := m.Run()
	if templateRoot != "" {
		os.RemoveAll(templateRoot)
	}
	os.Exit(code)
}

// TestTemplateClones runs two clones of one template at once, each with
// its own CID, vsock backend and share, and checks what a clone must not
// share with its template or its sibling: the random stream (the kernel's
// vmgenid reseed plus the host's ReseedRandomDev) and the clock (the
// template's stopped when it was saved; SetGuestDateTime after the
// restore).
func TestTemplateClones(t *testing.T) {
	pt := sharedTemplate.get(t)
	// The template's clock stopped at its save: let it fall behind.
	time.Sleep(3 * time.Second)
	var got [2]string
	for i := range got {
		v := pt.clone(t, filepath.Join(t.TempDir(), "clone"), uint32(20+i))
		t.Cleanup(func() {
			if err := v.Stop(); err != nil {
				t.Errorf("stop clone: %v", err)
			}
		})
		c, err := client.Dial(context.Background(), v.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		p := &pod{t: t, vm: v, c: c, kernel: pt.art.KernelVersion}
		ctx, cancel := p.ctx()
		defer cancel()
		if _, err := c.Agent.CreateSandbox(ctx, &agentpb.CreateSandboxRequest{
			Hostname: podHostname, SandboxId: "clone", Storages: []*agentpb.Storage{kata.SharedStorage()},
		}); err != nil {
			t.Fatalf("clone %d: CreateSandbox: %v", i, err)
		}
		before := time.Now().Unix()
		out := p.run(t, p.newContainer(t, "rand", "/bin/sh", "-c", "od -An -tx1 -N16 /dev/urandom | tr -d ' \\n'; echo; date -u +%s"), nil)
		after := time.Now().Unix()
		lines := strings.Fields(out.stdout)
		if out.code != 0 || len(lines) != 2 || len(lines[0]) != 32 {
			t.Fatalf("clone %d: container printed %q (stderr %q, status %d)", i, out.stdout, out.stderr, out.code)
		}
		got[i] = lines[0]
		sec, err := strconv.ParseInt(lines[1], 10, 64)
		if err != nil {
			t.Fatalf("clone %d: date printed %q", i, lines[1])
		}
		// One second of slack each way for date's whole seconds.
		if sec < before-1 || sec > after+1 {
			t.Errorf("clone %d: guest clock %d, host clock %d..%d: the clone kept the template's time", i, sec, before, after)
		}
		// The agent reads the kernel's reseed line from /dev/kmsg (the
		// console, quiet, does not show it).
		if rec := waitLogRecord(v, "VM generation changed: restored from a snapshot or cloned from a template; the kernel reseeded its RNG"); rec == nil {
			t.Errorf("clone %d: the kernel did not reseed on the VM generation change (vmgenid):\n%s", i, vm.Tail(v.AgentLog, 20))
		}
		// The agent noticed by itself and stepped the clock the template
		// saved (at least the 3 s slept above) to the RTC.
		if rec := waitLogRecord(v, "clock stepped to the RTC after the VM fork"); rec == nil {
			t.Errorf("clone %d: no clock step record from the agent in its log:\n%s", i, vm.Tail(v.AgentLog, 20))
		} else if ms, _ := rec["step_ms"].(float64); ms < 2000 {
			t.Errorf("clone %d: the agent stepped its clock by %v ms, want ≥ 2000", i, ms)
		}
	}
	if got[0] == got[1] {
		t.Errorf("both clones read the same random bytes %s", got[0])
	}
}

// TestTemplateBadInput: a template that is missing, corrupt, from another
// kernel or initramfs, or whose memory changed is refused with an error
// that says so, before QEMU or any backend starts.
func TestTemplateBadInput(t *testing.T) {
	pt := sharedTemplate.get(t)
	// copyTemplate copies the shared template (its memory sparsely) so a
	// case can damage its own.
	copyTemplate := func(t *testing.T) string {
		dst := filepath.Join(t.TempDir(), "template")
		if err := os.MkdirAll(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{vm.TemplateManifest, "mem", "state.mig"} {
			if b, err := exec.Command("cp", "--sparse=always", filepath.Join(pt.dir, f), dst).CombinedOutput(); err != nil {
				t.Fatalf("cp %s: %v: %s", f, err, b)
			}
		}
		return dst
	}
	flip := func(t *testing.T, path string, off int64) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0xff
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	// otherFile is a copy of path with one byte changed (same size, so
	// only the content tells it apart).
	otherFile := func(t *testing.T, path string) string {
		dst := filepath.Join(t.TempDir(), filepath.Base(path))
		if b, err := exec.Command("cp", path, dst).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v: %s", err, b)
		}
		flip(t, dst, 100)
		return dst
	}
	cases := []struct {
		name string
		prep func(t *testing.T) (tdir string, cfg vm.Config)
		want string
	}{
		{"Missing", func(t *testing.T) (string, vm.Config) {
			return filepath.Join(t.TempDir(), "none"), vm.Config{}
		}, "no template in"},
		{"CorruptManifest", func(t *testing.T) (string, vm.Config) {
			d := copyTemplate(t)
			if err := os.WriteFile(filepath.Join(d, vm.TemplateManifest), []byte("{\"format\": 1, "), 0o644); err != nil {
				t.Fatal(err)
			}
			return d, vm.Config{}
		}, "corrupt manifest"},
		{"CorruptState", func(t *testing.T) (string, vm.Config) {
			d := copyTemplate(t)
			flip(t, filepath.Join(d, "state.mig"), 4096)
			return d, vm.Config{}
		}, "state file is corrupt"},
		{"ChangedMemory", func(t *testing.T) (string, vm.Config) {
			d := copyTemplate(t)
			// Inside the kernel's image, which the guest surely touched.
			flip(t, filepath.Join(d, "mem"), 16<<20+5)
			return d, vm.Config{}
		}, "memory file changed"},
		{"OtherKernel", func(t *testing.T) (string, vm.Config) {
			return copyTemplate(t), vm.Config{Kernel: otherFile(t, pt.art.Kernel)}
		}, "another kernel"},
		{"OtherInitramfs", func(t *testing.T) (string, vm.Config) {
			return copyTemplate(t), vm.Config{Initrd: otherFile(t, pt.art.Initrd)}
		}, "another initramfs"},
		{"OtherMemorySize", func(t *testing.T) (string, vm.Config) {
			return copyTemplate(t), vm.Config{MemoryMiB: 512}
		}, "768 MiB"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tdir, cfg := tc.prep(t)
			cfg.Dir = filepath.Join(t.TempDir(), "clone")
			cfg.Vsockd = filepath.Join(pt.bins, "wren-vsockd")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			v, _, err := vm.StartClone(ctx, tdir, cfg)
			if err == nil {
				_ = v.Stop()
				t.Fatal("the clone started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			// Refused before anything started: no QEMU log, no process.
			if _, serr := os.Stat(filepath.Join(cfg.Dir, "qemu.log")); serr == nil {
				t.Errorf("QEMU was started before the refusal (%v)", err)
			}
			if l := processesMentioning(cfg.Dir); len(l) > 0 {
				t.Errorf("left running: %v", l)
			}
		})
	}
}

// waitLogRecord waits up to 10 s for the agent's log stream to carry a
// record with message msg.
func waitLogRecord(v *vm.VM, msg string) map[string]any {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		for _, r := range logRecords(v.AgentLogText()) {
			if r["msg"] == msg {
				return r
			}
		}
	}
	return nil
}
