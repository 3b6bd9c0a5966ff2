package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"golang.org/x/term"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/merge"
)

type mergeCmd struct {
	First  string   `arg:"" name:"config.yml|out" help:"A mergekit-style YAML config (then the output directory follows), or the output directory with --base and --model."`
	Second string   `arg:"" optional:"" name:"out" help:"The output directory, after a config file."`
	args   []string // the positional arguments given, empty ones included

	Base  string   `group:"input" help:"Base model (flag form): a directory of safetensors, a .safetensors file, or BASE+ADAPTER (a PEFT LoRA adapter folder)." placeholder:"DIR"`
	Model []string `group:"input" help:"A fine-tuned model (flag form; repeat for each), as --base, or a LoRA adapter folder alone (it adapts the base)." placeholder:"DIR"`

	Method    string    `group:"method" help:"Merge method (flag form): ${methods}." default:"ties"`
	Preset    string    `group:"method" help:"TIES preset: paper (default in the flag form), mergekit (default for YAML) or peft." enum:",paper,mergekit,peft" default:""`
	TrimScope string    `group:"method" help:"Trim threshold per model (whole model) or per tensor." enum:",model,tensor" default:""`
	Density   string    `group:"method" help:"Fraction of each task vector kept by the trim, in (0, 1]."`
	Weight    []float64 `group:"method" help:"Weight of each model, in --model order (repeat or comma-separate)."`
	Lambda    string    `group:"method" help:"Scale of the merged task vector."`
	Gamma     string    `group:"method" help:"Breadcrumbs: fraction of the largest |τ| dropped."`
	Epsilon   string    `group:"method" help:"DELLA: half-width of the keep-probability range."`
	Rescale   string    `group:"method" help:"DARE/DELLA: make up for dropped values by L1 norm (true, l1), by 1/p (inverse), or not (false); emr: rescalers from per-tensor means (mean) or whole-model sums (l1)." enum:",true,false,l1,inverse,mean" default:""`
	Seed      uint64    `group:"method" help:"Seed of the random methods (DARE, DELLA): same seed, same bytes." default:"0"`
	Consensus string    `group:"method" help:"Sign election: sum of values or count of signs." enum:",sum,count" default:""`
	Aggregate string    `group:"method" help:"How agreeing values combine." enum:",mean,sum,max" default:""`
	Normalize string    `group:"method" help:"Divide by the agreeing weights (true) or not (false)." enum:",true,false" default:""`
	TopK      string    `group:"method" name:"topk" help:"Whole-model threshold: exact, or approx (the high-bits histogram only: keeps up to one histogram bin more)." enum:",exact,approx" default:""`
	TwoPass   bool      `group:"method" name:"two-pass" help:"Find exact thresholds with full histogram passes instead of one sampled pass with a spill."`
	Compute   string    `group:"method" name:"compute-dtype" help:"Arithmetic: float32 (default: one rounding at the end) or bfloat16 (every step rounded to bf16, as mergekit with dtype: bfloat16; linear, task_arithmetic, slerp, nuslerp and multislerp)."`
	T         string    `group:"method" name:"t" help:"slerp: where between the base (0) and the model (1); nearswap: where the model is within t of the base, its value is taken."`
	SceTopK   string    `group:"method" name:"select-topk" help:"sce: fraction of elements kept, those whose task vectors vary most across models."`
	Ratio     string    `group:"method" help:"pcb: fraction of each task vector kept, in (0, 1]."`
	Clip      string    `group:"method" help:"pcb: fractions of the smallest and largest |τ| clipped: LO,HI, or one number for both." placeholder:"LO,HI"`
	Inter     string    `group:"method" help:"pcb: balance across tasks: sum, normsum or pairwise." enum:",sum,normsum,pairwise" default:""`
	Scope     string    `group:"method" help:"pcb: clip bounds and drop threshold over the whole model or per tensor." enum:",model,tensor" default:""`

	OutDType     string   `group:"output" name:"out-dtype" help:"Output dtype: bfloat16 (bf16), float16 (fp16, half) or float32 (fp32); torch.* names too (default: the base's)."`
	OutShardSize ByteSize `group:"output" name:"out-shard-size" help:"Largest output shard, at least 1MiB; a tensor larger than this gets a shard of its own." default:"5GB"`
	Force        bool     `group:"output" help:"Replace an existing output directory that holds a model (and nothing else)."`
	Materialize  string   `group:"output" help:"emr: also write task NAME's model (or all of them) as OUT/task-NAME, in the same run." placeholder:"all|NAME"`

	MaxMemory ByteSize `group:"resources" name:"max-memory" help:"Bound on the process's resident memory, above 0; block size and workers follow from it." default:"2GiB"`
	Threads   int      `group:"resources" help:"Workers (default: one per core)."`
	BlockSize int      `group:"resources" name:"block-size" help:"Elements per block (default: sized to L2)."`
	Kernel    string   `group:"resources" help:"Kernel set: auto, avx512, avx2, neon or go." env:"TIESMM_KERNEL" default:"auto"`

	DryRun     bool   `group:"diagnostics" name:"dry-run" help:"Check everything and print the plan and its warnings; read no tensor data, write nothing."`
	Explain    bool   `group:"diagnostics" help:"Print each tensor's resolved parameters per model, then exit."`
	Quiet      bool   `group:"diagnostics" short:"q" help:"Print nothing but warnings and errors." xor:"verbosity"`
	Verbose    bool   `group:"diagnostics" short:"v" help:"Add the engine's details to the summary (passes, samples, tie cuts, spills)." xor:"verbosity"`
	JSON       bool   `group:"diagnostics" name:"json" help:"Print the summary as one JSON object on stdout (fields: docs/json.md); progress and warnings stay on stderr."`
	Report     string `group:"diagnostics" help:"After the merge, write a self-contained page of what it decided and of inspect's statistics of its inputs (an extra read of them) to FILE.html, outside the output directory." placeholder:"FILE.html"`
	CPUProfile string `name:"cpu-profile" hidden:"" help:"Write a Go CPU profile of the merge to this file."`
}

// config builds the merge config from the YAML file, or from the flags.
func (m *mergeCmd) config() (*config.Config, string, error) {
	switch len(m.args) {
	case 2:
		if m.Base != "" || len(m.Model) > 0 {
			return nil, "", usageError{errors.New("give either a config file or --base/--model, not both")}
		}
		c, err := config.Load(m.args[0])
		if err != nil {
			return nil, "", err
		}
		if err := m.override(c); err != nil {
			return nil, "", err
		}
		return c, m.args[1], nil
	case 1:
	default:
		return nil, "", usageError{errors.New("want CONFIG.yml OUT, or OUT with --base and --model")}
	}
	if m.Base == "" && config.NeedsBase(m.Method) {
		return nil, "", usageError{errors.New("no base model: give --base DIR (or a config file)")}
	}
	c := &config.Config{Method: m.Method, BaseModel: m.Base, Parameters: config.Params{}}
	if m.Method == "ties" {
		c.Parameters["preset"] = config.StringParam("paper")
	}
	if len(m.Weight) > 0 && len(m.Weight) != len(m.Model) {
		return nil, "", usageError{fmt.Errorf("%d weights for %d models", len(m.Weight), len(m.Model))}
	}
	for i, path := range m.Model {
		e := config.ModelEntry{Path: path, Parameters: config.Params{}}
		if len(m.Weight) > 0 {
			e.Parameters["weight"] = config.NumberParam(m.Weight[i])
		}
		c.Models = append(c.Models, e)
	}
	c.JoinBase()
	if err := m.override(c); err != nil {
		return nil, "", err
	}
	return c, m.args[0], nil
}

// override applies the detail flags on top of a config.
func (m *mergeCmd) override(c *config.Config) error {
	if c.Parameters == nil {
		c.Parameters = config.Params{}
	}
	for key, v := range map[string]string{"preset": m.Preset, "trim_scope": m.TrimScope, "consensus": m.Consensus, "aggregate": m.Aggregate,
		"inter": m.Inter, "scope": m.Scope} {
		if v != "" {
			c.Parameters[key] = config.StringParam(v)
		}
	}
	for key, v := range map[string]string{"density": m.Density, "lambda": m.Lambda, "gamma": m.Gamma, "epsilon": m.Epsilon,
		"t": m.T, "select_topk": m.SceTopK, "ratio": m.Ratio} {
		if v == "" {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return usageError{fmt.Errorf("--%s %q: not a number", key, v)}
		}
		c.Parameters[key] = config.NumberParam(f)
	}
	if m.Clip != "" {
		var clip []float64
		for _, s := range strings.Split(m.Clip, ",") {
			f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil {
				return usageError{fmt.Errorf("--clip %q: not a number or two numbers LO,HI", m.Clip)}
			}
			clip = append(clip, f)
		}
		switch len(clip) {
		case 1:
			c.Parameters["clip"] = config.NumberParam(clip[0])
		case 2:
			c.Parameters["clip"] = config.GradientParam(clip...)
		default:
			return usageError{fmt.Errorf("--clip %q: want one number or two, LO,HI", m.Clip)}
		}
	}
	switch m.Rescale {
	case "":
	case "true", "false":
		c.Parameters["rescale"] = config.BoolParam(m.Rescale == "true")
	default:
		c.Parameters["rescale"] = config.StringParam(m.Rescale)
	}
	if m.Normalize != "" {
		c.Parameters["normalize"] = config.BoolParam(m.Normalize == "true")
	}
	if m.Compute != "" {
		dt, err := kernels.ParseDType(m.Compute)
		if err != nil {
			return usageError{fmt.Errorf("--compute-dtype: %w", err)}
		}
		c.ComputeDType = dt.TorchName()
	}
	if m.OutDType != "" {
		dt, err := kernels.ParseDType(m.OutDType)
		if err != nil {
			return usageError{fmt.Errorf("--out-dtype: %w", err)}
		}
		c.OutDType = dt.TorchName()
	}
	return nil
}

func (m *mergeCmd) Run(ctx context.Context, k *kong.Context) error {
	for _, p := range k.Path {
		if p.Positional != nil {
			m.args = append(m.args, p.Positional.Target.String())
		}
	}
	c, plan, err := m.plan()
	if err != nil {
		return err
	}
	merge.PrintWarnings(os.Stderr, plan.Warnings)
	switch {
	case m.Explain:
		return m.explain(c, plan)
	case m.DryRun:
		plan.Describe(os.Stdout)
		return nil
	}
	resolved, err := c.Marshal()
	if err != nil {
		return err
	}
	var prog merge.Progress
	if !m.Quiet {
		prog = newProgress(os.Stderr)
	}
	if m.CPUProfile != "" {
		stop, err := startProfile(m.CPUProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	sum, err := merge.Run(ctx, plan, prog, map[string][]byte{"tiesmm_config.yml": resolved})
	if err != nil {
		return err
	}
	merge.PrintWarnings(os.Stderr, sum.Warnings[len(plan.Warnings):]) // found while merging
	if m.Report != "" {
		if err := writeMergeReport(ctx, m.Report, plan, sum, m.Quiet); err != nil {
			return err
		}
	}
	switch {
	case m.JSON:
		return writeJSON(os.Stdout, newJSONSummary(plan, sum))
	case m.Quiet:
		return nil
	}
	printSummary(os.Stdout, plan, sum)
	if m.Verbose {
		sum.PrintDetails(os.Stdout, plan)
	}
	return nil
}

// plan reads and checks the command line and the config, and makes the plan.
func (m *mergeCmd) plan() (*config.Config, *merge.Plan, error) {
	if err := m.checkSizes(); err != nil {
		return nil, nil, usageError{err}
	}
	c, out, err := m.config()
	if err != nil {
		return nil, nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	if m.Report != "" {
		if err := checkReportPath(m.Report, out); err != nil {
			return nil, nil, usageError{err}
		}
	}
	method, resolve, err := merge.Recipe(c)
	if err != nil {
		return nil, nil, err
	}
	method.Seed = m.Seed
	method.ApproxTopK = m.TopK == "approx"
	ks, err := kernels.Lookup(m.Kernel)
	if err != nil {
		return nil, nil, err
	}
	opts := merge.Options{
		Base: c.BaseModel, Out: out, Force: m.Force, OutDType: c.OutputDType(),
		ShardBytes: int64(m.OutShardSize), MaxMemory: int64(m.MaxMemory), Threads: m.Threads,
		BlockElems: m.BlockSize, Kernels: ks, TwoPass: m.TwoPass, Materialize: m.Materialize,
		Vocab: merge.VocabOptions{Source: c.TokenizerSource, PadTo: c.PadToMultipleOf, BaseModel: c.BaseModel, Tokens: c.Tokens},
	}
	if c.Slices != nil && c.LayerRange == nil {
		plan, err := m.slicePlan(c, opts)
		return c, plan, err
	}
	for _, e := range c.Models {
		opts.Models = append(opts.Models, e.Path)
	}
	if opts.Base == "" && len(opts.Models) > 0 {
		opts.Base = opts.Models[0] // linear, nuslerp: the first model lays out the output
	}
	plan, err := merge.NewPlan(opts, method, resolve)
	if err != nil {
		return nil, nil, err
	}
	if c.LayerRange != nil && c.LayerRange[1] != plan.Layers {
		// Slices that stop short of the models' layers: a frankenmerge.
		plan, err = m.slicePlan(c, opts)
	}
	return c, plan, err
}

// slicePlan is the plan of a config's slices: a frankenmerge.
func (m *mergeCmd) slicePlan(c *config.Config, opts merge.Options) (*merge.Plan, error) {
	method, sl, resolve, err := merge.SliceRecipe(c)
	if err != nil {
		return nil, err
	}
	method.Seed = m.Seed
	method.ApproxTopK = m.TopK == "approx"
	opts.Models = nil
	for _, j := range sl[0].Models {
		opts.Models = append(opts.Models, sl[0].Sources[j].Model)
	}
	opts.Base = c.BaseModel
	if opts.Base == "" {
		opts.Base = sl[0].Sources[0].Model // the first model lays out the output
	}
	return merge.NewSlicePlan(opts, method, sl, resolve)
}

// explain prints each tensor's resolved parameters and its strategy.
func (m *mergeCmd) explain(c *config.Config, plan *merge.Plan) error {
	names := make([]string, len(plan.Jobs))
	for i, j := range plan.Jobs {
		names[i] = j.Name
	}
	if plan.Frankenmerge() {
		plan.DescribeLayers(os.Stdout)
		plan.ExplainSlices(os.Stdout)
	} else if err := c.Explain(os.Stdout, names, plan.Layers); err != nil {
		return err
	}
	fmt.Fprintln(os.Stdout)
	plan.DescribeStrategies(os.Stdout)
	return nil
}

// startProfile writes a CPU profile to path until the returned stop.
func startProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// newProgress draws on a terminal, or prints a line every few seconds.
func newProgress(f *os.File) *progress {
	fd := int(f.Fd())
	if term.IsTerminal(fd) {
		return &progress{w: f, tty: true, every: 150 * time.Millisecond, width: func() int {
			w, _, err := term.GetSize(fd)
			if err != nil {
				return 0
			}
			return w
		}}
	}
	return &progress{w: f, every: 5 * time.Second}
}
