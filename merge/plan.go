package merge

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"runtime"
	"slices"
	"strings"
	"unsafe"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/internal/units"
	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
	topk "github.com/tiesmm/tiesmm/select"
)

// Options are the run settings that do not change what is computed.
type Options struct {
	Base       string
	Models     []string
	Out        string
	Force      bool
	OutDType   string // "" keeps each tensor's base dtype
	ShardBytes int64
	MaxMemory  int64
	Threads    int // 0: one per core
	BlockElems int // 0: sized from L2 and the memory bound
	Kernels    *kernels.Set
	Layers     int  // numbered layers, for gradients (0: from the tensor names)
	TwoPass    bool // the whole-model trim by two full histogram passes, not sample + spill
	Vocab      VocabOptions
	// Materialize: emr writes "all" tasks, or the one of this name, as
	// models too, in the same run.
	Materialize string
}

// Job is one output tensor: merged from the inputs, or copied from the base.
type Job struct {
	Name     string
	Elements int64
	Shape    []int64
	Base     *mmapio.Tensor
	BaseDT   kernels.DType
	Models   []*mmapio.Tensor // read from the start, or through Rows
	ModelDT  []kernels.DType
	OutDT    kernels.DType
	OutDType string // the header's name of the output dtype
	Copy     bool   // not a float tensor: copied from the base byte for byte
	Params   TensorParams
	Need     []uint64 // per model, elements to keep (tensor scope); nil with Trim off
	NeedTop  []uint64 // per model, the largest elements dropped (breadcrumbs)
	// Slots: per input of Models, its index in the plan's Models (nil: the
	// same index). A frankenmerge's slices merge models of their own.
	Slots []int
	// Rows: an embedding whose rows are aligned by token or cut to the
	// inputs' common submatrix (rowview.go); its inputs are then read as
	// float32 (BaseDT and ModelDT F32).
	Rows *rowView
}

// Plan is everything a merge will do, known from headers alone.
type Plan struct {
	Opts    Options
	Method  Method
	Base    *mmapio.Model
	Models  []*mmapio.Model
	Jobs    []Job
	Layout  *mmapio.Layout
	Layers  int
	Merged  int64    // float elements merged, per model
	Need    []uint64 // model scope: elements to keep per model (k)
	Density []float64
	// Warnings are the policies the merge applies that the user may not
	// expect, found from headers; they never stop a merge.
	Warnings []Warning

	InputBytes, OutputBytes int64
	// tuning: the engine's knobs, which tests change.
	tuning tuning

	BlockElems, Workers int
	MemoryBound         int64
	LowsBytes           int64          // exact-k trims and per-tensor selects: the lists of values in the threshold's bin or band
	config              map[string]any // the base's config.json, nil if it has none
	// Frankenmerge: the slices (nil for a merge of whole models), the
	// output's layers, and the models read besides the base and Models.
	slices   []Slice
	layerMap []LayerSource
	others   []*mmapio.Model
	// vocab: the output vocabulary and each model's rows (tokenizer_source);
	// vocabBase and vocabModels: the index in it of the base and of each model.
	vocab       *vocabMap
	vocabBase   int
	vocabModels []int
	// HotBytes: a per-tensor trim keeps a tensor of at most this many input
	// bytes mapped from its first read to its merge (no second page faults).
	HotBytes int64
	// Adapters: the inputs given as a model plus a LoRA adapter; adapted:
	// their tensors that read as W + s·(B·A), by the tensor the job holds.
	Adapters []AdapterUse
	adapted  map[*mmapio.Tensor]*adapted
	// fileBytes: the input files' size, the most of them mapped at once
	// (0: unknown); heapLimit: the Go heap's share of MaxMemory (0: none).
	fileBytes, heapLimit int64
	// emr: EMR-Merging's output (emr.go); Layout is then a task's model.
	emr *emrPlan
}

// tuning holds the sizes of samples and the limits of the strategies: the
// constants of the engine, set by NewPlan, which tests lower to reach every
// path on small inputs.
type tuning struct {
	// The single pass samples one run of sampleChunk elements in every
	// sampleEvery, unless the model has fewer than sampleMin elements (then
	// all of them).
	sampleEvery int
	sampleMin   int64
	sampleChunk int64
	// firstSample, if not 0: the whole-model single pass first tries a
	// sample of about this many elements per model, and keeps it if it
	// puts every threshold on one value (nothing to spill).
	firstSample int64
	// A per-tensor select samples tensors of at least tensorSampled
	// elements, one run in tensorSampleEvery, but at least tensorSampleMin
	// of them (see sampled.go).
	tensorSampled, tensorSampleMin int64
	tensorSampleEvery              int
	// soloBytes: per-tensor trims of tensors of at most this many input
	// bytes are merged side by side, each by one worker (solo.go).
	soloBytes int64
	// sideEntries: room per worker and model for a sample's |τ| with low
	// bits (select.go's const of that name).
	sideEntries int
	// trace, if set, hears of each step the engine takes for a job.
	trace func(ji int, step string)
}

func defaultTuning() tuning {
	return tuning{sampleEvery: sampleEvery, sampleMin: sampleMinElems, sampleChunk: sampleChunk,
		tensorSampled: tensorSampledElems, tensorSampleMin: tensorSampleMinElems, tensorSampleEvery: tensorSampleEvery,
		soloBytes: soloBytes, sideEntries: sideEntries}
}

// The whole-model selection's passes.
const (
	passHigh = "select: |τ| high-bits histogram"
	passLow  = "select: |τ| low-bits histogram"
)

// Passes names the passes over the inputs, in order. Per-tensor passes read
// a tensor again while it is hot in the page cache.
func (p *Plan) Passes() []string {
	m := p.Method
	if m.OwnPath == PathEMR {
		return []string{"emr: elect U and the masks, write them, sum |τ| and |M·U| exactly"}
	}
	if p.singlePass() {
		sample := "one run in " + fmt.Sprint(p.tuning.sampleEvery)
		if p.tuning.firstSample > 0 {
			sample = fmt.Sprintf("%dM elements first, one run in %d if that leaves a band wide", p.tuning.firstSample>>20, p.tuning.sampleEvery)
		}
		return []string{"single pass: sample |τ| (" + sample +
			") to bracket each threshold, merge what is decided, spill the rest; settle the spill exactly"}
	}
	var ps []string
	if m.Trim && p.trims() && m.Scope == ScopeModel {
		ps = append(ps, passHigh)
		if !m.ApproxTopK {
			ps = append(ps, passLow)
		}
	}
	if m.OwnPath == PathPCB && m.PCB.Scope == ScopeModel {
		ps = append(ps, passHigh, passLow, "select: β high-bits histogram and maximum", "select: β low-bits histogram")
	}
	var per []string
	if m.Trim && p.trims() && m.Scope == ScopeTensor {
		per = append(per, "|τ| select (a sample, then one pass, or none where the sample puts each threshold on a tie group; radix histograms for small tensors)")
	}
	if m.Rescale == RescaleL1 && m.Sparsifies() {
		per = append(per, "L1 norms")
	}
	if m.ModelStock {
		per = append(per, "cosines")
	}
	if m.Sphere.Kind != SphereNone {
		per = append(per, "Gram matrix")
	}
	if m.OwnPath == PathSCE {
		per = append(per, "variance select (radix histograms, where select_topk < 1), mean squares")
	}
	if m.OwnPath == PathArceeFusion {
		per = append(per, "importance quartiles (radix histograms)")
	}
	if m.OwnPath == PathPCB && m.PCB.Scope == ScopeTensor {
		per = append(per, "|τ| clip bounds and β drop thresholds (radix histograms)")
	}
	if m.Slerp != SlerpNone && p.slerpSums() {
		per = append(per, "norms and dot products")
	}
	if len(per) > 0 {
		ps = append(ps, "per tensor, hot in cache: "+strings.Join(per, ", "))
	}
	return append(ps, "merge")
}

func (p *Plan) trims() bool {
	if p.Method.Scope == ScopeModel {
		for _, k := range p.Need {
			if k <= uint64(p.Merged) {
				return true
			}
		}
		return false
	}
	for _, j := range p.Jobs {
		for _, k := range j.Need {
			if k > 0 && k < uint64(j.Elements) {
				return true
			}
		}
	}
	return false
}

func floatDType(s string) (kernels.DType, bool) {
	switch s {
	case "F32":
		return kernels.F32, true
	case "F16":
		return kernels.F16, true
	case "BF16":
		return kernels.BF16, true
	}
	return 0, false
}

// copyable are the dtypes carried over from the base unmerged.
var copyable = []string{"BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64"}

// vocabTensor reports whether a tensor is an embedding or output head,
// whose rows are tokens (rowview.go).
func vocabTensor(name string) bool {
	return strings.Contains(name, "embed_tokens") || strings.Contains(name, "lm_head") ||
		strings.Contains(name, "wte") || strings.Contains(name, "word_embeddings")
}

func shapeString(s []int64) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// NewPlan opens every header, checks everything that can be checked without
// reading tensor data, and lays out the output. All problems found are
// returned together.
func NewPlan(opts Options, m Method, resolve Resolver) (*Plan, error) {
	if len(opts.Models) > 0 {
		if err := checkOwnModels(m, len(opts.Models)); err != nil {
			return nil, err
		}
	}
	return newPlan(opts, m, nil, func(p *Plan, outDT *kernels.DType) []error {
		p.Layers = opts.Layers
		if p.Layers == 0 {
			for _, name := range p.Base.Names {
				if l, ok := config.LayerIndex(name); ok && l+1 > p.Layers {
					p.Layers = l + 1
				}
			}
		}
		var errs []error
		for _, name := range p.Base.Names {
			job, jerrs := p.newJob(name, outDT, resolve)
			errs = append(errs, jerrs...)
			if len(jerrs) == 0 {
				p.Jobs = append(p.Jobs, job)
			}
		}
		return errs
	})
}

// newPlan is NewPlan with the jobs made by jobs; open, if not nil, opens the
// models the jobs read besides the base and the models, before the output's
// destination is checked against every input.
func newPlan(opts Options, m Method, open func(p *Plan) error, jobs func(p *Plan, outDT *kernels.DType) []error) (*Plan, error) {
	if len(opts.Models) < 1 && m.Slerp != SlerpPair {
		return nil, errors.New("nothing to merge: give at least one fine-tuned model besides the base")
	}
	if opts.Kernels == nil {
		opts.Kernels = kernels.Generic
	}
	if err := m.CheckCompute(); err != nil {
		return nil, err
	}
	p := &Plan{Opts: opts, Method: m, tuning: defaultTuning()}
	var errs []error
	var err error
	if p.Base, err = p.openInput(opts.Base, "", 0); err != nil {
		return nil, fmt.Errorf("base model: %w", err)
	}
	if p.config, err = readConfig(p.Base.Dir); err != nil {
		return nil, fmt.Errorf("base model: %w", err)
	}
	if err := checkExtras(p.Base.Dir); err != nil {
		return nil, fmt.Errorf("base model: %w", err)
	}
	if err := p.openModels(); err != nil {
		return nil, err
	}
	if open != nil {
		if err := open(p); err != nil {
			return nil, err
		}
	}
	if err := p.checkOutput(); err != nil {
		errs = append(errs, err)
	}
	if opts.Vocab.Source != "" {
		if err := p.readVocab(); err != nil {
			return nil, err
		}
	}
	var outDT *kernels.DType
	if opts.OutDType != "" {
		dt, err := kernels.ParseDType(opts.OutDType)
		if err != nil {
			errs = append(errs, fmt.Errorf("out_dtype: %w", err))
		}
		outDT = &dt
	}

	errs = append(errs, jobs(p, outDT)...)
	errs = append(errs, p.checkAdaptedRows())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := p.sizeTrim(); err != nil {
		return nil, err
	}
	if err := p.checkPCB(); err != nil {
		return nil, err
	}
	if p.coarseInputs() {
		p.tuning.firstSample = firstSampleElems
	}
	p.findWarnings()

	outs := make([]mmapio.OutTensor, len(p.Jobs))
	for i, j := range p.Jobs {
		outs[i] = mmapio.OutTensor{Name: j.Name, DType: j.OutDType, Shape: j.Shape}
		p.OutputBytes += j.Elements * int64(j.OutDT.Size())
		if j.Copy {
			p.OutputBytes += j.Base.Size - j.Elements*int64(j.OutDT.Size())
		}
	}
	if p.Layout, err = mmapio.PlanLayout(outs, opts.ShardBytes); err != nil {
		return nil, err
	}
	if err := p.planEMR(); err != nil {
		return nil, err
	}
	if err := p.sizeMemory(); err != nil {
		return nil, err
	}
	return p, nil
}

// slot is the index in the plan's Models of the job's input i.
func (j *Job) slot(i int) int {
	if j.Slots == nil {
		return i
	}
	return j.Slots[i]
}

// width is the most models one job merges: the workers' scratch holds as
// many. A frankenmerge's slices may each merge fewer than the plan's Models.
func (p *Plan) width() int {
	if p.slices == nil {
		return len(p.Models)
	}
	n := 0
	for _, s := range p.slices {
		n = max(n, len(s.Models))
	}
	return n
}

// openModels opens every model (a model, BASE+ADAPTER or an adapter
// folder), reporting every one that fails.
func (p *Plan) openModels() error {
	var errs []error
	for i, path := range p.Opts.Models {
		md, err := p.openInput(path, p.Opts.Base, i+1)
		if err != nil {
			errs = append(errs, fmt.Errorf("model %d: %w", i+1, err))
			continue
		}
		p.Models = append(p.Models, md)
	}
	return errors.Join(errs...)
}

func (p *Plan) checkOutput() error {
	return mmapio.CheckDestination(p.Opts.Out, p.Opts.Force, p.inputPaths())
}

// inputPaths are every file and folder a merge reads: what its output may
// never be, hold or lie inside.
func (p *Plan) inputPaths() []string {
	var paths []string
	for _, md := range append(p.inputs(), p.adapterFiles()...) {
		paths = append(paths, md.Path, md.Dir)
		paths = append(paths, md.Files...)
		if md.Index != "" {
			paths = append(paths, md.Index)
		}
	}
	return paths
}

// newJob checks one tensor of the base against the models and resolves its
// parameters: a job to merge, or one to copy if it is not a float tensor.
func (p *Plan) newJob(name string, outDT *kernels.DType, resolve Resolver) (Job, []error) {
	bt := p.Base.Tensors[name]
	job := Job{Name: name, Base: bt, Shape: bt.Shape, Elements: bt.Elements(), OutDType: bt.DType}
	bdt, isFloat := floatDType(bt.DType)
	if !isFloat {
		if !slices.Contains(copyable, bt.DType) {
			return job, []error{fmt.Errorf("%s: tensor %q: dtype %s is not supported (merged: F32, F16, BF16; copied: integer and bool)", bt.File, name, bt.DType)}
		}
		job.Copy = true
		return job, nil
	}
	job.BaseDT, job.OutDT = bdt, bdt
	if outDT != nil {
		job.OutDT = *outDT
		job.OutDType = outDT.String()
	}
	if p.adapted[bt] != nil {
		job.BaseDT = kernels.F32 // read as W + s·(B·A); written in W's dtype
	}
	if errs := p.jobModels(&job); len(errs) > 0 {
		return job, errs
	}
	layer, ok := config.LayerIndex(name)
	if !ok {
		layer = -1
	}
	tp, err := resolve(name, layer, p.Layers)
	if err != nil {
		return job, []error{fmt.Errorf("tensor %q: %w", name, err)}
	}
	if len(tp.Weights) != len(p.Models) || len(tp.Density) != len(p.Models) {
		return job, []error{fmt.Errorf("tensor %q: parameters resolved for %d models, want %d", name, len(tp.Weights), len(p.Models))}
	}
	job.Params = tp
	p.passThrough(&job)
	return job, p.checkParams(name, tp)
}

// jobModels finds the job's tensor in every model and checks its dtype and
// shape against the base's.
func (p *Plan) jobModels(job *Job) []error {
	var errs []error
	name, bt := job.Name, job.Base
	for i, md := range p.Models {
		t, ok := md.Tensors[name]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: tensor %q: missing from model %d, which the base %s has", md.Path, name, i+1, bt.File))
			continue
		}
		dt, err := p.inputDType(name, bt, t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if p.adapted[t] != nil {
			dt = kernels.F32 // read as W + s·(B·A)
		}
		job.Models = append(job.Models, t)
		job.ModelDT = append(job.ModelDT, dt)
	}
	if len(errs) == 0 && p.embedding(name, bt) {
		if err := p.alignRows(job); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// inputDType checks a model's input t of output tensor name against the
// base's bt: a float dtype, the same shape (an embedding's may differ:
// alignRows lays it out).
func (p *Plan) inputDType(name string, bt, t *mmapio.Tensor) (kernels.DType, error) {
	dt, ok := floatDType(t.DType)
	if !ok {
		return 0, fmt.Errorf("%s: tensor %q: dtype %s cannot be merged (want F32, F16 or BF16)", t.File, t.Name, t.DType)
	}
	if !slices.Equal(t.Shape, bt.Shape) && !p.embedding(name, bt) {
		return 0, fmt.Errorf("tensor %q: shape %s in %s but %s in the base %s", name, shapeString(t.Shape), t.File, shapeString(bt.Shape), bt.File)
	}
	return dt, nil
}

// checkParams checks a tensor's resolved parameters against the method's
// ranges: every problem, model by model.
func (p *Plan) checkParams(name string, tp TensorParams) []error {
	var errs []error
	for i, d := range tp.Density {
		// Every sparsifying method reads density as a fraction kept.
		if p.Method.Sparsifies() && !(d > 0 && d <= 1) {
			errs = append(errs, fmt.Errorf("tensor %q: model %d: density %v outside (0, 1]", name, i+1, d))
		}
		if p.Method.Drop == DropDella && d > 0 && d < 1 {
			eps := paramAt(tp.Epsilon, i)
			if !(eps >= 0 && d-eps > 0 && d+eps < 1) {
				errs = append(errs, fmt.Errorf("tensor %q: model %d: della needs 0 < density ± epsilon < 1, but density %v and epsilon %v give [%v, %v]", name, i+1, d, eps, d-eps, d+eps))
			}
		}
		if g := paramAt(tp.Gamma, i); p.Method.Outliers && !(g >= 0 && g < 1) {
			errs = append(errs, fmt.Errorf("tensor %q: model %d: gamma %v outside [0, 1)", name, i+1, g))
		}
		if w := float64(tp.Weights[i]); math.IsNaN(w) || math.IsInf(w, 0) {
			errs = append(errs, fmt.Errorf("tensor %q: model %d: weight %v is not finite", name, i+1, w))
		}
	}
	if p.Method.Slerp != SlerpNone && (math.IsNaN(tp.T) || math.IsInf(tp.T, 0)) {
		errs = append(errs, fmt.Errorf("tensor %q: t %v is not finite", name, tp.T))
	}
	if l := float64(tp.Lambda); math.IsNaN(l) || math.IsInf(l, 0) {
		errs = append(errs, fmt.Errorf("tensor %q: lambda %v is not finite", name, l))
	}
	return append(errs, p.checkOwnParams(name, tp)...)
}

// paramAt is model i's value of a per-model parameter, NaN if it has none.
func paramAt(vals []float64, i int) float64 {
	if i < len(vals) {
		return vals[i]
	}
	return math.NaN()
}

// coarseInputs reports whether every merged input is bf16: its task vectors
// hold few distinct magnitudes, so a small sample often narrows every band to
// one value already.
func (p *Plan) coarseInputs() bool {
	for _, j := range p.Jobs {
		if j.Copy {
			continue
		}
		if j.BaseDT != kernels.BF16 {
			return false
		}
		for _, dt := range j.ModelDT {
			if dt != kernels.BF16 {
				return false
			}
		}
	}
	return true
}

// sizeTrim works out how many elements each trim keeps.
func (p *Plan) sizeTrim() error {
	if !p.Method.Trim {
		return nil
	}
	n := len(p.Models)
	for _, j := range p.Jobs {
		if !j.Copy {
			p.Merged += j.Elements
		}
	}
	if p.Method.Scope == ScopeModel {
		// One density per model: the threshold is over every element.
		p.Density = make([]float64, n)
		set := make([]bool, n)
		for _, j := range p.Jobs {
			if j.Copy {
				continue
			}
			for i, d := range j.Params.Density {
				if !set[i] {
					p.Density[i], set[i] = d, true
				} else if p.Density[i] != d {
					return fmt.Errorf("trim_scope model: model %d has density %v for tensor %q but %v elsewhere; whole-model trimming needs one density per model (use trim_scope: tensor for per-tensor densities)", i+1, d, j.Name, p.Density[i])
				}
			}
		}
		p.Need = make([]uint64, n)
		for i, d := range p.Density {
			p.Need[i] = p.keep(d, p.Merged)
		}
		return nil
	}
	var errs []error
	for ji := range p.Jobs {
		j := &p.Jobs[ji]
		if j.Copy {
			continue
		}
		j.Need = make([]uint64, len(j.Models))
		if p.Method.Outliers {
			j.NeedTop = make([]uint64, len(j.Models))
		}
		for i, d := range j.Params.Density {
			j.Need[i] = p.keep(d, j.Elements)
			if p.Method.Outliers && d < 1 {
				// Breadcrumbs: drop the top gamma fraction, keep the next
				// density fraction; the top shrinks if both exceed the tensor.
				e := j.Elements
				target, top := int64(d*float64(e)), int64(j.Params.Gamma[i]*float64(e))
				top = max(0, min(top, e-target))
				j.Need[i], j.NeedTop[i] = uint64(target+top), uint64(top)
			}
			if j.Need[i] == 0 && d < 1 {
				errs = append(errs, fmt.Errorf("tensor %q: model %d: density %v keeps no element of %d (k = ⌊n·density⌋ = 0)", j.Name, i+1, d, j.Elements))
			}
		}
	}
	return errors.Join(errs...)
}

// MergedOf is Merged for model i of Models: in a frankenmerge, the elements
// of the slices that merge the model.
func (p *Plan) MergedOf(i int) int64 {
	if p.slices == nil || !p.Method.Trim {
		return p.Merged
	}
	var n int64
	for _, j := range p.Jobs {
		if !j.Copy && slices.Contains(j.Slots, i) {
			n += j.Elements
		}
	}
	return n
}

// keep is the k of the tie rule; a k of n or more means no trim.
func (p *Plan) keep(density float64, n int64) uint64 {
	if density >= 1 {
		return uint64(n) + 1
	}
	k := uint64(density * float64(n))
	if p.Method.Ties == KeepTies {
		k++
	}
	return k
}

// Memory accounting, in bytes.
const (
	histBytes     = int64(unsafe.Sizeof(topk.Hist{}))
	sumBytes      = int64(unsafe.Sizeof(exactSum{}))
	fixedOverhead = 48 << 20 // Go runtime, binary, headers, GC slack
	faultSpan     = 2 << 20  // the most one page fault maps: a PMD-sized folio
	maxHotBytes   = 512 << 20
	workerStack   = 64 << 10 // the goroutines a worker runs on at once
)

// Bytes per block of the structures kept per block of a pass. Passes over
// the whole model (its trim) hold the pass's list of blocks, the sample's
// and one more (a select's list while the next is made), and with exact-k
// ties per model the blocks' tie budgets and tie counts. Per-tensor passes
// hold at most, in a speculative merge that falls back to the radix select:
// the lists of the tensor's blocks, of its blocks to merge again and of a
// select; the records of votes and of a flag per block; and per model the
// records of values kept and at the threshold, the tie counts and budgets,
// and the counts of the blocks past the cut (or, in a sampled select, its
// ties and edge counts and the outlier cut's budgets: no more).
var (
	modelBlockBytes = 3 * int64(unsafe.Sizeof(block{}))
	modelBlockTies  = int64(2 * 8) // per model
	tensorBlock     = 3*int64(unsafe.Sizeof(block{})) + int64(unsafe.Sizeof(kernels.VoteStats{})) + 1
	tensorBlockTies = int64(6 * 8) // per model
)

// grown bounds the capacity of a slice appended to until it holds x bytes:
// append grows a large slice by a quarter, rounded up to whole pages.
func grown(x int64) int64 { return x + x/4 + 16<<10 }

// stride is the workers' block length: the longest block of any job.
func (p *Plan) stride(block int) int {
	if p.Method.OwnPath == PathEMR {
		return emrBlock(block)
	}
	s := block
	if p.Method.wholeRows() || p.Method.SlerpAxis == AxisRows {
		for ji := range p.Jobs {
			s = max(s, p.jobBlock(ji, block))
		}
	}
	return s
}

// workerBytes is one worker's memory: heap, and input pages mapped.
func (p *Plan) workerBytes(block int) (heap, mapped int64) {
	m := p.Method
	n := int64(p.width())
	b := int64(p.stride(block))
	// τ per model, base, merged, out bytes, Range's indices, the fused
	// kernel's staged form, the copies of sampled runs, goroutine stacks
	heap = (n+2)*b*4 + b*4 + b*4 + int64(kernels.TiesScratch(int(n), int(b)))*4 + (n+1)*p.tuning.sampleChunk*4 + workerStack
	mapped = (n + 1) * ((releaseLag+adviseBatch)*b*4 + 2*faultSpan) // input pages read, not yet released
	if m.GlobalMajority {
		heap += 2*b*4 + n*b*4 + b*4 + 4*b // zero sums: sums and maxima, negated columns, columns, their outputs
		// Their records before a flush, and a patch's positions and span.
		heap += grown(recordFlush+fixupBytes*b) + 12*b
	}
	if m.Trim {
		// Histograms; the sampled |τ| with low bits, and their copy
		// gathered from every worker.
		heap += n*histBytes + 2*n*int64(p.tuning.sideEntries)*4
	}
	if p.singlePass() {
		rec := 4 + 8 + 4 + 4*n
		heap += b + grown(4*b) + grown(recordFlush+rec*b) // marks, positions, spill records before a flush
		heap += 2*(spillChunk+rec*b) + 12*b               // spill reads queued and in work; settle's positions and patch span
	}
	if m.Rescale == RescaleL1 && m.Sparsifies() {
		heap += 2 * n * sumBytes
	}
	if m.ModelStock {
		heap += n * (n + 1) / 2 * sumBytes
	}
	if m.Sphere.Kind != SphereNone {
		heap += n * (n + 1) / 2 * sumBytes // the Gram matrix's sums
	}
	if m.Drop == DropDella {
		heap += 8 * b // a row's ranks
	}
	heap += p.ownWorkerBytes(b) + p.viewWorkerBytes(b) + p.loraWorkerBytes(b)
	return heap, mapped
}

// blocksAtOnce counts the blocks whose per-block structures a pass holds at
// once: every block of the model for a whole-model trim, and the blocks of
// one tensor (of as many as there are workers, where small tensors are
// merged side by side, solo.go) for per-tensor passes.
func (p *Plan) blocksAtOnce(block, workers int) (model, tensor int64) {
	m := p.Method
	soloable := workers >= 2 && p.soloMethod()
	var solo []int64
	for ji, j := range p.Jobs {
		if j.Copy {
			continue
		}
		c := int64(p.jobBlocks(ji, block))
		model += c
		tensor = max(tensor, c)
		if soloable && p.jobReadBytes(ji) <= p.tuning.soloBytes {
			solo = append(solo, c)
		}
	}
	slices.Sort(solo)
	var side int64
	for _, c := range solo[max(0, len(solo)-workers):] {
		side += c
	}
	if !(m.Trim && m.Scope == ScopeModel) && !(m.OwnPath == PathPCB && m.PCB.Scope == ScopeModel) {
		model = 0
	}
	return model, max(tensor, side)
}

// jobReadBytes is the input bytes of job ji.
func (p *Plan) jobReadBytes(ji int) int64 {
	j := &p.Jobs[ji]
	total := j.Elements * int64(j.BaseDT.Size())
	for _, dt := range j.ModelDT {
		total += j.Elements * int64(dt.Size())
	}
	return total
}

// lowsFor is the memory of the lists of values in a threshold's bin or
// band (exact-k trims and per-tensor selects) under a --max-memory of max.
func (p *Plan) lowsFor(maxMem int64) int64 {
	if m := p.Method; !m.Trim || m.Ties != ExactK && m.Scope != ScopeTensor {
		return 0
	}
	if maxMem <= 0 {
		return maxLowsBytes
	}
	return min(maxLowsBytes, max(minLowsBytes, maxMem/8))
}

// need is the resident memory of a merge with the workers and block size
// given and lists of lows bytes: everything but the hot tensor (HotBytes).
// mapped is its part of input pages mapped.
func (p *Plan) need(workers, block int, lows int64) (total, mapped int64) {
	n := int64(p.width())
	m := p.Method
	total = fixedOverhead
	if m.Trim {
		total += 2 * lows // append may double a list's capacity
	}
	if p.singlePass() {
		// The spill file's buffer, a read on its way to the workers, and
		// the histograms of the values it holds.
		total += recordBuffer + spillChunk + 2*n*histBytes
	}
	if m.GlobalMajority {
		// The fixup file's buffer, a read and its patch.
		total += recordBuffer + spillChunk + 12*int64(p.stride(block))
	}
	model, tensor := p.blocksAtOnce(block, workers)
	if m.Trim && m.Ties == ExactK && !m.ApproxTopK {
		total += model * (modelBlockBytes + n*modelBlockTies)
	} else {
		total += model * modelBlockBytes
	}
	total += tensor * (tensorBlock + n*tensorBlockTies)
	total += p.slerpBytes(workers) + p.arceeKLBytes() + p.viewSharedBytes(workers, block)
	heap, perWorker := p.workerBytes(block)
	mapped = int64(workers)*perWorker + p.loraMappedBytes(workers)
	if p.fileBytes > 0 {
		mapped = min(mapped, p.fileBytes) // no more than the files hold
	}
	return total + int64(workers)*heap + mapped, mapped
}

// sizeMemory picks the block size and worker count under MaxMemory. Those
// the options set are kept: if they cannot fit, the plan is refused with
// the smallest --max-memory that would fit them.
func (p *Plan) sizeMemory() error {
	for _, j := range p.Jobs {
		p.InputBytes += j.Base.Size
		if !j.Copy {
			for i, t := range j.Models {
				p.InputBytes += j.Elements * p.storedSize(t, int64(j.ModelDT[i].Size()))
			}
		}
	}
	p.fileBytes = inputFileBytes(append(p.inputs(), p.adapterFiles()...))
	maxMem := p.Opts.MaxMemory
	workers := p.Opts.Threads
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	block := p.Opts.BlockElems
	blocks := []int{block}
	if block <= 0 {
		// τ of every model plus base and result should sit in L2.
		block = kernels.L2Bytes() / (4 * (p.width() + 3))
		block = max(4096, min(65536, 1<<(bits.Len(uint(block))-1)))
		// If that does not fit: smaller blocks, then larger ones (the
		// structures kept per block may outweigh the workers' blocks).
		blocks = []int{block}
		for b := block / 2; b >= minAutoBlock; b /= 2 {
			blocks = append(blocks, b)
		}
		for b := 2 * block; b <= maxAutoBlock; b *= 2 {
			blocks = append(blocks, b)
		}
	}
	lows := p.lowsFor(maxMem)
	minWorkers := 1
	if p.Opts.Threads > 0 {
		minWorkers = workers
	}
	if maxMem > 0 {
		found := false
	search:
		for _, b := range blocks {
			for w := workers; w >= minWorkers; w-- {
				if total, _ := p.need(w, b, lows); total <= maxMem {
					workers, block, found = w, b, true
					break search
				}
			}
		}
		if !found {
			least := int64(math.MaxInt64)
			for _, b := range blocks {
				least = min(least, p.leastMemory(minWorkers, b))
			}
			return p.tooSmall(least)
		}
	}
	p.BlockElems, p.Workers, p.LowsBytes = block, workers, lows
	var mapped int64
	p.MemoryBound, mapped = p.need(workers, block, lows)
	if m := p.Method; m.Trim && m.Scope == ScopeTensor || m.OwnPath == PathPCB && m.PCB.Scope == ScopeTensor {
		p.HotBytes = maxHotBytes
		if maxMem > 0 {
			p.HotBytes = max(0, min(maxHotBytes, maxMem/4, maxMem-p.MemoryBound))
		}
		p.MemoryBound += p.HotBytes
	}
	if maxMem > 0 {
		// The Go heap's share: the garbage collector keeps it there.
		p.heapLimit = maxMem - mapped - p.HotBytes
	}
	return nil
}

// The blocks a plan sizes itself stay within these.
const (
	minAutoBlock = 1024
	maxAutoBlock = 1 << 20
)

// leastMemory is the smallest --max-memory that fits the workers and block
// size given, rounded up to a figure FormatBytes prints exactly.
func (p *Plan) leastMemory(workers, block int) int64 {
	// The lists grow with --max-memory, by an eighth of it at most.
	var m int64
	for range 100 {
		next, _ := p.need(workers, block, p.lowsFor(max(m, 1)))
		if next <= m {
			break
		}
		m = next
	}
	unit := int64(1)
	for unit*1024 <= m && unit < 1<<50 {
		unit *= 1024
	}
	if unit == 1 {
		return m
	}
	step := float64(unit) / 100
	c := math.Ceil(float64(m) / step)
	for int64(math.Floor(c*step)) < m {
		c++
	}
	return int64(math.Floor(c * step))
}

// tooSmall is the error of a --max-memory that fits no plan: least is the
// smallest that would, for the block size and workers the options set.
func (p *Plan) tooSmall(least int64) error {
	var flags []string
	if p.Opts.BlockElems > 0 {
		flags = append(flags, fmt.Sprintf("--block-size %d", p.Opts.BlockElems))
	}
	if p.Opts.Threads > 0 {
		flags = append(flags, fmt.Sprintf("--threads %d", p.Opts.Threads))
	}
	have := units.FormatBinary(p.Opts.MaxMemory)
	if len(flags) == 0 {
		return fmt.Errorf("--max-memory %s is too small: a merge of %d models needs at least %s", have, len(p.Models), units.FormatBinary(least))
	}
	names := make([]string, len(flags))
	for i, f := range flags {
		names[i], _, _ = strings.Cut(f, " ")
	}
	return fmt.Errorf("--max-memory %s is too small for %s: this merge needs at least %s; raise --max-memory or leave %s to the plan",
		have, strings.Join(flags, " and "), units.FormatBinary(least), strings.Join(names, " and "))
}

// inputFileBytes is the size of every input file, or 0 if one cannot be
// read.
func inputFileBytes(models []*mmapio.Model) int64 {
	var total int64
	seen := map[string]bool{}
	for _, md := range models {
		for _, f := range md.Files {
			if seen[f] {
				continue
			}
			seen[f] = true
			fi, err := os.Stat(f)
			if err != nil {
				return 0
			}
			total += fi.Size()
		}
	}
	return total
}
