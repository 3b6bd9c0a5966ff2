// Package inspect measures the interference between fine-tunes of one base
// model before they are merged: per tensor, and summed per layer, per module
// kind and for the whole model, each task vector's norms and the mass a trim
// removes, sign conflicts over all elements and over the elements each trim
// keeps, the overlap of the kept sets, and the cosine similarity of the task
// vectors. docs/inspect.md defines every figure.
//
// It streams the inputs from their mappings in blocks, tensor by tensor, in
// two passes per tensor: the first takes the high 16 bits of every |τ|
// (histograms, as select/ finds thresholds for the merges) with lists of
// the |τ| that have low bits, and everything no trim changes; the second
// the trims at the exact top-k thresholds. A model whose list overflows
// takes a low-bit pass between them. Counts are integers and sums are exact
// (Acc) over the kernels' float64 sums of fixed 1024-element chunks, so the
// results do not depend on the thread count, the block size or the kernel
// set.
package inspect

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
	topk "github.com/tiesmm/tiesmm/select"
)

// ChunkElems is the span of one float64 partial sum; blocks hold a whole
// number of chunks.
const ChunkElems = kernels.SumChunk

// MaxModels is the most fine-tunes one inspection compares (a mask bit each).
const MaxModels = 64

// Progress hears about the work, as a merge's does; Add is called from every
// worker with the bytes of input read.
type Progress interface {
	StartPass(phase string, index, count int, totalBytes int64)
	Add(bytes int64)
	EndPass()
}

type noProgress struct{}

func (noProgress) StartPass(string, int, int, int64) {}
func (noProgress) Add(int64)                         {}
func (noProgress) EndPass()                          {}

// Options say what to inspect and with what resources.
type Options struct {
	Base   string
	Models []string
	// Names are the models' names in the output; default: the last element
	// of each path (the whole path where two would be the same).
	Names []string
	// Densities are the trims measured, each ≥ 0; the first is the one the
	// flat fields of the JSON and the table show.
	Densities []float64
	MaxMemory int64 // bytes; 0: 2 GiB
	Threads   int   // 0: one per core
	// BlockElems is the elements per block, rounded up to a multiple of
	// ChunkElems; 0: 32768, less when the memory bound asks for it.
	BlockElems int
	Kernels    *kernels.Set // nil: kernels.Best
	Progress   Progress
}

// Passes is how many times Run reads each input, as progress counts it: a
// tensor whose thresholds need a low pass (float32 inputs, mostly) is read
// once more.
const Passes = 2

type job struct {
	name   string
	shape  []int64
	n      int64
	layer  int
	module string
	base   *mmapio.Tensor
	bdt    kernels.DType
	models []*mmapio.Tensor
	mdt    []kernels.DType
	bytes  int64 // of every input
}

// cut is one model's trim at one density, found by the select passes.
type cut struct {
	k uint64
	// bits: every |τ| pattern above it is kept; at it, the first need
	// elements (by flat index) are kept: none when need is 0, all when need
	// equals equal.
	bits  uint32
	need  uint64
	equal uint64
	all   bool // density ≥ 1: every nonzero
	none  bool // k = 0
	// set when the threshold needs the low pass
	hiBin   uint32
	aboveHi uint64
}

// partial reports whether only some of the ties at the threshold are kept.
func (c *cut) partial() bool { return !c.all && !c.none && c.bits != 0 && c.need < c.equal }

type engine struct {
	opts      Options
	ks        *kernels.Set
	m, d      int
	threads   int
	block     int
	keepBytes int64 // a tensor whose inputs fit stays mapped through its passes
	pool      *mmapio.Pool
	prog      Progress
	densities []float64

	// per tensor, shared
	hi   []highHist  // [model]
	hiMu sync.Mutex  // a worker hands its high counts on early (countHigh)
	lo   []topk.Hist // [model*d + density]
	cuts []cut       // [model*d + density]
	ties *tieScan

	workers []*worker
}

type worker struct {
	base []float32
	tau  [][]float32
	// c1, c2: a sum per chunk of the block, as the kernels write them
	c1, c2 []float64
	// mask words, 64 elements each: some model's τ > 0, some's < 0; per
	// cut (model·d + density), the kept set and the sign bits of its kept
	// values
	pos, neg   []uint64
	kept, sign [][]uint64
	hi         []blockHist
	hiCount    []uint64 // values in hi, per model
	lo         []topk.Hist
	// side: per model, the |τ| patterns with low bits of this worker's
	// blocks of the tensor (the kernels' LowBits, as topk's AddHighSide
	// lists them); sideFull: one did not fit
	side     [][]uint32
	sideFull []bool
	s        *sums
	counts   []uint64 // tie counts of this block, per partial cut
	before   []uint64 // ties in the blocks before, per partial cut
}

// Run inspects the models and returns the report.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if len(opts.Models) < 2 {
		return nil, fmt.Errorf("inspect needs at least two models, got %d", len(opts.Models))
	}
	if len(opts.Models) > MaxModels {
		return nil, fmt.Errorf("inspect compares at most %d models, got %d", MaxModels, len(opts.Models))
	}
	if len(opts.Densities) == 0 {
		opts.Densities = []float64{0.2}
	}
	for _, d := range opts.Densities {
		if math.IsNaN(d) || d < 0 || math.IsInf(d, 0) {
			return nil, fmt.Errorf("density %v: want a number ≥ 0", d)
		}
	}
	names := opts.Names
	if len(names) == 0 {
		names = modelNames(opts.Models)
	} else if len(names) != len(opts.Models) {
		return nil, fmt.Errorf("%d names for %d models", len(names), len(opts.Models))
	}
	ks := opts.Kernels
	if ks == nil {
		ks = kernels.Best()
	}
	prog := opts.Progress
	if prog == nil {
		prog = noProgress{}
	}
	jobs, models, skipped, err := plan(opts)
	if err != nil {
		return nil, err
	}
	e := &engine{opts: opts, ks: ks, m: len(opts.Models), d: len(opts.Densities), prog: prog,
		densities: opts.Densities, pool: mmapio.NewPool()}
	defer e.pool.Close()
	e.pool.Register(models...)
	if err := e.size(jobs); err != nil {
		return nil, err
	}
	rep := newReport(names, opts, skipped)
	var total int64
	for _, j := range jobs {
		total += j.bytes
	}
	prog.StartPass("inspect", 1, 1, Passes*total)
	defer prog.EndPass()
	var held []string
	for _, j := range jobs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		files := j.files()
		for _, f := range files {
			if _, err := e.pool.Acquire(f); err != nil {
				return nil, err
			}
		}
		for _, f := range held { // the previous tensor's shards, mostly the same ones
			e.pool.Release(f)
		}
		held = files
		s, err := e.tensor(ctx, j)
		if err != nil {
			return nil, err
		}
		e.releaseTensor(j)
		rep.add(j, s)
	}
	for _, f := range held {
		e.pool.Release(f)
	}
	rep.finish()
	return rep, nil
}

func (j *job) files() []string {
	f := []string{j.base.File}
	for _, t := range j.models {
		f = append(f, t.File)
	}
	return f
}

// modelNames are the last path elements, or the whole paths where those
// repeat.
func modelNames(paths []string) []string {
	names := make([]string, len(paths))
	seen := map[string]int{}
	for i, p := range paths {
		names[i] = filepath.Base(filepath.Clean(p))
		seen[names[i]]++
	}
	for i, p := range paths {
		if seen[names[i]] > 1 {
			names[i] = p
		}
	}
	return names
}

// plan opens the models and lists the tensors to inspect: the base's float
// tensors, which every model must have with the same shape.
func plan(opts Options) ([]*job, []*mmapio.Model, []string, error) {
	base, err := mmapio.OpenModel(opts.Base)
	if err != nil {
		return nil, nil, nil, err
	}
	all := []*mmapio.Model{base}
	var models []*mmapio.Model
	for _, p := range opts.Models {
		m, err := mmapio.OpenModel(p)
		if err != nil {
			return nil, nil, nil, err
		}
		models = append(models, m)
		all = append(all, m)
	}
	var jobs []*job
	var skipped []string
	for _, name := range base.Names {
		bt := base.Tensors[name]
		bdt, err := kernels.ParseDType(bt.DType)
		if err != nil {
			skipped = append(skipped, name)
			continue
		}
		j := &job{name: name, shape: bt.Shape, n: bt.Elements(), layer: LayerOf(name), module: ModuleOf(name),
			base: bt, bdt: bdt, bytes: bt.Size}
		for i, m := range models {
			t, ok := m.Tensors[name]
			if !ok {
				return nil, nil, nil, fmt.Errorf("model %s has no tensor %q (the base has it)", opts.Models[i], name)
			}
			if !slices.Equal(t.Shape, bt.Shape) {
				return nil, nil, nil, fmt.Errorf("tensor %q: model %s has shape %v, the base %v", name, opts.Models[i], t.Shape, bt.Shape)
			}
			dt, err := kernels.ParseDType(t.DType)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("tensor %q: model %s: %w", name, opts.Models[i], err)
			}
			j.models = append(j.models, t)
			j.mdt = append(j.mdt, dt)
			j.bytes += t.Size
		}
		jobs = append(jobs, j)
	}
	if len(jobs) == 0 {
		return nil, nil, nil, fmt.Errorf("base %s has no float32, float16 or bfloat16 tensor", opts.Base)
	}
	return jobs, all, skipped, nil
}

// The bytes of the histograms: select's (the low-bit ones), a worker's
// high-bit one, a tensor's.
const (
	histBytes      = int64(8*topk.Bins + 4*topk.Bins + 256)
	blockHistBytes = int64(hiWays*hiBins*4 + 4)
	highHistBytes  = int64(8*hiBins + hiPages)
)

// size picks the workers and the block size that fit the memory bound.
func (e *engine) size(jobs []*job) error {
	maxMem := e.opts.MaxMemory
	if maxMem <= 0 {
		maxMem = 2 << 30
	}
	threads := e.opts.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	block := e.opts.BlockElems
	if block <= 0 {
		block = 32768
	}
	block = (block + ChunkElems - 1) / ChunkElems * ChunkElems
	var largest int64
	for _, j := range jobs {
		largest = max(largest, j.n)
	}
	if b := (largest + ChunkElems - 1) / ChunkElems * ChunkElems; int64(block) > b {
		block = int(b)
	}
	m, d := int64(e.m), int64(e.d)
	const runtimeAllowance = 48 << 20
	e.keepBytes = min(maxMem/4, 512<<20)
	shared := runtimeAllowance + e.keepBytes + highHistBytes*m + histBytes*m*d
	perWorker := func(b int64) int64 {
		return b*4*(m+1) + (b+63)/64*8*(2+2*m*d) + blockHistBytes*m + histBytes*m*d + // blocks, masks, histograms
			(b/ChunkElems+1)*8*2 + m*sideEntries*4 + // chunk sums, lists of |τ| with low bits
			b*4*(m+1)*2 + // mapped input pages in flight, and their read-ahead
			int64(1+m*(m-1)/2+m*d)*int64(len(Acc{}.limbs))*8*2 // sums
	}
	// The tie scan: a count per block and partial cut of the largest tensor.
	scan := func(b int64) int64 { return (largest/b + 1) * m * d * 8 * 2 }
	for {
		for t := threads; t >= 1; t-- {
			if shared+scan(int64(block))+int64(t)*perWorker(int64(block)) <= maxMem {
				e.threads, e.block = t, block
				return nil
			}
		}
		if block <= ChunkElems {
			break
		}
		block = max(ChunkElems, block/2/ChunkElems*ChunkElems)
	}
	need := shared + scan(ChunkElems) + perWorker(ChunkElems)
	return fmt.Errorf("--max-memory %d bytes is too small for one worker with %d models and %d densities: give at least %d MiB", maxMem, e.m, e.d, (need+(1<<20)-1)>>20)
}

// sideEntries is the room of a worker's list of one model's |τ| with low
// bits, per tensor: more, and the tensor's thresholds take a low pass.
const sideEntries = 1 << 16

func (e *engine) newWorker() *worker {
	nw := wordsOf(e.block)
	nc := kernels.Chunks(e.block)
	w := &worker{base: make([]float32, e.block), tau: make([][]float32, e.m), c1: make([]float64, nc), c2: make([]float64, nc),
		pos: make([]uint64, nw), neg: make([]uint64, nw), kept: make([][]uint64, e.m*e.d), sign: make([][]uint64, e.m*e.d),
		hi: make([]blockHist, e.m), hiCount: make([]uint64, e.m), lo: make([]topk.Hist, e.m*e.d), side: make([][]uint32, e.m),
		sideFull: make([]bool, e.m), s: newSums(e.m, e.d), before: make([]uint64, e.m*e.d)}
	for i := range w.tau {
		w.tau[i] = make([]float32, e.block)
		w.side[i] = make([]uint32, 0, sideEntries)
	}
	for x := range w.kept {
		w.kept[x] = make([]uint64, nw)
		w.sign[x] = make([]uint64, nw)
	}
	return w
}

// runPass runs fn on every block of j on the workers, and fin on each worker
// after its last block.
func (e *engine) runPass(ctx context.Context, j *job, fn func(w *worker, b int) error) error {
	nb := int((j.n + int64(e.block) - 1) / int64(e.block))
	t := min(e.threads, max(nb, 1))
	for len(e.workers) < t {
		e.workers = append(e.workers, e.newWorker())
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, t)
	var failed atomic.Bool
	for wi := range t {
		w := e.workers[wi]
		wg.Go(func() {
			errs[wi] = mmapio.Guard(func() error {
				for !failed.Load() {
					b := int(next.Add(1) - 1)
					if b >= nb {
						return nil
					}
					if err := ctx.Err(); err != nil {
						return err
					}
					if err := fn(w, b); err != nil {
						return err
					}
				}
				return nil
			})
			if errs[wi] != nil {
				failed.Store(true)
				if e.ties != nil {
					e.ties.fail()
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, errAborted) {
			if errors.Is(err, mmapio.ErrFault) {
				return fmt.Errorf("tensor %q: %w", j.name, err)
			}
			return err
		}
	}
	return nil
}

// inputs are the byte ranges of block b of every input: the base's, then
// each model's, and the block's element range.
func (e *engine) inputs(j *job, b int) (base []byte, models [][]byte, lo, hi int64, err error) {
	lo = int64(b) * int64(e.block)
	hi = min(lo+int64(e.block), j.n)
	view := func(t *mmapio.Tensor, dt kernels.DType) ([]byte, error) {
		mp, err := e.pool.Acquire(t.File) // already mapped: a reference count
		if err != nil {
			return nil, err
		}
		e.pool.Release(t.File)
		sz := int64(dt.Size())
		return mp.Data()[t.Offset+lo*sz : t.Offset+hi*sz], nil
	}
	if base, err = view(j.base, j.bdt); err != nil {
		return
	}
	models = make([][]byte, e.m)
	for i, t := range j.models {
		if models[i], err = view(t, j.mdt[i]); err != nil {
			return
		}
	}
	return
}

// release drops the pages of block b of a tensor too big to stay mapped
// through its passes, and the page it shares with the block before.
func (e *engine) release(j *job, b int, lo, hi int64) {
	if j.bytes <= e.keepBytes {
		return
	}
	drop := func(t *mmapio.Tensor, dt kernels.DType) {
		mp, err := e.pool.Acquire(t.File)
		if err != nil {
			return
		}
		sz := int64(dt.Size())
		off := t.Offset + lo*sz
		start := off
		if b > 0 {
			start -= 1 << 16 // a page shared with the previous block, any page size
			start = max(start, t.Offset)
		}
		mp.DontNeed(start, t.Offset+hi*sz-start)
		e.pool.Release(t.File)
	}
	drop(j.base, j.bdt)
	for i, t := range j.models {
		drop(t, j.mdt[i])
	}
}

// releaseTensor drops the pages of every input of j, read for the last time.
func (e *engine) releaseTensor(j *job) {
	inputs := append([]*mmapio.Tensor{j.base}, j.models...)
	e.each(len(inputs), func(i int) {
		t := inputs[i]
		if mp, err := e.pool.Acquire(t.File); err == nil {
			mp.DontNeed(t.Offset, t.Size)
			e.pool.Release(t.File)
		}
	})
}

// deltas widens block b's base and computes every model's τ into w.tau;
// count: the bytes read count as progress.
func (e *engine) deltas(w *worker, j *job, b int, count bool) (n int, lo int64, err error) {
	base, models, lo, hi, err := e.inputs(j, b)
	if err != nil {
		return 0, 0, err
	}
	n = int(hi - lo)
	e.ks.Widen(w.base[:n], base, j.bdt)
	for i := range e.m {
		e.ks.DeltaTrim(w.tau[i][:n], models[i], j.mdt[i], w.base[:n], 0)
	}
	e.release(j, b, lo, hi)
	if count {
		e.prog.Add(j.bytes * int64(n) / max(j.n, 1))
	}
	return n, lo, nil
}

// tensor runs the passes over one tensor and returns its sums: the first
// pass, the cuts from its histograms and lists, a low pass for the models
// whose lists overflowed, then the trims.
func (e *engine) tensor(ctx context.Context, j *job) (*sums, error) {
	e.startTensor()
	if err := e.runPass(ctx, j, e.firstPass(j)); err != nil {
		return nil, err
	}
	if err := e.takeHigh(j); err != nil {
		return nil, err
	}
	low, err := e.findCuts(j)
	if err != nil {
		return nil, err
	}
	if low != nil {
		if err := e.lowPass(ctx, j, low); err != nil {
			return nil, err
		}
	}
	if err := e.trimPass(ctx, j); err != nil {
		return nil, err
	}
	s := newSums(e.m, e.d)
	for _, w := range e.workers {
		s.add(w.s)
		w.s.reset()
	}
	s.n = j.n
	return s, nil
}

// startTensor readies the shared state and the workers for a tensor.
func (e *engine) startTensor() {
	if e.hi == nil {
		e.hi = make([]highHist, e.m)
		e.lo = make([]topk.Hist, e.m*e.d)
		e.cuts = make([]cut, e.m*e.d)
	}
	for _, w := range e.workers {
		w.s.reset()
		for i := range e.m {
			w.side[i], w.sideFull[i] = w.side[i][:0], false
		}
	}
}

// firstPass is the work of the first pass on a block: high-bit histograms,
// the lists of |τ| with low bits, and what no trim changes.
func (e *engine) firstPass(j *job) func(w *worker, b int) error {
	return func(w *worker, b int) error {
		n, _, err := e.deltas(w, j, b, true)
		if err != nil {
			return err
		}
		for i := range e.m {
			tau := w.tau[i][:n]
			e.countHigh(w, i, tau)
			if side := w.side[i]; !w.sideFull[i] {
				c := e.ks.LowBits(tau, side[len(side):cap(side)])
				if c > cap(side)-len(side) {
					w.sideFull[i] = true
				} else {
					w.side[i] = side[:len(side)+c]
				}
			}
		}
		e.norms(w, n)
		return nil
	}
}

// countHigh adds tau to worker w's high counts of model i, handing them on
// to the tensor's first where they could overflow.
func (e *engine) countHigh(w *worker, i int, tau []float32) {
	if w.hiCount[i]+uint64(len(tau)) > math.MaxUint32 {
		e.hiMu.Lock()
		e.hi[i].take(&w.hi[i])
		e.hiMu.Unlock()
		w.hiCount[i] = 0
	}
	w.hi[i].add(tau)
	w.hiCount[i] += uint64(len(tau))
}

// takeHigh gathers the workers' high-bit histograms; a τ that is not
// finite is an error.
func (e *engine) takeHigh(j *job) error {
	e.each(e.m, func(i int) {
		for _, w := range e.workers {
			e.hi[i].take(&w.hi[i])
			w.hiCount[i] = 0
		}
	})
	for i := range e.m {
		var bad uint64
		for bin := uint32(0x7f80); bin <= 0x7fff; bin++ {
			bad += e.hi[i].count(bin)
		}
		if bad > 0 {
			return fmt.Errorf("model %s: tensor %q: %d values of τ = θ − θ₀ are not finite (Inf or NaN)", e.opts.Models[i], j.name, bad)
		}
	}
	return nil
}

// each runs fn(0) … fn(n−1) on up to e.threads goroutines: the work
// between a tensor's passes, which would otherwise leave all cores but one
// idle.
func (e *engine) each(n int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, max(e.threads, 1)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(i)
			}
		})
	}
	wg.Wait()
}

// findCuts sets every cut from the high histograms, and finishes those of
// the models whose lists of |τ| with low bits are complete; low (nil when
// none) marks the models that need the low pass.
func (e *engine) findCuts(j *job) (low []bool, err error) {
	for i := range e.m {
		listed := true
		for _, w := range e.workers {
			listed = listed && !w.sideFull[i]
		}
		var side []uint32
		if listed {
			for _, w := range e.workers {
				side = append(side, w.side[i]...)
			}
		}
		for k, dens := range e.densities {
			x := i*e.d + k
			sized, err := e.sizeCut(j, x, dens)
			if err != nil {
				return nil, err
			}
			switch {
			case !sized:
			case !listed:
				if low == nil {
					low = make([]bool, e.m)
				}
				low[i] = true
			default:
				c := &e.cuts[x]
				e.lo[x].LowFrom(c.hiBin, e.hi[i].count(c.hiBin), side)
				if err := e.exact(j, x); err != nil {
					return nil, err
				}
			}
		}
		e.hi[i].reset()
	}
	return low, nil
}

// sizeCut starts cut x at density dens from its model's high histogram;
// sized: it trims some of the values and so needs its exact threshold.
func (e *engine) sizeCut(j *job, x int, dens float64) (sized bool, err error) {
	c := &e.cuts[x]
	*c = cut{}
	kk := math.Floor(dens * float64(j.n))
	switch {
	case dens >= 1:
		c.all = true
	case kk < 1:
		c.none = true
	default:
		c.k = uint64(kk)
		bin, above, err := e.hi[x/e.d].pick(c.k)
		if err != nil {
			return false, fmt.Errorf("tensor %q: %w", j.name, err)
		}
		c.hiBin, c.aboveHi = bin, above
		return true, nil
	}
	return false, nil
}

// lowPass reads the tensor again for the models low marks: low-bit
// histograms inside the chosen bins, then their exact cuts.
func (e *engine) lowPass(ctx context.Context, j *job, low []bool) error {
	err := e.runPass(ctx, j, func(w *worker, b int) error {
		n, _, err := e.deltas(w, j, b, false)
		if err != nil {
			return err
		}
		for x := range e.cuts {
			if c := &e.cuts[x]; low[x/e.d] && !c.all && !c.none {
				w.lo[x].AddLow(w.tau[x/e.d][:n], c.hiBin)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for x := range e.cuts {
		if c := &e.cuts[x]; c.all || c.none || !low[x/e.d] {
			continue
		}
		for _, w := range e.workers {
			e.lo[x].Take(&w.lo[x])
		}
		if err := e.exact(j, x); err != nil {
			return err
		}
	}
	return nil
}

// trimPass is the last pass: the trims, with the ties at partial cuts
// counted in block order.
func (e *engine) trimPass(ctx context.Context, j *job) error {
	var partials []int
	for x := range e.cuts {
		if e.cuts[x].partial() {
			partials = append(partials, x)
		}
	}
	nb := int((j.n + int64(e.block) - 1) / int64(e.block))
	e.ties = nil
	if len(partials) > 0 {
		e.ties = newTieScan(nb, len(partials))
	}
	defer func() { e.ties = nil }()
	return e.runPass(ctx, j, func(w *worker, b int) error {
		n, _, err := e.deltas(w, j, b, true)
		if err != nil {
			return err
		}
		return e.trims(w, b, n, partials)
	})
}

// exact finishes cut x from its bin and the low histogram of that bin.
func (e *engine) exact(j *job, x int) error {
	c := &e.cuts[x]
	t, err := topk.Exact(c.k, c.hiBin, c.aboveHi, &e.lo[x])
	if err != nil {
		return fmt.Errorf("tensor %q: %w", j.name, err)
	}
	e.lo[x].Reset()
	c.bits, c.need, c.equal = t.Bits, c.k-t.Greater, t.Equal
	return nil
}

var errAborted = errors.New("aborted")

// tieScan gives each block the number of ties at each partial cut in the
// blocks before it. Blocks are handed out in order, and a worker publishes
// its block's counts before it waits for the earlier ones, so the wait ends.
type tieScan struct {
	mu     sync.Mutex
	cond   *sync.Cond
	counts [][]uint64 // [block][partial], until folded into prefix
	before [][]uint64 // [block][partial], once the blocks before are known
	done   []bool
	prefix []uint64 // of the blocks before ready
	ready  int
	failed bool
}

func newTieScan(blocks, partials int) *tieScan {
	t := &tieScan{counts: make([][]uint64, blocks), before: make([][]uint64, blocks),
		done: make([]bool, blocks), prefix: make([]uint64, partials)}
	t.cond = sync.NewCond(&t.mu)
	return t
}

func (t *tieScan) fail() {
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
	t.cond.Broadcast()
}

// post records block b's counts.
func (t *tieScan) post(b int, counts []uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.counts[b] = append([]uint64(nil), counts...)
	t.done[b] = true
	advanced := false
	for t.ready < len(t.done) && t.done[t.ready] {
		t.before[t.ready] = append([]uint64(nil), t.prefix...)
		for x, c := range t.counts[t.ready] {
			t.prefix[x] += c
		}
		t.counts[t.ready] = nil
		t.ready++
		advanced = true
	}
	if advanced {
		t.cond.Broadcast()
	}
}

// wait returns, in before, the sums of the counts of the blocks before b,
// once every one of them is posted; b's own must be.
func (t *tieScan) wait(b int, before []uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.ready <= b && !t.failed {
		t.cond.Wait()
	}
	if t.failed {
		return errAborted
	}
	copy(before, t.before[b])
	t.before[b] = nil
	return nil
}
