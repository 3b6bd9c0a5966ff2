package merge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
	topk "github.com/tiesmm/tiesmm/select"
)

// Progress hears about the passes of a merge; Add is called from every worker.
// A pass's phase is one short word: select (thresholds) or merge.
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
}

// trim is one model's trim of one tensor: keep |τ| patterns ≥ bits, and at
// the threshold only the first ties[b] elements in block b (ties == nil or
// ties[b] < 0: all of them).
type trim struct {
	bits uint32
	ties []int64
}

type worker struct {
	base, tm, taus []float32
	outb           []byte
	hists          []topk.Hist // per model, for the current select pass
	kept           []uint64
	sums           []exactSum // L1 norms or dot products of one tensor
	scratch        []float32
	zneg           []float32 // the negated zero-sum columns, model by model
	zcols          []int32   // zero-sum columns of the block
	zbytes         []byte    // the −1 outputs of the zero-sum positions
	idx            []int32   // Range's indices, one block long
	fused          kernels.TiesBlock
	band           *bandState
	lows           [][]uint64 // per model: block seq<<16 | low bits of |τ| in the chosen bin
	lowsFull       bool       // lows outgrew its share of memory
	lowsCap        int
	above, inside  []uint64 // per model: values above and in the band (sampled.go)
	atHi, atLo     []uint64 // per model: values at the band's edges, where counted apart
	equal          []int    // per model: the fused kernel's count at the threshold
	votes          kernels.VoteStats
	fixups         []byte // fixup records not yet in the file
	// copyRuns: this pass copies its sampled runs into runs, one buffer per
	// input read in turn, instead of mapping them (see src).
	copyRuns bool
	runs     [][]byte
	nextRun  int
	// side: per model, the |τ| patterns with low bits of a sample's high
	// pass (topk's AddHighSide); sideFull: one did not fit.
	side     [][]uint32
	sideFull bool
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

	// The single-pass trims.
	scope   *scope
	spill   *spill
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
	// Checked again: the file system may have changed since the plan was made.
	if err := p.checkOutput(); err != nil {
		return nil, err
	}
	if r.out, err = mmapio.CreateOutput(p.Opts.Out, p.Opts.Force, p.Layout); err != nil {
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
	if p.Method.GlobalMajority {
		if r.fixFile, err = newRecordFile(r.out.TempDir(), fixupBytes); err != nil {
			return nil, err
		}
		defer r.fixFile.close()
	}

	sum := &Summary{Kernel: r.k.Name, Passes: p.Passes(), InputBytes: p.InputBytes, OutputBytes: p.OutputBytes}
	sum.Reclaimed, sum.ReclaimedBytes = r.out.Reclaimed()
	if r.uses(PathSinglePass) {
		err = r.singlePassMerge(ctx, sum)
	} else if err = r.selectThresholds(ctx, sum); err == nil {
		err = r.mergeAll(ctx)
	}
	if err != nil {
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
	sum.Warnings = slices.Clone(p.Warnings)
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
	n := len(p.Models)
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
			base: make([]float32, B), tm: make([]float32, B), taus: make([]float32, n*B),
			outb: make([]byte, 4*B), kept: make([]uint64, n), idx: make([]int32, B),
		}
		w.fused.Models, w.fused.Thr, w.fused.Kept = make([][]byte, n), make([]uint32, n), make([]int, n)
		w.fused.Scratch = make([]float32, kernels.TiesScratch(n, B))
		w.equal = make([]int, n)
		if p.Method.GlobalMajority {
			w.scratch, w.zneg = make([]float32, 2*B), make([]float32, n*B)
			w.zcols, w.zbytes = make([]int32, 0, B), make([]byte, 4*B)
		}
		if p.Method.Trim {
			w.hists = make([]topk.Hist, n)
			w.lows, w.lowsCap = make([][]uint64, n), int(p.LowsBytes/8)/(n*p.Workers)
			w.above, w.inside = make([]uint64, n), make([]uint64, n)
			w.atHi, w.atLo = make([]uint64, n), make([]uint64, n)
		}
		r.ws[i] = w
	}
	r.trims = make([][]trim, len(p.Jobs))
	r.tops = make([][]trim, len(p.Jobs))
	r.scale = make([][]float32, len(p.Jobs))
	r.stock = make([]float32, len(p.Jobs))
	r.votes = make([]kernels.VoteParams, len(p.Jobs))
	for ji, j := range p.Jobs {
		r.trims[ji] = make([]trim, n)
		r.tops[ji] = make([]trim, n)
		r.scale[ji] = make([]float32, n)
		for i := range n {
			r.scale[ji][i] = 1
		}
		r.votes[ji] = p.Method.Vote
		r.votes[ji].Weights = j.Params.Weights
	}
}

// uses reports whether some job takes path.
func (r *run) uses(path Path) bool {
	return slices.ContainsFunc(r.strategy, func(s Strategy) bool { return s.Path == path })
}

// traced tells the plan's trace, if any, that job ji took a step.
func (r *run) traced(ji int, step string) {
	if r.p.trace != nil {
		r.p.trace(ji, step)
	}
}

// block is one unit of work: elements [start, start+n) of a job.
type block struct {
	job      int
	index    int // within the job
	seq      int // within the list of blocks of a pass
	start, n int64
}

// blocks lists the blocks of the jobs, in one allocation of the exact size:
// a list grown by append would hold up to three times its bytes at once.
func (r *run) blocks(jobs []int) []block {
	count := 0
	for _, ji := range jobs {
		count += r.p.jobBlocks(ji, r.p.BlockElems)
	}
	bs := make([]block, 0, count)
	for _, ji := range jobs {
		e, B := r.p.Jobs[ji].Elements, int64(r.blockSize(ji))
		for s, b := int64(0), 0; s < e; s, b = s+B, b+1 {
			bs = append(bs, block{job: ji, index: b, seq: len(bs), start: s, n: min(B, e-s)})
		}
	}
	return bs
}

// blockCounts holds a few counts per block of a pass (by the block's
// position in the pass's list), in one allocation.
type blockCounts struct {
	per int // counts per block
	v   []int64
}

func newBlockCounts(blocks, per int) blockCounts {
	return blockCounts{per: per, v: make([]int64, blocks*per)}
}

// at is block k's counts.
func (c blockCounts) at(k int) []int64 { return c.v[k*c.per : (k+1)*c.per : (k+1)*c.per] }

// releaseLag is how many blocks behind the one just merged pages are
// released: far enough that no worker still reads them.
const releaseLag = 8

// adviseBatch is how many blocks one read-ahead or release call covers: a
// release of mapped pages interrupts every core running this process to
// flush its TLB, and each call has a fixed cost, so they come in runs.
const adviseBatch = 16

// clearPending zeroes the files' counts of blocks (or solo jobs) still to
// read them: they belong to one pass, which may have stopped on an error.
func (r *run) clearPending() {
	for _, f := range r.files {
		f.pending.Store(0)
	}
}

// parallel runs fn over the blocks with one goroutine per worker; the first
// error stops the others.
func (r *run) parallel(ctx context.Context, bs []block, fn func(w *worker, b block) error) error {
	if !r.shared {
		for _, b := range bs {
			for _, f := range r.jobFiles(b.job) {
				f.pending.Add(1)
			}
		}
		defer r.clearPending()
	}
	// Read-ahead runs about prefetchBytes of input ahead of the workers:
	// the page cache holds it, not this process, so it costs no RSS.
	lead := int64(2 * len(r.ws))
	if len(bs) > 0 {
		lead = max(lead, prefetchBytes/max(1, r.readBytes(&r.p.Jobs[bs[0].job], bs[0].n)))
	}
	// Sampled runs (not every block of the tensors) are copied (src), not
	// mapped, unless the tensor is hot: read again soon, from the mapping.
	copyRuns := false
	for k := 1; k < len(bs) && !copyRuns && !r.hot; k++ {
		copyRuns = bs[k].job == bs[k-1].job && bs[k].start != bs[k-1].start+bs[k-1].n
	}
	var next atomic.Int64
	var failed atomic.Bool
	errs := make([]error, len(r.ws))
	var wg sync.WaitGroup
	for wi, w := range r.ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.copyRuns = copyRuns
			defer func() { w.copyRuns = false }()
			for !failed.Load() {
				i := next.Add(1) - 1
				if i >= int64(len(bs)) {
					return
				}
				if err := ctx.Err(); err != nil {
					errs[wi] = err
					failed.Store(true)
					return
				}
				b := bs[i]
				if i == 0 {
					r.prefetch(bs[:min(lead, int64(len(bs)))], copyRuns)
				}
				if ahead := i + lead; i%adviseBatch == 0 && ahead < int64(len(bs)) {
					r.prefetch(bs[ahead:min(ahead+adviseBatch, int64(len(bs)))], copyRuns)
				}
				err := mmapio.Guard(func() (err error) {
					defer func() {
						if e := recover(); e != nil {
							me, ok := e.(mapError)
							if !ok {
								panic(e) // a fault: Guard turns it into an error
							}
							err = me.err
						}
					}()
					return fn(w, b)
				})
				if fe := (*mmapio.FaultError)(nil); errors.As(err, &fe) {
					err = r.faultError(b, fe)
				}
				switch end := i + 1 - releaseLag; {
				case r.hot, copyRuns:
				case end%adviseBatch == 0 && end > 0:
					r.release(bs[end-adviseBatch : end])
				}
				for _, f := range r.jobFiles(b.job) {
					if !r.shared && f.pending.Add(-1) == 0 && !r.hot {
						f.close() // unmapping releases the tail of the pass
					}
				}
				if err != nil {
					errs[wi] = err
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// src is elements [start, start+n) of t: a view of the mapping, which stays
// until the pass's last block reading the file is done (parallel counts
// them), or, in a pass over sampled runs whose pages would be released right
// after, a copy read into one of the worker's run buffers. A copy costs the
// sample's few bytes; a mapped run costs a fault and a release, each
// interrupting every core. The buffers are used in turn, one per input of a
// block, so a block's inputs never share one.
func (r *run) src(w *worker, t *mmapio.Tensor, dt kernels.DType, start, n int64) []byte {
	sz := int64(dt.Size())
	off := t.Offset + start*sz
	f := r.files[t.File]
	if w.copyRuns && n <= r.p.sampleChunk {
		if w.runs == nil {
			w.runs = make([][]byte, len(r.p.Models)+1)
			for i := range w.runs {
				w.runs[i] = make([]byte, r.p.sampleChunk*4)
			}
		}
		buf := w.runs[w.nextRun][:n*sz]
		w.nextRun = (w.nextRun + 1) % len(w.runs)
		if err := f.readAt(buf, off); err != nil {
			panic(mapError{&InputError{File: f.path, Tensor: t.Name, Err: err}}) // inside Guard: parallel returns it
		}
		return buf
	}
	data, err := f.data()
	if err != nil {
		panic(mapError{&InputError{File: f.path, Tensor: t.Name, Err: err}}) // inside Guard: parallel returns it
	}
	return data[off : off+n*sz]
}

// mapError carries a mapping or read failure out of a kernel call site.
type mapError struct{ err error }

// faultError names the input file and tensor of block b that a memory
// fault was in (a file truncated under its mapping); the block's files are
// still mapped, as parallel closes them only after. A fault outside them
// names the tensor alone.
func (r *run) faultError(b block, fe *mmapio.FaultError) error {
	var found *InputError
	r.eachTensor(b.job, func(t *mmapio.Tensor, _ int64) {
		if f := r.files[t.File]; found == nil && f != nil && f.contains(fe.Addr) {
			found = &InputError{File: f.path, Tensor: t.Name, Err: fe}
		}
	})
	if found != nil {
		return found
	}
	return fmt.Errorf("tensor %q: %w", r.p.Jobs[b.job].Name, fe)
}

// release drops the input pages of blocks bs from this process once read.
// parallel calls it a few blocks behind the workers, and each range reaches
// back by the most a single page fault maps (a PMD-sized folio of the page
// cache on recent kernels, or fault-around's 64 KiB): a fault in a block can
// map pages of the block before it, already released, which would
// otherwise stay resident for good. Dropping a page still being read is
// harmless for a read-only file mapping: it faults back from the page cache.
func (r *run) release(bs []block) {
	pad := max(int64(faultSpan), int64(os.Getpagesize()))
	r.eachInput(bs, func(f *mappedFile, off, n int64) { f.dontNeed(off-pad, n+pad) })
}

// eachTensor calls f with job ji's input tensors (the base's unless the
// method has none, then each model's) and their stored element sizes.
func (r *run) eachTensor(ji int, f func(t *mmapio.Tensor, sz int64)) {
	j := &r.p.Jobs[ji]
	if !r.p.Method.NoBase {
		f(j.Base, int64(j.BaseDT.Size()))
	}
	for i, t := range j.Models {
		f(t, int64(j.ModelDT[i].Size()))
	}
}

// eachInput calls f with the input byte range of every run of consecutive
// blocks of one tensor in bs, once per input file.
func (r *run) eachInput(bs []block, f func(file *mappedFile, off, n int64)) {
	for len(bs) > 0 {
		k := 1
		for k < len(bs) && bs[k].job == bs[0].job && bs[k].start == bs[k-1].start+bs[k-1].n {
			k++
		}
		start, n := bs[0].start, bs[k-1].start+bs[k-1].n-bs[0].start
		r.eachTensor(bs[0].job, func(t *mmapio.Tensor, sz int64) { f(r.files[t.File], t.Offset+start*sz, n*sz) })
		bs = bs[k:]
	}
}

func (r *run) readBytes(j *Job, n int64) int64 {
	total := n * int64(j.BaseDT.Size())
	for _, dt := range j.ModelDT {
		total += n * int64(dt.Size())
	}
	return total
}

// deltas fills w.taus with the untrimmed task vectors of the models selected.
func (r *run) deltas(w *worker, b block, models []int) []float32 {
	j := &r.p.Jobs[b.job]
	B := r.stride
	base := r.widenBase(w, b)
	for _, i := range models {
		t, dt := j.Models[i], j.ModelDT[i]
		r.k.DeltaTrim(w.taus[i*B:i*B+int(b.n)], r.src(w, t, dt, b.start, b.n), dt, base, 0)
	}
	return base
}

// allModels lists every model's index.
func (r *run) allModels() []int {
	ms := make([]int, len(r.p.Models))
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

// histMode is what a histPass counts.
type histMode int

const (
	histHigh     histMode = iota // the high 16 bits of |τ|
	histHighSide                 // as histHigh, and list the |τ| with low bits (sides, topk's LowFrom)
	histLow                      // the low 16 bits of the |τ| in bin hi[i]
	histLowTies                  // as histLow, and collect them for exact-k tie counts
)

// sideEntries is the room of a worker's list of one model's sampled |τ|
// with low bits: enough for bf16 inputs (about 1 % of a sample's values),
// not for f32 or f16 ones, whose samples fall back to low passes.
const sideEntries = 1 << 16

// histPass adds every selected model's |τ| of the blocks to the workers'
// histograms and returns the merged histograms: the first worker's, valid
// until the next pass.
func (r *run) histPass(ctx context.Context, bs []block, models []int, hi []uint32, mode histMode) ([]*topk.Hist, error) {
	B := r.stride
	first := r.ws[0]
	for _, i := range models {
		first.hists[i].Reset() // the others were emptied by Take
	}
	collect := mode == histLowTies && r.p.Method.Ties == ExactK
	low := mode == histLow || mode == histLowTies
	if collect {
		r.dropLows()
	}
	if mode == histHighSide {
		for _, w := range r.ws {
			if w.side == nil {
				w.side = make([][]uint32, len(r.p.Models))
				for i := range w.side {
					w.side[i] = make([]uint32, 0, r.p.sideEntries)
				}
			}
			for i := range w.side {
				w.side[i] = w.side[i][:0]
			}
			w.sideFull = false
		}
	}
	err := r.parallel(ctx, bs, func(w *worker, b block) error {
		r.deltas(w, b, models)
		for _, i := range models {
			tau := w.taus[i*B : i*B+int(b.n)]
			switch {
			case collect:
				w.addLow(r.k, i, tau, hi[i], b.seq)
			case low:
				w.addLow(r.k, i, tau, hi[i], -1)
			case mode == histHighSide:
				if !w.hists[i].AddHighSide(tau, &w.side[i]) {
					w.sideFull = true
				}
			default:
				w.hists[i].AddHigh(tau)
			}
		}
		if r.p.Method.Scope == ScopeModel {
			r.prog.Add(r.readBytes(&r.p.Jobs[b.job], b.n))
		}
		return nil
	})
	merged := make([]*topk.Hist, len(r.p.Models))
	for _, i := range models {
		merged[i] = &first.hists[i]
		for _, w := range r.ws[1:] {
			merged[i].Take(&w.hists[i])
		}
	}
	return merged, err
}

// pick runs the exact (or approximate) select for the models given,
// keeping need[i] elements of each: the sampled select if sampled (one
// tensor's, which falls back to the radix select if its sample misses), else
// the radix select. A sampled select also returns the ties at each
// threshold in every block (by block seq). sc, if not nil, is the tensor's
// sample, already read.
func (r *run) pick(ctx context.Context, bs []block, models []int, need []uint64, approx, sampled bool, sc *scope) ([]topk.Threshold, blockCounts, error) {
	if sampled {
		if th, ties, ok, err := r.sampledPick(ctx, bs, need, sc); err != nil || ok {
			return th, ties, err
		}
	}
	return r.radixPick(ctx, bs, models, need, approx)
}

// radixPick is the select by radix histograms: two passes over bs (one
// if approx).
func (r *run) radixPick(ctx context.Context, bs []block, models []int, need []uint64, approx bool) ([]topk.Threshold, blockCounts, error) {
	if r.p.Method.Scope == ScopeTensor {
		r.traced(bs[0].job, "radix")
	}
	th := make([]topk.Threshold, len(r.p.Models))
	high, err := r.histPass(ctx, bs, models, nil, histHigh)
	if err != nil {
		return nil, blockCounts{}, err
	}
	hi := make([]uint32, len(r.p.Models))
	above := make([]uint64, len(r.p.Models))
	for _, i := range models {
		if hi[i], above[i], err = high[i].Pick(need[i]); err != nil {
			return nil, blockCounts{}, fmt.Errorf("model %d: %w", i+1, err)
		}
		th[i] = topk.Approx(hi[i], above[i], high[i])
	}
	if approx {
		return th, blockCounts{}, nil
	}
	if r.p.Method.Scope == ScopeModel {
		r.prog.EndPass()
		r.prog.StartPass(phaseSelect, 2, len(r.p.Passes()), r.p.InputBytes)
	}
	low, err := r.histPass(ctx, bs, models, hi, histLowTies)
	if err != nil {
		return nil, blockCounts{}, err
	}
	for _, i := range models {
		if th[i], err = topk.Exact(need[i], hi[i], above[i], low[i]); err != nil {
			return nil, blockCounts{}, fmt.Errorf("model %d: %w", i+1, err)
		}
	}
	return th, blockCounts{}, nil
}

func (r *run) mergeJobs() []int {
	var js []int
	for ji, j := range r.p.Jobs {
		if !j.Copy {
			js = append(js, ji)
		}
	}
	return js
}

// selectThresholds finds the model-scope thresholds (tensor-scope ones are
// found tensor by tensor during the merge, while the tensor is hot).
func (r *run) selectThresholds(ctx context.Context, sum *Summary) error {
	p := r.p
	if !p.Method.Trim || p.Method.Scope != ScopeModel {
		return nil
	}
	sum.Asked = make([]uint64, len(p.Models))
	var models []int
	for i, k := range p.Need {
		sum.Asked[i] = min(k, uint64(p.Merged))
		if k <= uint64(p.Merged) {
			models = append(models, i)
		}
	}
	if len(models) == 0 {
		return nil
	}
	for _, ji := range r.mergeJobs() {
		r.traced(ji, "model-radix")
	}
	r.prog.StartPass(phaseSelect, 1, len(p.Passes()), p.InputBytes)
	th, _, err := r.pick(ctx, r.blocks(r.mergeJobs()), models, p.Need, p.Method.ApproxTopK, false, nil)
	r.prog.EndPass()
	if err != nil {
		return err
	}
	if p.Method.ApproxTopK {
		for _, b := range r.blocks(r.mergeJobs()) {
			for _, i := range models {
				r.trims[b.job][i] = trim{bits: th[i].Bits}
			}
		}
		return nil
	}
	return r.splitTies(ctx, r.trims, r.blocks(r.mergeJobs()), models, th, p.Need, blockCounts{})
}

// selectTensor finds one tensor's thresholds (tensor scope). With outliers
// (breadcrumbs) it also finds the cut above which the largest are dropped.
// sc, if not nil, is the tensor's sample for the trim, already read.
func (r *run) selectTensor(ctx context.Context, ji int, sc *scope) error {
	j := &r.p.Jobs[ji]
	bs := r.blocks([]int{ji})
	for _, sel := range []struct {
		dst  [][]trim
		need []uint64
	}{{r.trims, j.Need}, {r.tops, j.NeedTop}} {
		var models []int
		for i, k := range sel.need {
			if k > 0 && k <= uint64(j.Elements) {
				models = append(models, i)
			}
		}
		if len(models) == 0 {
			continue
		}
		th, ties, err := r.pick(ctx, bs, models, sel.need, false, r.strategy[ji].Path != PathRadix, sc)
		sc = nil // not the outliers' sample
		if err != nil {
			return tensorError(j.Name, err)
		}
		if err := r.splitTies(ctx, sel.dst, bs, models, th, sel.need, ties); err != nil {
			return err
		}
	}
	return nil
}

// splitTies applies the exact-k rule where the ties at a threshold are only
// partly kept: the ties kept are the lowest flat indices over bs, in order.
// It counts the ties of each block (unless counts, by block seq, has them),
// then hands out the budget block by block.
func (r *run) splitTies(ctx context.Context, dst [][]trim, bs []block, models []int, th []topk.Threshold, need []uint64, counts blockCounts) error {
	var split []int
	for _, i := range models {
		for _, b := range bs {
			dst[b.job][i] = trim{bits: th[i].Bits}
		}
		if r.p.Method.Ties == ExactK && th[i].Greater+th[i].Equal > need[i] {
			split = append(split, i)
		}
	}
	if len(split) == 0 {
		return nil
	}
	if counts.v != nil {
		goto share
	}
	counts = newBlockCounts(len(bs), len(r.p.Models))
	if r.countCollected(counts, split, th) {
		goto share
	}
	if err := r.parallel(ctx, bs, func(w *worker, b block) error {
		r.deltas(w, b, split)
		c := counts.at(b.seq)
		for _, i := range split {
			bits := th[i].Bits
			c[i] = int64(r.k.Range(w.taus[i*r.stride:i*r.stride+int(b.n)], bits, bits, nil))
		}
		return nil
	}); err != nil {
		return err
	}
share:
	for _, i := range split {
		left := int64(need[i] - th[i].Greater)
		for k, b := range bs {
			tr := &dst[b.job][i]
			if tr.ties == nil {
				bs := int64(r.blockSize(b.job))
				tr.ties = make([]int64, (r.p.Jobs[b.job].Elements+bs-1)/bs)
			}
			if c := counts.at(k)[i]; c <= left {
				tr.ties[b.index] = -1 // every one: the block needs no cut
				left -= c
			} else {
				tr.ties[b.index] = left
				left = 0
			}
		}
	}
	return nil
}

func (r *run) mergeAll(ctx context.Context) error {
	p := r.p
	passes := p.Passes()
	count := len(passes)
	if count > 1 && strings.HasPrefix(passes[count-2], "per tensor") {
		count-- // the per-tensor passes run inside this one
	}
	r.prog.StartPass(phaseMerge, count, count, p.InputBytes)
	defer r.prog.EndPass()
	if err := r.mergeSolo(ctx); err != nil {
		return err
	}
	var jobs []int // the rest, one by one
	for ji, s := range r.strategy {
		if !s.Solo {
			jobs = append(jobs, ji)
		}
	}
	for k, ji := range jobs {
		j := &p.Jobs[ji]
		if k == 0 {
			r.prefetchJob(ji)
		}
		if k+1 < len(jobs) {
			r.prefetchJob(jobs[k+1]) // read while this one merges
		}
		var err error
		switch r.strategy[ji].Path {
		case PathCopy:
			err = r.copyJob(ji)
		case PathModelStock:
			err = r.modelStockJob(ctx, ji)
		default:
			err = r.mergeJob(ctx, ji)
		}
		if err != nil {
			return tensorError(j.Name, err)
		}
	}
	return nil
}

// mergeJob merges one tensor as its strategy says: its thresholds and L1
// rescale first where it needs them (the tensor is then hot in the page
// cache), then the vote.
func (r *run) mergeJob(ctx context.Context, ji int) error {
	s := r.strategy[ji]
	switch s.Path {
	case PathSpeculate, PathSampled, PathRadix:
		defer r.dropTieCounts(ji)
		// Read more than once before its merge: keep it mapped if it fits.
		j := &r.p.Jobs[ji]
		if r.readBytes(j, j.Elements) <= r.p.HotBytes {
			r.hot = true
			defer r.cool(ji)
		}
		var sc *scope
		if s.Path == PathSpeculate {
			var done bool
			var err error
			if sc, done, err = r.speculateJob(ctx, ji); err != nil || done {
				return err
			}
		}
		if err := r.selectTensor(ctx, ji, sc); err != nil {
			return err
		}
	}
	if s.Rescale {
		if err := r.l1Pass(ctx, ji); err != nil {
			return err
		}
	}
	// The merge releases behind itself, and unmaps at the end; a solo
	// tensor, mapped whole already, is released once when done.
	r.hot = r.shared
	r.traced(ji, "merge")
	return r.parallel(ctx, r.blocks([]int{ji}), r.mergeBlock)
}

// dropTieCounts frees job ji's per-block tie budgets once it is merged:
// the plan counts one tensor's at a time for per-tensor trims.
func (r *run) dropTieCounts(ji int) {
	for i := range r.trims[ji] {
		r.trims[ji][i].ties, r.tops[ji][i].ties = nil, nil
	}
}

// cool ends a hot tensor's stay: its files are unmapped unless a pass
// still reads them.
func (r *run) cool(ji int) {
	r.hot = false
	if r.shared {
		return // the solo job releases the tensor when it is done
	}
	for _, f := range r.jobFiles(ji) {
		if f.pending.Load() == 0 {
			f.close()
		}
	}
}

// copyJobs copies every tensor that is not merged.
func (r *run) copyJobs() error {
	for ji, j := range r.p.Jobs {
		if j.Copy {
			if err := r.copyJob(ji); err != nil {
				return tensorError(j.Name, err)
			}
		}
	}
	return nil
}

func (r *run) copyJob(ji int) error {
	r.traced(ji, "copy")
	j := &r.p.Jobs[ji]
	const chunk = 8 << 20
	f := r.files[j.Base.File]
	defer f.close()
	all, err := f.data()
	if err != nil {
		return &InputError{File: f.path, Tensor: j.Name, Err: err}
	}
	data := all[j.Base.Offset : j.Base.Offset+j.Base.Size]
	err = mmapio.Guard(func() error {
		for off := int64(0); off < j.Base.Size; off += chunk {
			end := min(off+chunk, j.Base.Size)
			if err := r.out.WriteTensor(j.Name, off, data[off:end]); err != nil {
				return err
			}
			r.prog.Add(end - off)
		}
		return nil
	})
	switch {
	case errors.Is(err, mmapio.ErrFault):
		return &InputError{File: f.path, Tensor: j.Name, Err: err}
	case errors.Is(err, syscall.EFAULT):
		// The write read the mapping in the kernel, which faulted.
		return &InputError{File: f.path, Tensor: j.Name, Err: fmt.Errorf("%w (copying it out: %v)", mmapio.ErrFault, err)}
	}
	return err
}

func (r *run) mergeBlock(w *worker, b block) error {
	if r.fusedThresholds(w, b) {
		return r.mergeBlockFused(w, b, nil)
	}
	p := r.p
	j := &p.Jobs[b.job]
	n := int(b.n)
	base := r.widenBase(w, b)
	for i := range j.Models {
		tau := w.taus[i*r.stride : i*r.stride+n]
		kept := r.taskVector(w, b, i, tau, base)
		if sc := r.scale[b.job][i]; sc != 1 {
			for e := range tau {
				tau[e] *= sc
			}
		}
		if p.Method.Sparsifies() {
			w.kept[i] += uint64(kept)
		}
	}
	return r.voteAndFinish(w, b, base)
}

// dropTies zeroes the elements at the threshold after the first keep of them.
func (w *worker) dropTies(k *kernels.Set, tau []float32, bits uint32, keep int64) int {
	at := w.idx[:k.Range(tau, bits, bits, w.idx)]
	if keep >= int64(len(at)) {
		return 0
	}
	for _, e := range at[keep:] {
		tau[e] = 0
	}
	return len(at) - int(keep)
}

// fusedThresholds reports whether block b's merge is one call of the fused
// kernel (its strategy allows it, and the block's trim cuts no tie group and
// has no rescale) and sets w.fused.Thr.
func (r *run) fusedThresholds(w *worker, b block) bool {
	if !r.strategy[b.job].Fused {
		return false
	}
	for i, tr := range r.trims[b.job] {
		bits := tr.bits
		if tr.ties != nil {
			switch keep := tr.ties[b.index]; {
			case keep == 0:
				bits++
			case keep > 0:
				return false
			}
		}
		if r.scale[b.job][i] != 1 {
			return false
		}
		w.fused.Thr[i] = bits
	}
	return true
}

// mergeBlockFused merges a block in one sweep of the fused kernel. Zero sums
// (paper preset) come back as indices; only their columns are computed
// again, for the record of their −1 outputs. equal, if not nil, receives per
// model the count of values at its threshold.
func (r *run) mergeBlockFused(w *worker, b block, equal []int) error {
	r.traced(b.job, "fused")
	p := r.p
	j := &p.Jobs[b.job]
	n, sz := int(b.n), j.OutDT.Size()
	fb := &w.fused
	fb.Dst, fb.OutDT, fb.DT = w.outb[:n*sz], j.OutDT, j.BaseDT
	fb.Base = r.src(w, j.Base, j.BaseDT, b.start, b.n)
	for i, t := range j.Models {
		fb.Models[i] = r.src(w, t, j.BaseDT, b.start, b.n)
	}
	fb.Vote, fb.Lambda, fb.Equal, fb.Zero = &r.votes[b.job], j.Params.Lambda, equal, nil
	if p.Method.GlobalMajority {
		fb.Zero = w.idx[:n]
	}
	st := r.k.Ties(fb)
	w.votes.Add(st)
	if p.Method.Sparsifies() {
		for i, k := range fb.Kept {
			w.kept[i] += uint64(k)
		}
	}
	if p.Method.GlobalMajority && st.ZeroSum > 0 {
		// Their task vectors, read in place and negated.
		zs := w.idx[:st.ZeroSum]
		nm, m := len(j.Models), len(zs)
		neg, base := w.zneg[:nm*m], w.scratch[r.stride:r.stride+m]
		kernels.ColumnDeltas(base, neg, fb.Base, fb.Models[:nm], j.BaseDT, zs, fb.Thr[:nm])
		for c := range neg {
			neg[c] = -neg[c]
		}
		if err := r.recordNegated(w, b.job, zs, func(e int) int64 { return b.start + int64(e) }, neg, base, fb.Vote, j.Params.Lambda); err != nil {
			return err
		}
	}
	return r.write(b, fb.Dst)
}

// recordZeroSums keeps, for each element whose vote summed to exactly zero,
// the output it gets if the model-wide majority sign turns out to be −1.
// The −1 result is the negation of the +1 result on negated inputs, so the
// kernel itself computes it, bit for bit.
func (r *run) recordZeroSums(w *worker, ji, n int, pos func(e int) int64, vp *kernels.VoteParams, lambda float32) error {
	zs := w.zcols[:0]
	r.k.FindZeroSums(w.taus, r.stride, n, vp, w.scratch, func(e int) { zs = append(zs, int32(e)) })
	w.zcols = zs
	return r.recordZeros(w, ji, zs, pos, vp, lambda)
}

// recordZeros records the −1 outputs of the zero-sum columns zs of the
// worker's block (w.taus, w.base), all at once: the negated columns are
// gathered, voted and finished in one call each.
func (r *run) recordZeros(w *worker, ji int, zs []int32, pos func(e int) int64, vp *kernels.VoteParams, lambda float32) error {
	B, nm, m := r.stride, len(r.p.Models), len(zs)
	if m == 0 {
		return nil
	}
	neg, base := w.zneg[:nm*m], w.scratch[B:B+m]
	for c, e := range zs {
		for i := range nm {
			neg[i*m+c] = -w.taus[i*B+int(e)]
		}
		base[c] = w.base[e]
	}
	return r.recordNegated(w, ji, zs, pos, neg, base, vp, lambda)
}

// recordNegated records the −1 outputs of the zero-sum elements zs of a
// block of job ji from their negated task vectors neg (model by model) and
// base values.
func (r *run) recordNegated(w *worker, ji int, zs []int32, pos func(e int) int64, neg, base []float32, vp *kernels.VoteParams, lambda float32) error {
	j := &r.p.Jobs[ji]
	m := len(zs)
	out := w.scratch[:m]
	r.k.Vote(out, neg, m, vp)
	for c := range out {
		out[c] = -out[c]
	}
	sz := j.OutDT.Size()
	outb := w.zbytes[:m*sz] // not w.outb: it may hold the block's output
	r.k.Finish(outb, j.OutDT, base, out, lambda)
	at := len(w.fixups)
	w.fixups = slices.Grow(w.fixups, m*fixupBytes)[:at+m*fixupBytes]
	for c, e := range zs {
		rec := w.fixups[at+c*fixupBytes : at+(c+1)*fixupBytes]
		binary.LittleEndian.PutUint32(rec[0:], uint32(ji))
		binary.LittleEndian.PutUint64(rec[4:], uint64(pos(int(e))))
		var v uint32 // the output's bytes, zero-padded: no call per record
		if sz == 2 {
			v = uint32(binary.LittleEndian.Uint16(outb[2*c:]))
		} else {
			v = binary.LittleEndian.Uint32(outb[4*c:])
		}
		binary.LittleEndian.PutUint32(rec[12:], v)
	}
	if len(w.fixups) >= recordFlush {
		err := r.fixFile.append(w.fixups)
		w.fixups = w.fixups[:0]
		return err
	}
	return nil
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
