package bench

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func testReport(check, rss, mbps float64) *Report {
	f4 := &Figure{ID: "4", Title: "Check"}
	f4.Add("wren", "Check round trip", "µs", []float64{check, check, check})
	f1 := &Figure{ID: "1", Title: "idle"}
	f1.AddValue("wren fresh", "RSS", "MiB", rss)
	f7 := &Figure{ID: "7", Title: "stdout"}
	f7.AddValue("wren", "1 MiB reads", "MB/s", mbps)
	f7.Metrics[0].HigherIsBetter = true
	return &Report{Schema: SchemaVersion, Figures: []*Figure{f4, f1, f7}}
}

func TestCompare(t *testing.T) {
	oldR, newR := testReport(100, 6, 200), testReport(50, 6, 400)
	newR.Figures[1].AddValue("wren fresh", "PSS", "MiB", 5)
	cmp, onlyOld, onlyNew := Compare(oldR, newR)
	if len(onlyOld) != 0 || len(onlyNew) != 1 || !strings.Contains(onlyNew[0], "PSS") {
		t.Fatalf("onlyOld %v onlyNew %v", onlyOld, onlyNew)
	}
	if len(cmp) != 3 {
		t.Fatalf("got %d comparisons: %+v", len(cmp), cmp)
	}
	// Sorted by figure number: 1, 4, 7.
	if cmp[0].Figure != "1" || cmp[1].Figure != "4" || cmp[2].Figure != "7" {
		t.Fatalf("order: %+v", cmp)
	}
	if cmp[1].Ratio != 0.5 || !cmp[1].Better {
		t.Errorf("latency halved: %+v", cmp[1])
	}
	if cmp[2].Ratio != 2 || !cmp[2].Better {
		t.Errorf("throughput doubled: %+v", cmp[2])
	}
	if cmp[0].Ratio != 1 || cmp[0].Better {
		t.Errorf("unchanged RSS: %+v", cmp[0])
	}
	var out bytes.Buffer
	if err := WriteComparison(&out, cmp, onlyOld, onlyNew); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "0.500 (better)") || !strings.Contains(out.String(), "only in new: 1 wren fresh: PSS") {
		t.Errorf("comparison table:\n%s", out.String())
	}
}

func TestReportRoundTrip(t *testing.T) {
	r := testReport(100, 6, 200)
	r.Figures[0].AddRatio("wren / raw", r.Figures[0].Metrics[0], Metric{Summary: Summary{N: 1, Median: 40}}, 1.5, 0)
	path := filepath.Join(t.TempDir(), "b.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	got, err := ReadReport(path)
	if err != nil {
		t.Fatal(err)
	}
	q := got.Figures[0].Ratios[0]
	if q.Value != 2.5 || q.Met == nil || *q.Met {
		t.Fatalf("ratio after round trip: %+v", q)
	}
	var md bytes.Buffer
	if err := got.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "| wren / raw | 2.50× | ≤ 1.5× | **no** |") {
		t.Errorf("markdown lacks the ratio row:\n%s", md.String())
	}
}

func TestReadReportRejectsOtherSchema(t *testing.T) {
	r := testReport(1, 1, 1)
	r.Schema = SchemaVersion + 1
	path := filepath.Join(t.TempDir(), "b.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadReport(path); err == nil {
		t.Fatal("ReadReport accepted a report of another schema")
	}
}
