package merge

import (
	"context"
	"encoding/binary"
	"slices"

	"github.com/tiesmm/tiesmm/kernels"
	topk "github.com/tiesmm/tiesmm/select"
)

// A per-tensor exact select in one pass over the tensor, plus a sample.
//
// The radix select reads a tensor twice before its merge (high bits, then
// low bits), with a histogram update per value in Go. Instead, a sample of
// the tensor places a band of magnitudes [lo, hi] around each model's
// threshold, as the single pass does for a whole model (singlepass.go); one
// pass then counts the values above the band (a SIMD count) and collects the
// few inside it with their block. The threshold is the (k − above)-th
// largest collected value, exactly what the radix select finds, and the
// collected values also give the ties of every block for the exact-k rule.
// Where the band's edges hold many of its values, the edge values are only
// counted, per block (see edged below). If the sample missed (the threshold
// is outside the band) or the values inside outgrow their memory, the radix
// select runs instead. Where every band is one value, speculate.go merges
// the tensor without this pass.

// A tensor's sample is denser than a whole model's: the values inside its
// bands are collected one by one, which costs more than a larger sample.
const (
	// Smaller tensors take the radix select: two histogram passes over
	// all of them.
	tensorSampledElems   = 1 << 18
	tensorSampleMinElems = 1 << 16
	tensorSampleEvery    = 25
)

// sampledSelect is a per-tensor trim by the sampled select (PathSampled):
// a sample, one counting pass, then the merge. It owns each worker's counts
// of the counting pass.
type sampledSelect struct {
	perTensor
	counts []sampledCounts // per worker
}

func newSampledSelect(workers, models int) *sampledSelect {
	s := &sampledSelect{counts: make([]sampledCounts, workers)}
	for k := range s.counts {
		s.counts[k] = newSampledCounts(models)
	}
	return s
}

func (s *sampledSelect) merge(ctx context.Context, r *run, jobs []int) error {
	return eachJob(jobs, func(ji int) error {
		return r.selectAndMerge(ctx, ji, func() (bool, error) { return false, r.selectTensor(ctx, ji, s, nil) })
	})
}

// bandPick is one sampled select over a tensor's blocks: what its counting
// pass found, per model and per block.
type bandPick struct {
	sc    *scope
	bs    []block
	need  []uint64
	edged []bool      // per model: the band's edge values are counted apart, block by block
	edges blockCounts // by block seq: per model the values at hi, at lo (edged models)
	ties  blockCounts // by block seq: per model the values at the threshold
	// Per model, over every worker: values above the band, inside it (strictly,
	// if edged), at its upper and lower edges (edged).
	above, inside, atHi, atLo []uint64
	full                      bool // a worker's list of the values inside outgrew its share
}

// pick returns the exact thresholds of the models with 0 < need ≤ n
// over one tensor's blocks bs, with the count of values at each threshold in
// every block (by block seq), or ok = false if the sample missed or the
// values in a band outgrew their lists (counted in r.missed, r.crowded).
// sc, if not nil, is the sample, already read.
func (s *sampledSelect) pick(ctx context.Context, r *run, bs []block, need []uint64, sc *scope) (_ []topk.Threshold, ties blockCounts, ok bool, _ error) {
	r.traced(bs[0].job, "sampled")
	if sc == nil {
		var err error
		if sc, err = r.sampleTensor(ctx, bs[0].job, need); err != nil {
			return nil, blockCounts{}, false, err
		}
	}
	r.dropLows()
	for _, i := range sc.models {
		r.ws[0].hists[i].Reset() // the others were emptied by Take
	}
	defer func() {
		if !ok { // keep the others empty for the next histPass
			r.resetHists(r.ws[1:], sc.models)
		}
	}()
	bp := &bandPick{sc: sc, bs: bs, need: need, edged: r.edgedModels(sc)}
	err := s.countBands(ctx, r, bp)
	defer r.dropLows()
	s.totalBands(r, bp)
	if bp.full && err == nil {
		r.crowded++
	}
	if err != nil || bp.full {
		return nil, blockCounts{}, false, err
	}
	th, wide, ok := bp.thresholds()
	if !ok {
		r.sampleMissed()
		return nil, blockCounts{}, false, nil
	}
	// The histograms of edged models decided at an edge: not needed.
	for _, i := range sc.models {
		if bp.edged[i] && !slices.Contains(wide, i) {
			r.resetHists(r.ws, []int{i})
		}
	}
	if len(wide) > 0 {
		if err := r.wideThresholds(bp, wide, th); err != nil {
			return nil, blockCounts{}, false, err
		}
	}
	return th, bp.ties, true, nil
}

// resetHists empties the workers' histograms of the models given.
func (r *run) resetHists(ws []*worker, models []int) {
	for _, w := range ws {
		for _, i := range models {
			w.hists[i].Reset()
		}
	}
}

// edgedModels picks the models whose band edges are counted apart. A band's
// edges often fall on big tie groups (bf16 task vectors take few values):
// where they hold a good share of the band's values, or the values would
// outgrow the lists, the values at the edges are counted, block by block,
// by the kernel, and only those strictly inside listed. The threshold is
// then an edge, or one of the few inside.
func (r *run) edgedModels(sc *scope) []bool {
	edged := make([]bool, r.p.width())
	for _, i := range sc.models {
		bd := sc.bands[i]
		estimate := float64(bd.pop) * float64(sc.total) / float64(max(1, sc.sampleSize))
		edged[i] = bd.lo != bd.hi && (10*bd.atEdges >= bd.pop || estimate > float64(r.ws[0].lowsCap*len(r.ws))/2)
	}
	return edged
}

// countBands is the sampled select's pass over the tensor: per block and
// model it counts the values above each band and collects those inside.
// A band of one value (a tie group: common in bf16 task vectors) needs only
// counts, which are then also the ties of each block.
func (s *sampledSelect) countBands(ctx context.Context, r *run, bp *bandPick) error {
	nm := r.p.width()
	if slices.Contains(bp.edged, true) {
		bp.edges = newBlockCounts(len(bp.bs), 2*nm)
	}
	bp.ties = newBlockCounts(len(bp.bs), nm)
	return r.parallel(ctx, bp.bs, func(w *worker, b block) error {
		j := &r.p.Jobs[b.job]
		base := r.widenBase(w, b)
		for _, i := range bp.sc.models {
			dt := j.ModelDT[i]
			s.countBand(r, w, bp, b.seq, i, r.src(w, j.Models[i], dt, b.start, b.n), dt, base)
		}
		return nil
	})
}

// countBand counts model i's values of one block (src, of dtype dt) against
// its band, and lists those inside with the block's seq.
func (s *sampledSelect) countBand(r *run, w *worker, bp *bandPick, seq, i int, src []byte, dt kernels.DType, base []float32) {
	c := &s.counts[w.id]
	lo, hi := bp.sc.bands[i].lo, bp.sc.bands[i].hi
	if lo == hi {
		above, inside := r.k.DeltaRange(src, dt, base, lo, hi, nil)
		c.above[i] += uint64(above)
		c.inside[i] += uint64(inside)
		bp.ties.at(seq)[i] = int64(inside)
		return
	}
	if bp.edged[i] {
		above, atHi := r.k.DeltaRange(src, dt, base, hi, hi, nil)
		_, atLo := r.k.DeltaRange(src, dt, base, lo, lo, nil)
		c.above[i] += uint64(above)
		c.atHi[i] += uint64(atHi)
		c.atLo[i] += uint64(atLo)
		be := bp.edges.at(seq)
		be[2*i], be[2*i+1] = int64(atHi), int64(atLo)
		if hi-lo < 2 {
			return // nothing strictly inside
		}
		lo, hi = lo+1, hi-1
	}
	above, inside := r.k.DeltaRange(src, dt, base, lo, hi, w.idx)
	if bp.edged[i] {
		above = 0 // counted above, with the values at hi
	}
	c.above[i] += uint64(above)
	c.inside[i] += uint64(inside)
	if w.lowsFull || len(w.lows[i])+inside > w.lowsCap {
		w.lowsFull = true
		return
	}
	// τ again, as the kernel computed it, for the few inside.
	lows, h := w.lows[i], &w.hists[i]
	for _, e := range w.idx[:inside] {
		var v float32
		if dt == kernels.BF16 { // the common case, without a call
			v = kernels.BF16ToF32(binary.LittleEndian.Uint16(src[2*e:]))
		} else {
			v = dt.At(src, int(e))
		}
		m := kernels.AbsBits(v - base[e])
		lows = append(lows, uint64(seq)<<32|uint64(m))
		h.Inc(m >> 16)
	}
	w.lows[i] = lows
}

// totalBands adds up the workers' counts into bp and zeroes them.
func (s *sampledSelect) totalBands(r *run, bp *bandPick) {
	nm := r.p.width()
	bp.above, bp.inside = make([]uint64, nm), make([]uint64, nm)
	bp.atHi, bp.atLo = make([]uint64, nm), make([]uint64, nm)
	for _, w := range r.ws {
		c := &s.counts[w.id]
		for _, i := range bp.sc.models {
			bp.above[i] += c.above[i]
			bp.inside[i] += c.inside[i]
			bp.atHi[i] += c.atHi[i]
			bp.atLo[i] += c.atLo[i]
			c.above[i], c.inside[i], c.atHi[i], c.atLo[i] = 0, 0, 0, 0
		}
		bp.full = bp.full || w.lowsFull
	}
}

// thresholds places each model's k-th largest value from the counts: on a
// one-value band or an edge (th is then set, and an edge's ties per block
// copied into bp.ties), or among the values listed inside a band (wide,
// with bp.above raised to count what lies above them). ok is false if a
// threshold lies outside its band: the sample missed.
func (bp *bandPick) thresholds() (th []topk.Threshold, wide []int, ok bool) {
	th = make([]topk.Threshold, len(bp.need))
	for _, i := range bp.sc.models {
		bd, k := bp.sc.bands[i], bp.need[i]
		switch at := bp.above[i]; {
		case bp.edged[i]:
			// From the top: above hi, at hi, strictly inside, at lo.
			switch {
			case k <= at:
				return nil, nil, false
			case k <= at+bp.atHi[i]:
				th[i] = topk.Threshold{Bits: bd.hi, Greater: at, Equal: bp.atHi[i]}
				bp.edgeTies(i, 0)
			case k <= at+bp.atHi[i]+bp.inside[i]:
				bp.above[i] = at + bp.atHi[i]
				wide = append(wide, i)
			case k <= at+bp.atHi[i]+bp.inside[i]+bp.atLo[i]:
				th[i] = topk.Threshold{Bits: bd.lo, Greater: at + bp.atHi[i] + bp.inside[i], Equal: bp.atLo[i]}
				bp.edgeTies(i, 1)
			default:
				return nil, nil, false
			}
		case !(at < k && k <= at+bp.inside[i]):
			return nil, nil, false
		case bd.lo == bd.hi:
			th[i] = topk.Threshold{Bits: bd.lo, Greater: at, Equal: bp.inside[i]}
		default:
			wide = append(wide, i)
		}
	}
	return th, wide, true
}

// edgeTies copies model i's counts at its band's upper (edge 0) or lower
// (edge 1) edge into the ties of every block.
func (bp *bandPick) edgeTies(i, edge int) {
	for b := range bp.bs {
		bp.ties.at(b)[i] = bp.edges.at(b)[2*i+edge]
	}
}

// wideThresholds finds the thresholds of the wide models from the values
// listed inside their bands, and counts their ties per block. Each worker
// histograms and counts its own lists, on its own core; the first worker's
// histograms take the sums.
func (r *run) wideThresholds(bp *bandPick, wide []int, th []topk.Threshold) error {
	nm := r.p.width()
	first := r.ws[0]
	hiBin, aboveHi := make([]uint32, nm), make([]uint64, nm)
	for _, i := range wide {
		for _, w := range r.ws[1:] {
			first.hists[i].Take(&w.hists[i])
		}
		var err error
		if hiBin[i], aboveHi[i], err = first.hists[i].Pick(bp.need[i] - bp.above[i]); err != nil {
			return err
		}
		first.hists[i].Reset()
	}
	// Each list keeps only its values in the chosen bin (in place, in
	// order), which the tie count below then scans: with bf16 inputs the
	// bin holds the threshold's ties and little else.
	r.eachWorker(func(w *worker) {
		for _, i := range wide {
			in := w.lows[i][:0]
			for _, v := range w.lows[i] {
				if uint32(v)>>16 == hiBin[i] {
					w.hists[i].Inc(uint32(v) & 0xffff)
					in = append(in, v)
				}
			}
			w.lows[i] = in
		}
	})
	for _, i := range wide {
		for _, w := range r.ws[1:] {
			first.hists[i].Take(&w.hists[i])
		}
		var err error
		if th[i], err = topk.Exact(bp.need[i]-bp.above[i], hiBin[i], aboveHi[i], &first.hists[i]); err != nil {
			return err
		}
		th[i].Greater += bp.above[i]
	}
	// A block's values all come from the worker that read it.
	r.eachWorker(func(w *worker) {
		for _, i := range wide {
			for _, v := range w.lows[i] {
				if uint32(v) == th[i].Bits {
					bp.ties.at(int(v >> 32))[i]++
				}
			}
		}
	})
	return nil
}

// sampledCounts is a worker's counts of a sampled select's pass, per model.
type sampledCounts struct {
	above, inside []uint64 // values above and in the band
	atHi, atLo    []uint64 // values at the band's edges, where counted apart
}

func newSampledCounts(models int) sampledCounts {
	return sampledCounts{above: make([]uint64, models), inside: make([]uint64, models),
		atHi: make([]uint64, models), atLo: make([]uint64, models)}
}
