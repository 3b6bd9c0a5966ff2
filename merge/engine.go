package merge

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// Progress hears about the passes of a merge; Add is called from every worker.
// A pass's phase is one short word: select (thresholds), merge, or task
// (an EMR task's model).
type Progress interface {
	StartPass(phase string, index, count int, totalBytes int64)
	Add(bytes int64)
	EndPass()
}

type noProgress struct{}

func (noProgress) StartPass(string, int, int, int64) {}

// The phases a Progress is told of.
const (
	phaseSelect = "select"
	phaseMerge  = "merge"
	phaseTask   = "task"
)

func (noProgress) Add(int64) {}
func (noProgress) EndPass()  {}

// Summary is what a merge did.
type Summary struct {
	Kernel        string
	Passes        []string
	InputBytes    int64
	OutputBytes   int64
	Asked         []uint64 // elements the trim was asked to keep, per model
	Kept          []uint64 // elements kept, per model
	Votes         kernels.VoteStats
	ZeroSumsFixed int64 // zero sums given the model-wide majority sign −1
	Sampled       int64 // single pass: elements per model read to place the bands
	Spilled       int64 // single pass: positions settled after the pass
	FellBack      int   // scopes (single pass) or tensors (per-tensor select) whose sample missed, so the radix select ran
	Crowded       int   // tensors whose sampled band held more values than the lists take, so the radix select ran
	OnePass       int   // per-tensor trims merged in one pass (the threshold on a tie group)
	Remerged      int64 // elements of those merged again at a tie cut
	Majority      int   // the model-wide majority sign (paper preset), else 0
	Elapsed       time.Duration
	PeakRSS       int64
	// Partial outputs of merges into the same place that no longer run,
	// removed before this merge started, and the bytes they held.
	Reclaimed      []string
	ReclaimedBytes int64
	Warnings       []Warning // the plan's, then those found while merging
	EMR            *EMRSummary
}

// trim is one model's trim of one tensor: keep |τ| patterns ≥ bits, and at
// the threshold only the first ties[b] elements in block b (ties == nil or
// ties[b] < 0: all of them).
type trim struct {
	bits uint32
	ties []int64
}

type worker struct {
	id             int // index in the run's workers: a strategy's per-worker scratch
	base, tm, taus []float32
	outb           []byte
	kept           []uint64   // per model of the plan's Models
	sums           []exactSum // L1 norms or dot products of one tensor
	idx            []int32    // Range's indices, one block long
	fused          kernels.TiesBlock
	equal          []int // per model: the fused kernel's count at the threshold
	votes          kernels.VoteStats
	// wide holds taus, fused's per-model slices and equal for the plan's
	// widest job; fit cuts them to the models of the job at hand.
	wide struct {
		taus   []float32
		models [][]byte
		thr    []uint32
		kept   []int
		equal  []int
	}
	// The scratch the strategies share, declared with its code; a
	// strategy's own is in its type, per worker.
	selectScratch              // the selects' histograms and lists (select.go)
	sideLists                  // a sample's |τ| with low bits (sample.go)
	zeroSumScratch             // the zero sums' columns and records (zerosum.go)
	runCopies                  // copies of sampled runs (reads.go)
	rowScratch                 // rows read through a row view (rowview.go)
	lora           loraScratch // materialised blocks of adapted inputs (lora.go)
}

type run struct {
	p      *Plan
	stride int // elements per model in the workers' scratch: the largest block
	k      *kernels.Set
	out    *mmapio.Output
	files  map[string]*mappedFile
	trims  [][]trim // per job, per model: the trim
	tops   [][]trim // per job, per model: the outliers cut (breadcrumbs)
	votes  []kernels.VoteParams
	scale  [][]float32 // per job, per model: the L1 rescale factor
	stock  []float32   // per job: Model Stock's t

	prog    Progress
	ws      []*worker
	fixFile *spill // outputs of the exact zero sums if the majority sign is −1
	missed  int    // sampled per-tensor selects whose bands missed
	crowded int    // sampled per-tensor selects whose bands held too many values
	// tensorSigmas: the width of a tensor's sampled bands (tensorBandSigmas)
	tensorSigmas float64
	// Per-tensor trims merged in one pass (speculate.go), and the elements
	// they merged again at a tie cut.
	onePass  int
	remerged int64
	// hot: the passes neither release nor unmap the tensor's input pages
	// (set between passes, read by their workers).
	hot bool
	// shared: other runs read the same files side by side (solo.go): the
	// passes never unmap a file, whose pages are released instead.
	shared bool
	// strategy: per job, the plan's Strategy, which the passes follow.
	strategy []Strategy
	// Per job, its strategy's implementation (paths) and the one the pass
	// driver calls (impl: the solo batch for a solo tensor).
	paths, impl []tensorStrategy
	sum         *Summary
	// views: the inputs read through row views (rowview.go); padMeans, per
	// job and model, the row its pad rows take.
	views    map[*mmapio.Tensor]inputView
	padMeans [][][]float32
}

// Interrupted is Run's error when its context was canceled (an interrupt):
// the merge stopped and the partial output directory was removed.
type Interrupted struct {
	Partial   string // the hidden directory the output was being built in
	RemoveErr error  // why removing it failed, if it did
	Err       error  // what the merge returned, the context's error among it
}

func (e *Interrupted) Error() string {
	if e.RemoveErr != nil {
		return fmt.Sprintf("interrupted; could not remove the partial output %s: %v", e.Partial, e.RemoveErr)
	}
	return "interrupted; removed the partial output " + e.Partial
}

func (e *Interrupted) Unwrap() error { return e.Err }

// Run executes the plan. Nothing is visible at the destination unless it
// succeeds; on any error the partial output is removed.
func Run(ctx context.Context, p *Plan, prog Progress, extraFiles map[string][]byte) (_ *Summary, err error) {
	start := time.Now()
	if prog == nil {
		prog = noProgress{}
	}
	r := &run{p: p, k: p.Opts.Kernels, prog: prog}
	if p.heapLimit > 0 {
		// Garbage of passes past is collected before the heap outgrows
		// its share of the bound, not only when it doubles.
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(p.heapLimit))
	}
	r.openFiles()
	defer r.closeFiles()
	// The destination is checked again: the file system may have changed
	// since the plan was made.
	if r.out, err = mmapio.CreateOutputParts(p.Opts.Out, p.Opts.Force, p.outputParts(), p.inputPaths()...); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			aerr := r.out.Abort()
			if ctx.Err() != nil {
				err = &Interrupted{Partial: r.out.TempDir(), RemoveErr: aerr, Err: err}
			}
		}
	}()
	r.setup()
	r.setupViews()
	if err := r.vocabPads(ctx); err != nil {
		return nil, err
	}
	if p.Method.GlobalMajority {
		if r.fixFile, err = newRecordFile(r.out.TempDir(), fixupBytes); err != nil {
			return nil, err
		}
		defer r.fixFile.close()
	}

	sum := &Summary{Kernel: r.k.Name, Passes: p.Passes(), InputBytes: p.InputBytes, OutputBytes: p.OutputBytes}
	sum.Reclaimed, sum.ReclaimedBytes = r.out.Reclaimed()
	if p.Method.Trim && p.Method.Scope == ScopeModel {
		sum.Asked = make([]uint64, len(p.Models))
		for i, k := range p.Need {
			sum.Asked[i] = min(k, uint64(p.Merged))
		}
	}
	r.sum = sum
	if err := r.mergeAll(ctx); err != nil {
		return nil, err
	}
	sum.FellBack += r.missed
	sum.Crowded = r.crowded
	sum.OnePass, sum.Remerged = r.onePass, r.remerged
	sum.Kept = make([]uint64, len(p.Models))
	for _, w := range r.ws {
		for i, k := range w.kept {
			sum.Kept[i] += k
		}
		sum.Votes.Add(w.votes)
	}
	sum.Warnings = append(slices.Clone(p.Warnings), sum.Warnings...) // the plan's, then the merge's
	if p.Method.GlobalMajority {
		sum.Majority = 1
		// The paper: sign(Σ elected signs); a zero total leaves the sign 0,
		// which its code resolves to the negative side.
		if sum.Votes.Positive <= sum.Votes.Negative {
			sum.Majority = -1
			if sum.ZeroSumsFixed, err = r.applyFixups(); err != nil {
				return nil, err
			}
		}
	}
	if r.fixFile != nil {
		r.fixFile.close() // before Commit moves the temporary directory into place
	}
	if p.emr != nil {
		if err := r.finishEMR(ctx); err != nil {
			return nil, err
		}
	}
	if err := r.writeExtras(extraFiles); err != nil {
		return nil, err
	}
	if err := r.out.Commit(); err != nil {
		return nil, err
	}
	sum.Elapsed = time.Since(start)
	sum.PeakRSS = PeakRSS()
	return sum, nil
}

func (r *run) setup() {
	p := r.p
	n := p.width()
	r.stride = p.BlockElems
	r.tensorSigmas = tensorBandSigmas
	r.strategy = p.Strategies()
	for ji := range p.Jobs {
		r.stride = max(r.stride, r.blockSize(ji))
	}
	B := r.stride
	r.ws = make([]*worker, p.Workers)
	for i := range r.ws {
		w := &worker{
			id:   i,
			base: make([]float32, B), tm: make([]float32, B),
			outb: make([]byte, 4*B), kept: make([]uint64, len(p.Models)), idx: make([]int32, B),
		}
		w.wide.taus = make([]float32, n*B)
		w.wide.models, w.wide.thr, w.wide.kept = make([][]byte, n), make([]uint32, n), make([]int, n)
		w.wide.equal = make([]int, n)
		w.fit(n, B)
		w.fused.Scratch = make([]float32, kernels.TiesScratch(n, B))
		if p.Method.GlobalMajority {
			w.zeroSumScratch = newZeroSumScratch(n, B)
		}
		if p.Method.Trim {
			w.selectScratch = newSelectScratch(n, int(p.LowsBytes/8)/(n*p.Workers))
		}
		r.ws[i] = w
	}
	r.newStrategies()
	r.trims = make([][]trim, len(p.Jobs))
	r.tops = make([][]trim, len(p.Jobs))
	r.scale = make([][]float32, len(p.Jobs))
	r.stock = make([]float32, len(p.Jobs))
	r.votes = make([]kernels.VoteParams, len(p.Jobs))
	for ji := range p.Jobs {
		nj := len(p.Jobs[ji].Models)
		r.trims[ji] = make([]trim, nj)
		r.tops[ji] = make([]trim, nj)
		r.scale[ji] = make([]float32, nj)
		for i := range nj {
			r.scale[ji][i] = 1
		}
		r.votes[ji] = p.jobVote(ji)
	}
}

// fit cuts the worker's per-model scratch to n models, in blocks of stride
// elements: a frankenmerge's jobs merge different numbers of models, and the
// kernels take the model count from these lengths.
func (w *worker) fit(n, stride int) {
	w.taus = w.wide.taus[:n*stride]
	w.fused.Models, w.fused.Thr, w.fused.Kept = w.wide.models[:n], w.wide.thr[:n], w.wide.kept[:n]
	w.equal = w.wide.equal[:n]
}

// traced tells the plan's trace, if any, that job ji took a step.
func (r *run) traced(ji int, step string) {
	if r.p.tuning.trace != nil {
		r.p.tuning.trace(ji, step)
	}
}

// allModels lists the index of every model of job ji.
func (r *run) allModels(ji int) []int { return indices(len(r.p.Jobs[ji].Models)) }

// indices lists 0 … n−1.
func indices(n int) []int {
	ms := make([]int, n)
	for i := range ms {
		ms[i] = i
	}
	return ms
}

// patch overwrites single elements of a job's output, given by position
// (in any order) and value: one read and one write over their span.
func (r *run) patch(j *Job, elems []int64, val func(g int) []byte) error {
	sz := int64(j.OutDT.Size())
	first, last := slices.Min(elems), slices.Max(elems)
	span := make([]byte, (last-first+1)*sz)
	if err := r.out.ReadTensor(j.Name, first*sz, span); err != nil {
		return err
	}
	for g, e := range elems {
		copy(span[(e-first)*sz:(e-first+1)*sz], val(g))
	}
	return r.out.WriteTensor(j.Name, first*sz, span)
}

// PeakRSS reads the process's peak resident set size (Linux), or 0.
func PeakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	var kb int64
	for _, line := range strings.Split(string(b), "\n") {
		if n, _ := fmt.Sscanf(line, "VmHWM: %d kB", &kb); n == 1 {
			return kb << 10
		}
	}
	return 0
}
