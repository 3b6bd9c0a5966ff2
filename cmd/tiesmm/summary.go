package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/tiesmm/tiesmm/internal/units"
	"github.com/tiesmm/tiesmm/merge"
)

// jsonSummary is the --json summary of a merge: one object on stdout. Its fields
// are documented in docs/json.md and kept stable.
type jsonSummary struct {
	Method           string          `json:"method"`
	Preset           string          `json:"preset,omitempty"`
	Base             string          `json:"base"`
	Models           []modelReport   `json:"models"`
	Output           string          `json:"output"`
	InputBytes       int64           `json:"input_bytes"`
	OutputBytes      int64           `json:"output_bytes"`
	Seconds          float64         `json:"seconds"`
	PeakRSSBytes     int64           `json:"peak_rss_bytes"`
	MemoryBoundBytes int64           `json:"memory_bound_bytes"`
	MaxMemoryBytes   int64           `json:"max_memory_bytes"`
	Passes           []string        `json:"passes"`
	Kernels          string          `json:"kernels"`
	Votes            *voteReport     `json:"votes,omitempty"`
	Reclaimed        []string        `json:"reclaimed"`
	ReclaimedBytes   int64           `json:"reclaimed_bytes"`
	Warnings         []merge.Warning `json:"warnings"`
	EMR              []emrTaskReport `json:"emr_tasks,omitempty"`
}

// emrTaskReport is one task of an EMR merge and its rescaler.
type emrTaskReport struct {
	Name     string  `json:"name"`
	Model    string  `json:"model"`
	Rescaler float32 `json:"rescaler"`
}

type modelReport struct {
	Path   string  `json:"path"`
	Kept   *uint64 `json:"kept,omitempty"`
	Asked  *uint64 `json:"asked,omitempty"`
	Values int64   `json:"values"`
}

type voteReport struct {
	Positive  int `json:"positive"`
	Negative  int `json:"negative"`
	Conflicts int `json:"conflicts"`
	ZeroSums  int `json:"zero_sums"`
}

func newJSONSummary(p *merge.Plan, s *merge.Summary) jsonSummary {
	r := jsonSummary{
		Method: p.Method.Name, Preset: p.Method.Preset, Base: p.Opts.Base, Output: p.Opts.Out,
		InputBytes: s.InputBytes, OutputBytes: s.OutputBytes, Seconds: s.Elapsed.Seconds(),
		PeakRSSBytes: s.PeakRSS, MemoryBoundBytes: p.MemoryBound, MaxMemoryBytes: p.Opts.MaxMemory,
		Passes: s.Passes, Kernels: s.Kernel, Reclaimed: s.Reclaimed, ReclaimedBytes: s.ReclaimedBytes,
		Warnings: s.Warnings,
	}
	if r.Reclaimed == nil {
		r.Reclaimed = []string{}
	}
	if r.Warnings == nil {
		r.Warnings = []merge.Warning{}
	}
	asked := s.AskedFor(p)
	for i, path := range p.Opts.Models {
		m := modelReport{Path: path, Values: p.MergedOf(i)}
		if asked != nil && i < len(s.Kept) {
			m.Kept, m.Asked = &s.Kept[i], &asked[i]
		}
		r.Models = append(r.Models, m)
	}
	if p.Method.Votes() {
		v := s.Votes
		r.Votes = &voteReport{Positive: v.Positive, Negative: v.Negative, Conflicts: v.Conflicts, ZeroSums: v.ZeroSum}
	}
	if s.EMR != nil {
		for _, t := range s.EMR.Tasks {
			r.EMR = append(r.EMR, emrTaskReport{Name: t.Name, Model: t.Model, Rescaler: t.Rescaler})
		}
	}
	return r
}

func writeJSON(w io.Writer, r jsonSummary) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// printSummary writes the human summary: what was merged, how fast, the
// memory against its bound, what each model kept, the vote, the warnings.
func printSummary(w io.Writer, p *merge.Plan, s *merge.Summary) {
	what := p.Method.Name
	if p.Method.Preset != "" {
		what += " (" + p.Method.Preset + " preset)"
	}
	if len(p.Opts.Models) == 0 {
		fmt.Fprintf(w, "Wrote the base into %s (%s of the base alone) in %s.\n", p.Opts.Out, what, shortDuration(s.Elapsed))
	} else {
		fmt.Fprintf(w, "Merged %d model(s) into %s with %s in %s.\n", len(p.Opts.Models), p.Opts.Out, what, shortDuration(s.Elapsed))
	}
	fmt.Fprintf(w, "  read     %s at %s/s; wrote %s\n", units.FormatDecimal(s.InputBytes), units.FormatDecimal(int64(float64(s.InputBytes)/max(s.Elapsed.Seconds(), 1e-9))), units.FormatDecimal(s.OutputBytes))
	bound := fmt.Sprintf("the plan's bound %s", units.FormatBinary(p.MemoryBound))
	if p.Opts.MaxMemory > 0 {
		bound += fmt.Sprintf(", --max-memory %s", units.FormatBinary(p.Opts.MaxMemory))
	}
	fmt.Fprintf(w, "  memory   peak %s, under %s\n", units.FormatBinary(s.PeakRSS), bound)
	if asked := s.AskedFor(p); asked != nil {
		width := 0
		for _, m := range p.Opts.Models {
			width = max(width, len(m))
		}
		for i, m := range p.Opts.Models {
			label := "  kept    "
			if i > 0 {
				label = "          "
			}
			fmt.Fprintf(w, "%s %-*s  %s of %s values (%s; asked for %s)\n", label, width, m,
				units.FormatCount(int64(s.Kept[i])), units.FormatCount(p.MergedOf(i)), percent(s.Kept[i], uint64(p.MergedOf(i))), units.FormatCount(int64(asked[i])))
		}
	}
	if p.Method.Votes() {
		v := s.Votes
		elected := uint64(v.Positive + v.Negative)
		fmt.Fprintf(w, "  signs    %s values elected a sign by vote: %s positive, %s negative\n",
			units.FormatCount(int64(elected)), units.FormatCount(int64(v.Positive)), units.FormatCount(int64(v.Negative)))
		fmt.Fprintf(w, "           %s (%s) had models pulling both ways: only those agreeing with the vote were merged\n",
			units.FormatCount(int64(v.Conflicts)), percent(uint64(v.Conflicts), elected))
	}
	if s.EMR != nil {
		for i, t := range s.EMR.Tasks {
			label := "  tasks   "
			if i > 0 {
				label = "          "
			}
			fmt.Fprintf(w, "%s %s (%s): rescaler %v\n", label, t.Name, t.Model, t.Rescaler)
		}
	}
	if len(s.Reclaimed) > 0 {
		names := make([]string, len(s.Reclaimed))
		for i, d := range s.Reclaimed {
			names[i] = filepath.Base(d)
		}
		fmt.Fprintf(w, "  cleaned  removed %d partial output(s) of merges no longer running, %s reclaimed (%s)\n",
			len(s.Reclaimed), units.FormatBinary(s.ReclaimedBytes), strings.Join(names, ", "))
	}
	if len(s.Warnings) > 0 {
		fmt.Fprintf(w, "  warnings %d (printed above):\n", len(s.Warnings))
		for _, x := range s.Warnings {
			fmt.Fprintf(w, "    %s\n", x)
		}
	}
}

func percent(a, b uint64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(a)/float64(b))
}
