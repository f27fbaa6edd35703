package e2e

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/wren-vm/wren/harness/vm"
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
