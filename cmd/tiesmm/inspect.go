package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/inspect"
	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/merge"
)

type inspectCmd struct {
	Config string `arg:"" optional:"" name:"config.yml" help:"A mergekit-style YAML config: its base model, models and density are inspected (or give --base and --model)."`

	Base      string    `group:"input" help:"Base model: a directory of safetensors or a .safetensors file." placeholder:"DIR"`
	Model     []string  `group:"input" help:"A fine-tuned model (repeat for each; at least two)." placeholder:"DIR"`
	Density   string    `group:"method" help:"Fraction of each task vector the measured trim keeps (default: the config's, else 0.2)."`
	Densities []float64 `group:"method" help:"Several densities measured in the same pass, comma-separated (the first is the table's)." placeholder:"0.1,0.2,0.5"`

	JSON bool   `group:"output" name:"json" help:"Print every figure as one JSON object on stdout (fields: docs/inspect.md) instead of the table."`
	HTML string `group:"output" name:"html" help:"Also write a self-contained page of charts to FILE." placeholder:"FILE"`

	MaxMemory ByteSize `group:"resources" name:"max-memory" help:"Bound on the process's resident memory, above 0; block size and workers follow from it." default:"2GiB"`
	Threads   int      `group:"resources" help:"Workers (default: one per core)."`
	BlockSize int      `group:"resources" name:"block-size" help:"Elements per block, a multiple of 1024 (default: 32768, less if memory is short)."`
	Kernel    string   `group:"resources" help:"Kernel set: auto, avx512, avx2, neon or go." env:"TIESMM_KERNEL" default:"auto"`
	Quiet     bool     `group:"output" short:"q" help:"No progress on stderr."`

	CPUProfile string `name:"cpu-profile" hidden:"" help:"Write a Go CPU profile of the inspection to this file."`
}

// options builds the inspection from the config file or the flags.
func (c *inspectCmd) options() (inspect.Options, error) {
	o := inspect.Options{Base: c.Base, Models: c.Model, MaxMemory: int64(c.MaxMemory), Threads: c.Threads, BlockElems: c.BlockSize}
	if c.MaxMemory <= 0 {
		return o, usageError{fmt.Errorf("--max-memory %d: want a positive size (examples: 2GiB, 512MiB)", c.MaxMemory)}
	}
	if c.BlockSize < 0 || c.BlockSize%inspect.ChunkElems != 0 {
		return o, usageError{fmt.Errorf("--block-size %d: want a positive multiple of %d", c.BlockSize, inspect.ChunkElems)}
	}
	if c.Threads < 0 {
		return o, usageError{fmt.Errorf("--threads %d: want a positive number", c.Threads)}
	}
	if c.Density != "" && len(c.Densities) > 0 {
		return o, usageError{errors.New("give --density or --densities, not both")}
	}
	switch {
	case c.Density != "":
		d, err := strconv.ParseFloat(c.Density, 64)
		if err != nil {
			return o, usageError{fmt.Errorf("--density %q: not a number", c.Density)}
		}
		o.Densities = []float64{d}
	case len(c.Densities) > 0:
		o.Densities = c.Densities
	}
	for _, d := range o.Densities {
		if !(d > 0 && d <= 1) {
			return o, usageError{fmt.Errorf("density %v: want a fraction in (0, 1]", d)}
		}
	}
	if c.Config == "" {
		if c.Base == "" {
			return o, usageError{errors.New("no base model: give --base DIR and --model DIR twice or more (or a config file)")}
		}
		if len(c.Model) < 2 {
			return o, usageError{fmt.Errorf("%d model(s): give --model DIR twice or more", len(c.Model))}
		}
		return o, nil
	}
	if c.Base != "" || len(c.Model) > 0 {
		return o, usageError{errors.New("give either a config file or --base/--model, not both")}
	}
	cfg, err := config.Load(c.Config)
	if err != nil {
		return o, err
	}
	if cfg.BaseModel == "" {
		return o, fmt.Errorf("%s: no base_model: task vectors need a base", c.Config)
	}
	o.Base = cfg.BaseModel
	for _, e := range cfg.Models {
		if samePath(e.Path, cfg.BaseModel) {
			continue // mergekit lists the base among the models at times
		}
		o.Models = append(o.Models, e.Path)
	}
	if len(o.Models) < 2 {
		return o, fmt.Errorf("%s: %d model(s) besides the base: inspect compares two or more", c.Config, len(o.Models))
	}
	if o.Densities == nil {
		d, err := configDensity(cfg)
		if err != nil {
			return o, err
		}
		o.Densities = []float64{d}
	}
	return o, nil
}

func samePath(a, b string) bool { return filepath.Clean(a) == filepath.Clean(b) }

// configDensity is the density every model of the config gives (at model
// level, for tensors in general), or 0.2 when none does.
func configDensity(cfg *config.Config) (float64, error) {
	d, found := 0.0, false
	for i, e := range cfg.Models {
		if samePath(e.Path, cfg.BaseModel) {
			continue
		}
		p, ok := cfg.Resolve(i, "density", "", -1, 0)
		if !ok {
			continue
		}
		if p.Kind != config.KindNumber {
			return 0, fmt.Errorf("%s: model %s: density is not a single number here: give --density", cfg.File, e.Path)
		}
		if found && p.Num != d {
			return 0, fmt.Errorf("%s: the models' densities differ (%g, %g): give --density or --densities", cfg.File, d, p.Num)
		}
		d, found = p.Num, true
	}
	if !found {
		return 0.2, nil
	}
	if !(d > 0 && d <= 1) {
		return 0, fmt.Errorf("%s: density %g: want a fraction in (0, 1]", cfg.File, d)
	}
	return d, nil
}

func (c *inspectCmd) Run(ctx context.Context, k *kong.Context) error {
	o, err := c.options()
	if err != nil {
		return err
	}
	if o.Kernels, err = kernels.Lookup(c.Kernel); err != nil {
		return err
	}
	if !c.Quiet {
		o.Progress = newProgress(os.Stderr)
	}
	if c.CPUProfile != "" {
		f, err := os.Create(c.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := inspect.Run(ctx, o)
	if err != nil {
		return err
	}
	if c.HTML != "" {
		if err := writeHTMLFile(c.HTML, rep); err != nil {
			return err
		}
	}
	if c.JSON {
		return rep.WriteJSON(os.Stdout)
	}
	return rep.WriteTable(os.Stdout)
}

// writeHTMLFile writes the page under a temporary name and renames it.
func writeHTMLFile(path string, rep *inspect.Report) error {
	return writePage("--html", path, rep.WriteHTML)
}

// writePage writes a page under a temporary name and renames it.
func writePage(flag, path string, write func(io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	if err := write(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("%s %s: %w", flag, path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s %s: %w", flag, path, err)
	}
	return os.Rename(tmp, path)
}

// checkReportPath refuses a --report page inside the output directory,
// which the merge replaces whole.
func checkReportPath(report, out string) error {
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			return filepath.Clean(p)
		}
		// Resolve the links of the longest part that exists.
		for dir, rest := a, ""; ; {
			if r, err := filepath.EvalSymlinks(dir); err == nil {
				return filepath.Join(r, rest)
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				return a
			}
			dir, rest = parent, filepath.Join(filepath.Base(dir), rest)
		}
	}
	o, r := abs(out), abs(report)
	if rel, err := filepath.Rel(o, r); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return fmt.Errorf("--report %s is inside the output directory %s, which the merge replaces: write it elsewhere", report, out)
	}
	return nil
}

// reportDensities are the densities the page's statistics are measured at,
// and a note saying so: every density the merge's trims used, the one that
// covers the most values first (the one shown), or 1 when the method keeps
// every value.
func reportDensities(p *merge.Plan) ([]float64, string) {
	var ds []float64
	cover := map[float64]int64{}
	if p.Method.Sparsifies() {
		for _, j := range p.Jobs {
			if j.Copy {
				continue
			}
			for _, d := range j.Params.Density {
				if d < 0 || math.IsNaN(d) || math.IsInf(d, 0) {
					continue
				}
				if _, ok := cover[d]; !ok {
					ds = append(ds, d)
				}
				cover[d] += j.Elements
			}
		}
	}
	slices.SortStableFunc(ds, func(a, b float64) int { return cmp.Compare(cover[b], cover[a]) })
	switch {
	case len(ds) == 0:
		return []float64{1}, fmt.Sprintf("%s keeps every value: the statistics below are at density 1 (norms, cosines and sign conflicts; nothing trimmed).", p.Method.Name)
	case len(ds) == 1:
		note := fmt.Sprintf("The statistics below are inspect's, at the merge's density %g.", ds[0])
		if p.Method.Drop != merge.DropNone {
			note += " The merge drops values at random; the statistics measure a top-k trim at the same density."
		}
		return ds, note
	}
	note := fmt.Sprintf("The merge's densities differ across models or tensors: the statistics are measured at each (%s), and shown at %g, which covers the most values.", joinFloats(ds), ds[0])
	if p.Method.Drop != merge.DropNone {
		note += " The merge drops values at random; the statistics measure top-k trims at the same densities."
	}
	return ds, note
}

func joinFloats(fs []float64) string {
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = strconv.FormatFloat(f, 'g', -1, 64)
	}
	return strings.Join(s, ", ")
}

// writeMergeReport writes the page of --report for the merge just made:
// what it decided, then inspect's statistics of its inputs. When those
// cannot be measured, the page says why, and so does a line on stderr.
func writeMergeReport(ctx context.Context, path string, p *merge.Plan, sum *merge.Summary, quiet bool) error {
	what := p.Method.Name
	if p.Method.Preset != "" {
		what += " (" + p.Method.Preset + " preset)"
	}
	f := &inspect.MergeFacts{Method: what, Output: p.Opts.Out, Models: p.Opts.Models, Values: p.Merged}
	if asked := sum.AskedFor(p); asked != nil {
		f.Kept, f.Asked = sum.Kept, asked
	}
	if p.Method.Votes() {
		v := sum.Votes
		f.Votes = &v
	}
	for _, w := range sum.Warnings {
		f.Warnings = append(f.Warnings, fmt.Sprint(w))
	}
	var rep *inspect.Report
	switch {
	case p.Method.NoBase:
		f.Note = p.Method.Name + " merges the models' values, not task vectors: no interference statistics."
	case len(p.Opts.Models) < 2:
		f.Note = "One model: no interference statistics."
	default:
		ds, note := reportDensities(p)
		f.Note = note
		o := inspect.Options{Base: p.Opts.Base, Models: p.Opts.Models, Densities: ds, MaxMemory: p.Opts.MaxMemory,
			Threads: p.Opts.Threads, Kernels: p.Opts.Kernels}
		if !quiet {
			o.Progress = newProgress(os.Stderr)
		}
		var err error
		if rep, err = inspect.Run(ctx, o); err != nil {
			if ctx.Err() != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "warning: --report: no statistics: %v\n", err)
			f.Note = fmt.Sprintf("No statistics: %v", err)
			rep = nil
		}
	}
	write := func(w io.Writer) error { return inspect.WriteMergeHTML(w, f) }
	if rep != nil {
		if f.Values == 0 {
			f.Values = rep.Model.N
		}
		rep.Merge = f
		write = rep.WriteHTML
	}
	return writePage("--report", path, write)
}
