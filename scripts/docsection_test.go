package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// docSection runs scripts/doc-section.sh on doc with section on stdin and
// returns the file afterwards.
func docSection(t *testing.T, doc, heading, section string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "doc-section.sh"), doc, heading)
	cmd.Stdin = strings.NewReader(section + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("doc-section.sh: %v\n%s", err, out)
	}
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDocSectionReplacesOnlyItsHeading: the bench scripts' sections are
// found by their exact heading; "## Pod VM (…)" once matched as a prefix
// and replaced "## Pod VM templates (…)" with a second copy of itself.
func TestDocSectionReplacesOnlyItsHeading(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "b.md")
	orig := "# Benchmarks\n\n## Pod VM (bench-vm)\n\nold vm\n\n## Pod VM templates (bench-template)\n\ntemplates\n\n## Guest kernel\n\nkernel\n"
	if err := os.WriteFile(doc, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	got := docSection(t, doc, "## Pod VM (bench-vm)", "## Pod VM (bench-vm)\n\nnew vm")
	want := "# Benchmarks\n\n## Pod VM (bench-vm)\n\nnew vm\n\n## Pod VM templates (bench-template)\n\ntemplates\n\n## Guest kernel\n\nkernel\n"
	if got != want {
		t.Errorf("replaced:\n%s\nwant:\n%s", got, want)
	}
	got = docSection(t, doc, "## vsock", "## vsock\n\nfigures")
	if want += "\n## vsock\n\nfigures\n"; got != want {
		t.Errorf("appended:\n%s\nwant:\n%s", got, want)
	}
}
