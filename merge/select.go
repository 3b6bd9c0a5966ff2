package merge

import (
	"context"
	"fmt"

	topk "github.com/tiesmm/tiesmm/select"
)

// The thresholds of a trim: the radix select (histograms of the high, then
// the low 16 bits of |τ|) over a whole model or one tensor, the sampled
// select for large tensors (sampled.go), and the exact-k split of the ties.

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
				w.side = make([][]uint32, r.p.width())
				for i := range w.side {
					w.side[i] = make([]uint32, 0, r.p.tuning.sideEntries)
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
	merged := make([]*topk.Hist, r.p.width())
	for _, i := range models {
		merged[i] = &first.hists[i]
		for _, w := range r.ws[1:] {
			merged[i].Take(&w.hists[i])
		}
	}
	return merged, err
}

// radixPick is the select by radix histograms: two passes over bs (one
// if approx).
func (r *run) radixPick(ctx context.Context, bs []block, models []int, need []uint64, approx bool) ([]topk.Threshold, blockCounts, error) {
	if r.p.Method.Scope == ScopeTensor {
		r.traced(bs[0].job, "radix")
	}
	th := make([]topk.Threshold, r.p.width())
	high, err := r.histPass(ctx, bs, models, nil, histHigh)
	if err != nil {
		return nil, blockCounts{}, err
	}
	hi := make([]uint32, r.p.width())
	above := make([]uint64, r.p.width())
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

// modelRadix is the whole-model trim by the radix select (PathModelRadix):
// prepare finds every model's threshold over all the tensors, then each
// tensor is merged with them.
type modelRadix struct{}

func (modelRadix) batch() bool { return false }

func (modelRadix) merge(ctx context.Context, r *run, jobs []int) error {
	return eachJob(jobs, func(ji int) error { return r.mergeTensor(ctx, ji) })
}

// prepare finds the model-scope thresholds over jobs (tensor-scope ones are
// found tensor by tensor during the merge, while the tensor is hot).
func (modelRadix) prepare(ctx context.Context, r *run, jobs []int) error {
	p := r.p
	var models []int
	for i, k := range p.Need {
		if k <= uint64(p.Merged) {
			models = append(models, i)
		}
	}
	if len(models) == 0 {
		return nil
	}
	for _, ji := range jobs {
		r.traced(ji, "model-radix")
	}
	r.prog.StartPass(phaseSelect, 1, len(p.Passes()), p.InputBytes)
	th, _, err := r.radixPick(ctx, r.blocks(jobs), models, p.Need, p.Method.ApproxTopK)
	r.prog.EndPass()
	if err != nil {
		return err
	}
	if p.Method.ApproxTopK {
		for _, b := range r.blocks(jobs) {
			for _, i := range models {
				r.trims[b.job][i] = trim{bits: th[i].Bits}
			}
		}
		return nil
	}
	return r.splitTies(ctx, r.trims, r.blocks(jobs), models, th, p.Need, blockCounts{})
}

// radixSelect is a per-tensor trim by the radix select (PathRadix): two
// histogram passes, then the merge.
type radixSelect struct{ perTensor }

func (radixSelect) merge(ctx context.Context, r *run, jobs []int) error {
	return eachJob(jobs, func(ji int) error {
		return r.selectAndMerge(ctx, ji, func() (bool, error) { return false, r.selectTensor(ctx, ji, nil, nil) })
	})
}

// selectTensor finds one tensor's thresholds (tensor scope): by the sampled
// select sp (which falls back to the radix select if its sample misses), or
// by the radix select if sp is nil. With outliers (breadcrumbs) it also
// finds the cut above which the largest are dropped. sc, if not nil, is the
// tensor's sample for the trim, already read.
func (r *run) selectTensor(ctx context.Context, ji int, sp *sampledSelect, sc *scope) error {
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
		var th []topk.Threshold
		var ties blockCounts
		ok := false
		var err error
		if sp != nil {
			th, ties, ok, err = sp.pick(ctx, r, bs, sel.need, sc)
		}
		if err == nil && !ok {
			th, ties, err = r.radixPick(ctx, bs, models, sel.need, false)
		}
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
	counts = newBlockCounts(len(bs), r.p.width())
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

// selectScratch is a worker's part of a select: per model, the histogram
// of the current pass, and the list of values collected for exact-k tie
// counts or a sampled band (ties.go, sampled.go).
type selectScratch struct {
	hists    []topk.Hist
	lows     [][]uint64 // per model: block seq<<16 | low bits of |τ| in the chosen bin (seq<<32 | |τ| in a band)
	lowsFull bool       // lows outgrew its share of memory
	lowsCap  int
}

func newSelectScratch(models, lowsCap int) selectScratch {
	return selectScratch{hists: make([]topk.Hist, models), lows: make([][]uint64, models), lowsCap: lowsCap}
}
