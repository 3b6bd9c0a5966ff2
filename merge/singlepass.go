package merge

import (
	"context"
	"encoding/binary"
	"math"
	"slices"

	"github.com/tiesmm/tiesmm/kernels"
	topk "github.com/tiesmm/tiesmm/select"
)

// The paper preset's exact whole-model trim in one pass over the inputs.
// (Per-tensor trims need no such thing: a tensor's histogram passes read it
// hot from the page cache, right after its first read.)
//
// A sample spread over the model gives, per model, a band of
// magnitudes [lo, hi] that holds the k-th largest |τ| with near certainty.
// The merge pass then decides every element whose values all lie outside
// their model's band (kept above it, trimmed below it), counts exactly how
// many lie above and inside, and spills the few positions where some value
// lies inside to a file: the position, the base value and every raw τ. Once
// the pass is over, the exact threshold is the (k − above)-th largest band
// value, and the spilled positions are settled with it, so the result is
// bit-identical to the two-pass radix select. If the sample was wrong (the
// counts show the threshold outside the band) the merge falls back to the
// two passes and says so.

// singlePass reports whether the plan's trim is a whole-model one that can
// be done in one pass: every tie at the threshold kept (the paper's rule),
// no second cut (breadcrumbs), no L1 rescale (which needs the trim first),
// not the approximate mode.
func (p *Plan) singlePass() bool {
	m := p.Method
	return m.Trim && m.Scope == ScopeModel && m.Ties == KeepTies && !m.Outliers && !m.ApproxTopK &&
		!p.Opts.TwoPass && m.Rescale != RescaleL1 && p.trims()
}

// singlePass is the whole-model trim in one pass (PathSinglePass), a batch
// of every merged tensor: it owns the scope sampled, the spill file and
// each worker's counts.
type singlePass struct {
	scope *scope
	spill *spill
	bands []bandState // per worker
}

func newSinglePass(r *run) *singlePass {
	nm := r.p.width()
	s := &singlePass{bands: make([]bandState, len(r.ws))}
	for k := range s.bands {
		s.bands[k] = bandState{above: make([]uint64, nm), inside: make([]uint64, nm), atHi: make([]uint64, nm), mark: make([]bool, r.stride)}
	}
	return s
}

func (*singlePass) prepare(context.Context, *run, []int) error { return nil }
func (*singlePass) batch() bool                                { return true }

// bandState is what the single pass counts, per worker.
type bandState struct {
	above, inside []uint64 // per model: values above the band, and spilled in it
	atHi          []uint64 // per model: values at a wide band's upper edge (kept, not spilled)
	mark          []bool   // positions of the block with some value in a band
	pos           []int32  // the same positions, listed
	buf           []byte   // this worker's spill records not yet appended
}

// mergeBlockBand merges one block deciding every position it can; the
// others are spilled and merged as if all their values were zero.
func (s *singlePass) mergeBlockBand(r *run, w *worker, b block) error {
	bs := &s.bands[w.id]
	if s.fusedBands(r, w, b) {
		// Every band is one value: nothing to spill, and the fused kernel
		// counts the values at it.
		err := r.mergeBlockFused(w, b, w.equal)
		for _, i := range s.scope.models {
			at := uint64(w.equal[i])
			bs.inside[i] += at
			bs.above[i] += uint64(w.fused.Kept[i]) - at
		}
		return err
	}
	j := &r.p.Jobs[b.job]
	sc := s.scope
	n, nm := int(b.n), len(j.Models)
	base := r.widenBase(w, b)
	mark := bs.mark[:n]
	ge := make([]int, nm)
	for i := range nm {
		tau := w.taus[i*r.stride : i*r.stride+n]
		t, dt := j.Models[i], j.ModelDT[i]
		// Below the band is trimmed for sure: the kernel does that.
		ge[i] = r.k.DeltaTrim(tau, r.src(w, t, dt, b.start, b.n), dt, base, sc.bands[i].lo)
	}
	bs.pos = bs.pos[:0]
	for _, i := range sc.models {
		// Values below lo are zero by now, so with lo > 0 no zero is in
		// the band; with lo = 0 zeros are (the threshold may be zero).
		lo, hi := sc.bands[i].lo, sc.bands[i].hi
		tau := w.taus[i*r.stride : i*r.stride+n]
		if lo == hi {
			// A band of one value: the threshold is that value or the
			// sample missed (settle checks), so every position is decided;
			// only the values at it need counting.
			at := uint64(r.k.Range(tau, lo, lo, nil))
			bs.inside[i] += at
			bs.above[i] += uint64(ge[i]) - at
			continue
		}
		// Every tie at the threshold is kept, and the threshold is at most
		// hi: the values at hi are kept whatever it is, so only [lo, hi)
		// is undecided (a bf16 band's edges hold big tie groups).
		atHi := r.k.Range(tau, hi, hi, nil)
		in := w.idx[:r.k.Range(tau, lo, hi-1, w.idx)]
		for _, e := range in {
			if !mark[e] {
				mark[e] = true
				bs.pos = append(bs.pos, e)
			}
		}
		bs.inside[i] += uint64(len(in))
		bs.atHi[i] += uint64(atHi)
		bs.above[i] += uint64(ge[i] - len(in) - atHi)
	}
	// Spill the undecided positions, then merge them as zeros for now.
	slices.Sort(bs.pos)
	for _, e := range bs.pos {
		mark[e] = false
		var rec [16]byte
		binary.LittleEndian.PutUint32(rec[0:], uint32(b.job))
		binary.LittleEndian.PutUint64(rec[4:], uint64(b.start)+uint64(e))
		binary.LittleEndian.PutUint32(rec[12:], math.Float32bits(base[e]))
		bs.buf = append(bs.buf, rec[:]...)
		for i := range nm {
			v := &w.taus[i*r.stride+int(e)]
			bs.buf = binary.LittleEndian.AppendUint32(bs.buf, math.Float32bits(*v))
			if kernels.AbsBits(*v) >= sc.bands[i].lo {
				ge[i]--
			}
			*v = 0
		}
	}
	if len(bs.buf) >= recordFlush {
		if err := s.spill.append(bs.buf); err != nil {
			return err
		}
		bs.buf = bs.buf[:0]
	}
	for i := range nm {
		w.kept[i] += uint64(ge[i])
	}
	return r.voteAndFinish(w, b, base)
}

// fusedBands reports whether block b can be merged by the fused kernel in
// the single pass (its strategy allows it, and every band is one value) and
// sets the kernel's thresholds to the bands.
func (s *singlePass) fusedBands(r *run, w *worker, b block) bool {
	if !r.strategy[b.job].Fused {
		return false
	}
	for i, bd := range s.scope.bands {
		if bd.lo != bd.hi {
			return false
		}
		w.fused.Thr[i] = bd.lo
	}
	return true
}

// settle finds the exact thresholds from the counts and the spilled band
// values, then merges the spilled positions with them. It reports false when
// the sample's bands missed a threshold.
func (s *singlePass) settle(ctx context.Context, r *run) (bool, error) {
	p, sc := r.p, s.scope
	nm := p.width()
	above, inside, atHi := make([]uint64, nm), make([]uint64, nm), make([]uint64, nm)
	for _, w := range r.ws {
		bs := &s.bands[w.id]
		if err := s.spill.append(bs.buf); err != nil {
			return false, err
		}
		bs.buf = bs.buf[:0]
		for i := range nm {
			above[i] += bs.above[i]
			inside[i] += bs.inside[i]
			atHi[i] += bs.atHi[i]
			bs.above[i], bs.inside[i], bs.atHi[i] = 0, 0, 0
		}
	}
	for _, i := range sc.models {
		if !(above[i] < sc.need[i] && sc.need[i] <= above[i]+atHi[i]+inside[i]) {
			return false, nil
		}
	}
	// A one-value band that passed the check is the threshold, and so is a
	// wide band's upper edge if the values at it reach k. Otherwise the
	// threshold is the (k − above − at hi)-th largest spilled band value,
	// found by the same two radix passes, over the spill file instead of
	// the inputs.
	thr := make([]uint32, nm)
	var wide []int
	for _, i := range sc.models {
		if bd := sc.bands[i]; bd.lo == bd.hi || sc.need[i] <= above[i]+atHi[i] {
			thr[i] = bd.hi
		} else {
			above[i] += atHi[i]
			wide = append(wide, i)
		}
	}
	inBand := func(i int, m uint32) bool { return m >= sc.bands[i].lo && m < sc.bands[i].hi }
	mag := func(rec []byte, i int) uint32 { return binary.LittleEndian.Uint32(rec[16+4*i:]) & 0x7fffffff }
	rec := s.spill.rec
	high := make([]topk.Hist, nm)
	err := s.spill.each(r.recordBlock, func(recs []byte) error {
		for o := 0; o < len(recs); o += rec {
			for _, i := range wide {
				if m := mag(recs[o:], i); inBand(i, m) {
					high[i].Inc(m >> 16)
				}
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	his, ups := make([]uint32, nm), make([]uint64, nm)
	for _, i := range wide {
		if his[i], ups[i], err = high[i].Pick(sc.need[i] - above[i]); err != nil {
			return false, err
		}
	}
	low := make([]topk.Hist, nm)
	err = s.spill.each(r.recordBlock, func(recs []byte) error {
		for o := 0; o < len(recs); o += rec {
			for _, i := range wide {
				if m := mag(recs[o:], i); inBand(i, m) && m>>16 == his[i] {
					low[i].Inc(m & 0xffff)
				}
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	for _, i := range wide {
		th, err := topk.Exact(sc.need[i]-above[i], his[i], ups[i], &low[i])
		if err != nil {
			return false, err
		}
		thr[i] = th.Bits // every tie at it is kept
	}

	// Merge the spilled positions, a block at a time on every worker:
	// gather, trim exactly, vote, patch the output.
	return true, r.eachParallel(ctx, s.spill, func(w *worker, recs []byte) error {
		cnt := len(recs) / rec
		for g := 0; g < cnt; g += r.stride {
			m := min(cnt-g, r.stride)
			if err := s.settleGroup(r, w, recs[g*rec:(g+m)*rec], thr); err != nil {
				return err
			}
		}
		return nil
	})
}

// settleGroup merges up to one stride of spilled records of one block.
func (s *singlePass) settleGroup(r *run, w *worker, recs []byte, thr []uint32) error {
	nm := r.p.width()
	sc := s.scope
	m := len(recs) / s.spill.rec
	ji := int(binary.LittleEndian.Uint32(recs))
	j := &r.p.Jobs[ji]
	elems := make([]int64, m)
	for g := range m {
		rec := recs[g*s.spill.rec:]
		elems[g] = int64(binary.LittleEndian.Uint64(rec[4:]))
		w.base[g] = math.Float32frombits(binary.LittleEndian.Uint32(rec[12:]))
		for i := range nm {
			v := math.Float32frombits(binary.LittleEndian.Uint32(rec[16+4*i:]))
			if sc.trims[i] && kernels.AbsBits(v) < thr[i] {
				v = 0
			} else {
				w.kept[i]++
			}
			w.taus[i*r.stride+g] = v
		}
	}
	vp := &r.votes[ji]
	st := r.k.Vote(w.tm[:m], w.taus, r.stride, vp)
	w.votes.Add(st)
	sz := j.OutDT.Size()
	out := w.outb[:m*sz]
	r.k.Finish(out, j.OutDT, w.base[:m], w.tm[:m], j.Params.Lambda)
	if r.p.Method.GlobalMajority && st.ZeroSum > 0 {
		if err := r.recordZeroSums(w, ji, m, func(e int) int64 { return elems[e] }, vp, j.Params.Lambda); err != nil {
			return err
		}
	}
	return r.patch(j, elems, func(g int) []byte { return out[g*sz : (g+1)*sz] })
}

// workerStats is what workers have counted, to undo a scope that falls back.
type workerStats struct {
	kept   []uint64
	votes  kernels.VoteStats
	fixups int
}

type snapshot struct {
	workers []workerStats
	fixed   int64 // fixup records in the file
}

func (r *run) snapshot() snapshot {
	s := snapshot{workers: make([]workerStats, len(r.ws))}
	for k, w := range r.ws {
		s.workers[k] = workerStats{kept: slices.Clone(w.kept), votes: w.votes, fixups: len(w.fixups)}
	}
	if r.fixFile != nil {
		s.fixed = r.fixFile.count
	}
	return s
}

func (r *run) restore(s snapshot) error {
	for k, w := range r.ws {
		copy(w.kept, s.workers[k].kept)
		w.votes, w.fixups = s.workers[k].votes, w.fixups[:min(len(w.fixups), s.workers[k].fixups)]
	}
	if r.fixFile != nil {
		return r.fixFile.truncate(s.fixed)
	}
	return nil
}

// merge merges the whole model (jobs: every tensor merged) in one pass.
func (s *singlePass) merge(ctx context.Context, r *run, jobs []int) error {
	var err error
	if s.spill, err = newSpill(r.spillDir(), r.p.width()); err != nil {
		return err
	}
	defer s.spill.close()
	return s.scopePass(ctx, r, r.newScope(jobs, r.p.Need), func() error {
		if err := (modelRadix{}).prepare(ctx, r, jobs); err != nil {
			return err
		}
		return r.parallel(ctx, r.blocks(jobs), r.mergeBlock)
	})
}

// scopePass samples the scope, merges it in one pass and settles it; if the
// sample missed, it undoes the counts and runs fallback instead.
func (s *singlePass) scopePass(ctx context.Context, r *run, sc *scope, fallback func() error) error {
	sum := r.sum
	mergeBand := func(w *worker, b block) error { return s.mergeBlockBand(r, w, b) }
	for _, ji := range sc.jobs {
		r.traced(ji, "single-pass")
	}
	if len(sc.models) == 0 {
		s.scope = sc
		return r.parallel(ctx, r.blocks(sc.jobs), mergeBand)
	}
	size, err := r.sampleBands(ctx, sc)
	if err != nil {
		return err
	}
	sum.Sampled += size
	if err := s.spill.reset(); err != nil {
		return err
	}
	before := r.snapshot()
	s.scope = sc
	if err := r.parallel(ctx, r.blocks(sc.jobs), mergeBand); err != nil {
		return err
	}
	ok, err := s.settle(ctx, r)
	sum.Spilled += s.spill.count
	if err != nil || ok {
		return err
	}
	sum.FellBack++
	if err := r.restore(before); err != nil {
		return err
	}
	return fallback()
}
