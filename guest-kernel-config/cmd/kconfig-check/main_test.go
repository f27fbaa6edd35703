package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExitCodes(t *testing.T) {
	var merged bytes.Buffer
	if code, err := run([]string{"--fragments", "../..", "--merged"}, &merged); code != 0 || err != nil {
		t.Fatalf("--merged: %d %v", code, err)
	}
	good := filepath.Join(t.TempDir(), "good.config")
	if err := os.WriteFile(good, merged.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if code, err := run([]string{"--fragments", "../..", good}, &out); code != 0 || err != nil {
		t.Errorf("merged config: %d %v\n%s", code, err, out.String())
	}
	bad := filepath.Join(t.TempDir(), "bad.config")
	if err := os.WriteFile(bad, bytes.Replace(merged.Bytes(), []byte("CONFIG_VIRTIO_FS=y\n"), nil, 1), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code, _ := run([]string{"--fragments", "../..", bad}, &out); code != 1 || !strings.Contains(out.String(), "CONFIG_VIRTIO_FS: want y, have n (absent)") {
		t.Errorf("missing option: code %d\n%s", code, out.String())
	}
	if code, _ := run([]string{"--fragments", "../..", "--report", bad}, &out); code != 0 {
		t.Errorf("--report exit %d", code)
	}
	if code, err := run([]string{"--fragments", "../.."}, &out); code != 2 || err == nil {
		t.Errorf("no config: %d %v", code, err)
	}
}
