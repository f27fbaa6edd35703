package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// SchemaVersion changes when a field of Report changes meaning.
const SchemaVersion = 1

// Report is one benchmark run: where it ran and every figure it measured.
type Report struct {
	Schema   int       `json:"schema"`
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`
	Figures  []*Figure `json:"figures"`
}

// Figure is one numbered figure of the benchmark table.
type Figure struct {
	ID     string `json:"id"`
	Title  string `json:"title"`
	Method string `json:"method"`
	Goal   string `json:"goal,omitempty"`
	Anchor string `json:"anchor,omitempty"`
	// Metrics are the measured rows; Ratios compare rows measured in this
	// run (Wren over a peer).
	Metrics []Metric `json:"metrics"`
	Ratios  []Ratio  `json:"ratios,omitempty"`
	// Skipped says why a subject (a peer, or the figure itself) could not
	// run here.
	Skipped []Skip   `json:"skipped,omitempty"`
	Notes   []string `json:"notes,omitempty"`
	// Verdict, when set, is whether the figure met its goal (for goals
	// that are not a ratio, such as an absolute size).
	Verdict *bool `json:"verdict,omitempty"`
	// Judged names the subject a Verdict was judged on; the summary
	// shows that subject's first metric.
	Judged string `json:"judged,omitempty"`
}

// Judge records whether the figure met its goal.
func (f *Figure) Judge(met bool) { f.Verdict = &met }

// Metric is one measured quantity of one subject (wren, runc, crun, raw).
type Metric struct {
	Subject string `json:"subject"`
	Name    string `json:"name"`
	Unit    string `json:"unit"`
	Summary
	// HigherIsBetter marks throughput-like metrics for comparisons.
	HigherIsBetter bool `json:"higher_is_better,omitempty"`
}

// Key names the metric across runs.
func (m Metric) Key() string { return m.Subject + ": " + m.Name }

// Ratio is Num's median over Den's median, measured in the same run.
type Ratio struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Goal  string  `json:"goal,omitempty"`
	Met   *bool   `json:"met,omitempty"`
}

// Skip records a subject that did not run and why.
type Skip struct {
	Subject string `json:"subject"`
	Reason  string `json:"reason"`
}

// Add appends a metric summarising samples.
func (f *Figure) Add(subject, name, unit string, samples []float64) Metric {
	m := Metric{Subject: subject, Name: name, Unit: unit, Summary: Summarize(samples)}
	f.Metrics = append(f.Metrics, m)
	return m
}

// AddValue appends a metric with a single value.
func (f *Figure) AddValue(subject, name, unit string, v float64) Metric {
	return f.Add(subject, name, unit, []float64{v})
}

// Metric finds a metric by subject and name.
func (f *Figure) Metric(subject, name string) (Metric, bool) {
	for _, m := range f.Metrics {
		if m.Subject == subject && m.Name == name {
			return m, true
		}
	}
	return Metric{}, false
}

// AddRatio appends num/den (medians). goalMax > 0 records whether the
// ratio is at most goalMax; goalMin > 0 whether it is at least goalMin.
func (f *Figure) AddRatio(name string, num, den Metric, goalMax, goalMin float64) {
	if den.Median == 0 || num.N == 0 || den.N == 0 {
		return
	}
	r := Ratio{Name: name, Value: num.Median / den.Median}
	switch {
	case goalMax > 0:
		met := r.Value <= goalMax
		r.Goal, r.Met = fmt.Sprintf("≤ %.2g×", goalMax), &met
	case goalMin > 0:
		met := r.Value >= goalMin
		r.Goal, r.Met = fmt.Sprintf("≥ %.2g×", goalMin), &met
	}
	f.Ratios = append(f.Ratios, r)
}

// Skip records that subject could not run.
func (f *Figure) Skip(subject string, err error) {
	f.Skipped = append(f.Skipped, Skip{Subject: subject, Reason: err.Error()})
}

// Note appends a free-text observation.
func (f *Figure) Note(format string, args ...any) {
	f.Notes = append(f.Notes, fmt.Sprintf(format, args...))
}

// WriteJSON writes r to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadReport reads a report written by WriteJSON.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	if r.Schema != SchemaVersion {
		return nil, fmt.Errorf("%s: schema %d, this tool reads %d", path, r.Schema, SchemaVersion)
	}
	return &r, nil
}

// Comparison is one metric present in two runs.
type Comparison struct {
	Figure, Key, Unit string
	Old, New          float64
	// Ratio is New/Old of the medians.
	Ratio float64
	// Better is true when the new run improved the metric.
	Better bool
}

// Compare matches the metrics of two reports by figure and key; metrics in
// only one report are listed in onlyOld/onlyNew.
func Compare(oldR, newR *Report) (cmp []Comparison, onlyOld, onlyNew []string) {
	index := func(r *Report) map[string]Metric {
		m := map[string]Metric{}
		for _, f := range r.Figures {
			for _, x := range f.Metrics {
				m[f.ID+"\x00"+x.Key()] = x
			}
		}
		return m
	}
	om, nm := index(oldR), index(newR)
	for k, o := range om {
		n, ok := nm[k]
		fig, key, _ := strings.Cut(k, "\x00")
		if !ok {
			onlyOld = append(onlyOld, fig+" "+key)
			continue
		}
		c := Comparison{Figure: fig, Key: key, Unit: n.Unit, Old: o.Median, New: n.Median}
		if o.Median != 0 {
			c.Ratio = n.Median / o.Median
		}
		c.Better = (n.Median < o.Median) != n.HigherIsBetter && n.Median != o.Median
		cmp = append(cmp, c)
	}
	for k := range nm {
		if _, ok := om[k]; !ok {
			fig, key, _ := strings.Cut(k, "\x00")
			onlyNew = append(onlyNew, fig+" "+key)
		}
	}
	sort.Slice(cmp, func(i, j int) bool {
		if cmp[i].Figure != cmp[j].Figure {
			return figureLess(cmp[i].Figure, cmp[j].Figure)
		}
		return cmp[i].Key < cmp[j].Key
	})
	sort.Strings(onlyOld)
	sort.Strings(onlyNew)
	return cmp, onlyOld, onlyNew
}

// figureLess orders figure ids numerically where they are numbers.
func figureLess(a, b string) bool {
	var x, y int
	_, ea := fmt.Sscanf(a, "%d", &x)
	_, eb := fmt.Sscanf(b, "%d", &y)
	if ea == nil && eb == nil && x != y {
		return x < y
	}
	return a < b
}

// WriteComparison prints a comparison as a table.
func WriteComparison(w io.Writer, cmp []Comparison, onlyOld, onlyNew []string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "fig\tmetric\told\tnew\tnew/old\t\n")
	for _, c := range cmp {
		mark := ""
		// Changes under 2 % are below anything this machine resolves.
		if c.Ratio != 0 && (c.Ratio > 1.02 || c.Ratio < 0.98) {
			mark = " (worse)"
			if c.Better {
				mark = " (better)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s %s\t%.3f%s\t\n", c.Figure, c.Key, FormatNumber(c.Old), c.Unit, FormatNumber(c.New), c.Unit, c.Ratio, mark)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, k := range onlyOld {
		fmt.Fprintf(w, "only in old: %s\n", k)
	}
	for _, k := range onlyNew {
		fmt.Fprintf(w, "only in new: %s\n", k)
	}
	return nil
}

// FormatNumber prints a value with precision suited to its size.
func FormatNumber(v float64) string {
	a := v
	if a < 0 {
		a = -a
	}
	switch {
	case a == 0:
		return "0"
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.1f", v)
	case a >= 10:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}
