package merge

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"

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

// sampledPick returns the exact thresholds of the models with 0 < need ≤ n
// over one tensor's blocks bs, with the count of values at each threshold in
// every block (by block seq), or ok = false if the sample missed or the
// values in a band outgrew their lists (counted in r.missed, r.crowded).
// sc, if not nil, is the sample, already read.
func (r *run) sampledPick(ctx context.Context, bs []block, need []uint64, sc *scope) (_ []topk.Threshold, ties blockCounts, ok bool, _ error) {
	r.traced(bs[0].job, "sampled")
	if sc == nil {
		var err error
		if sc, err = r.sampleTensor(ctx, bs[0].job, need); err != nil {
			return nil, blockCounts{}, false, err
		}
	}
	nm := len(r.p.Models)
	r.dropLows()
	for _, i := range sc.models {
		r.ws[0].hists[i].Reset() // the others were emptied by Take
	}
	defer func() {
		if !ok { // keep the others empty for the next histPass
			for _, w := range r.ws[1:] {
				for _, i := range sc.models {
					w.hists[i].Reset()
				}
			}
		}
	}()
	// A band's edges often fall on big tie groups (bf16 task vectors take
	// few values): where they hold a good share of the band's values, or
	// the values would outgrow the lists, the values at the edges are
	// counted, block by block, by the kernel, and only those strictly inside
	// listed. The threshold is then an edge, or one of the few inside.
	edged := make([]bool, nm)
	var edges blockCounts // by block seq: per model the values at hi, at lo
	for _, i := range sc.models {
		bd := sc.bands[i]
		estimate := float64(bd.pop) * float64(sc.total) / float64(max(1, sc.sampleSize))
		edged[i] = bd.lo != bd.hi && (10*bd.atEdges >= bd.pop || estimate > float64(r.ws[0].lowsCap*len(r.ws))/2)
	}
	if slices.Contains(edged, true) {
		edges = newBlockCounts(len(bs), 2*nm)
	}
	// A band of one value (a tie group: common in bf16 task vectors) needs
	// only counts, which are then also the ties of each block.
	ties = newBlockCounts(len(bs), nm)
	err := r.parallel(ctx, bs, func(w *worker, b block) error {
		j := &r.p.Jobs[b.job]
		base := r.widenBase(w, b)
		bt := ties.at(b.seq)
		var be []int64
		if edges.v != nil {
			be = edges.at(b.seq)
		}
		for _, i := range sc.models {
			dt := j.ModelDT[i]
			src := r.src(w, j.Models[i], dt, b.start, b.n)
			lo, hi := sc.bands[i].lo, sc.bands[i].hi
			if lo == hi {
				above, inside := r.k.DeltaRange(src, dt, base, lo, hi, nil)
				w.above[i] += uint64(above)
				w.inside[i] += uint64(inside)
				bt[i] = int64(inside)
				continue
			}
			if edged[i] {
				above, atHi := r.k.DeltaRange(src, dt, base, hi, hi, nil)
				_, atLo := r.k.DeltaRange(src, dt, base, lo, lo, nil)
				w.above[i] += uint64(above)
				w.atHi[i] += uint64(atHi)
				w.atLo[i] += uint64(atLo)
				be[2*i], be[2*i+1] = int64(atHi), int64(atLo)
				if hi-lo < 2 {
					continue // nothing strictly inside
				}
				lo, hi = lo+1, hi-1
			}
			above, inside := r.k.DeltaRange(src, dt, base, lo, hi, w.idx)
			if edged[i] {
				above = 0 // counted above, with the values at hi
			}
			w.above[i] += uint64(above)
			w.inside[i] += uint64(inside)
			if w.lowsFull || len(w.lows[i])+inside > w.lowsCap {
				w.lowsFull = true
				continue
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
				lows = append(lows, uint64(b.seq)<<32|uint64(m))
				h.Inc(m >> 16)
			}
			w.lows[i] = lows
		}
		return nil
	})
	defer r.dropLows()
	above, inside := make([]uint64, nm), make([]uint64, nm)
	atHi, atLo := make([]uint64, nm), make([]uint64, nm)
	full := false
	for _, w := range r.ws {
		for _, i := range sc.models {
			above[i] += w.above[i]
			inside[i] += w.inside[i]
			atHi[i] += w.atHi[i]
			atLo[i] += w.atLo[i]
			w.above[i], w.inside[i], w.atHi[i], w.atLo[i] = 0, 0, 0, 0
		}
		full = full || w.lowsFull
	}
	if full && err == nil {
		r.crowded++
	}
	if err != nil || full {
		return nil, blockCounts{}, false, err
	}
	th := make([]topk.Threshold, nm)
	var wide []int // models whose threshold is one of the values listed
	for _, i := range sc.models {
		bd := sc.bands[i]
		if edged[i] {
			// From the top: above hi, at hi, strictly inside, at lo.
			k, at := need[i], above[i]
			switch {
			case k <= at:
				r.sampleMissed()
				return nil, blockCounts{}, false, nil
			case k <= at+atHi[i]:
				th[i] = topk.Threshold{Bits: bd.hi, Greater: at, Equal: atHi[i]}
				for b := range bs {
					ties.at(b)[i] = edges.at(b)[2*i]
				}
			case k <= at+atHi[i]+inside[i]:
				above[i] = at + atHi[i]
				wide = append(wide, i)
			case k <= at+atHi[i]+inside[i]+atLo[i]:
				th[i] = topk.Threshold{Bits: bd.lo, Greater: at + atHi[i] + inside[i], Equal: atLo[i]}
				for b := range bs {
					ties.at(b)[i] = edges.at(b)[2*i+1]
				}
			default:
				r.sampleMissed()
				return nil, blockCounts{}, false, nil
			}
			continue
		}
		if !(above[i] < need[i] && need[i] <= above[i]+inside[i]) {
			r.sampleMissed()
			return nil, blockCounts{}, false, nil
		}
		if bd.lo == bd.hi {
			th[i] = topk.Threshold{Bits: bd.lo, Greater: above[i], Equal: inside[i]}
		} else {
			wide = append(wide, i)
		}
	}
	// The histograms of edged models decided at an edge: not needed.
	for _, i := range sc.models {
		if edged[i] && !slices.Contains(wide, i) {
			for _, w := range r.ws {
				w.hists[i].Reset()
			}
		}
	}
	if len(wide) == 0 {
		return th, ties, true, nil
	}
	// The values collected in wide bands: each worker histograms and counts
	// its own, on its own core; the first worker's histograms take the sums.
	first := r.ws[0]
	hiBin, aboveHi := make([]uint32, nm), make([]uint64, nm)
	for _, i := range wide {
		for _, w := range r.ws[1:] {
			first.hists[i].Take(&w.hists[i])
		}
		if hiBin[i], aboveHi[i], err = first.hists[i].Pick(need[i] - above[i]); err != nil {
			return nil, blockCounts{}, false, err
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
		if th[i], err = topk.Exact(need[i]-above[i], hiBin[i], aboveHi[i], &first.hists[i]); err != nil {
			return nil, blockCounts{}, false, err
		}
		th[i].Greater += above[i]
	}
	// A block's values all come from the worker that read it.
	r.eachWorker(func(w *worker) {
		for _, i := range wide {
			for _, v := range w.lows[i] {
				if uint32(v) == th[i].Bits {
					ties.at(int(v >> 32))[i]++
				}
			}
		}
	})
	return th, ties, true, nil
}

// sampleTensor reads a sample of one tensor and sets its bands.
func (r *run) sampleTensor(ctx context.Context, ji int, need []uint64) (*scope, error) {
	sc := r.newScope([]int{ji}, need)
	sc.sampleMin = min(r.p.sampleMin, r.p.tensorSampleMin)
	sc.every, sc.firstSample = r.p.tensorSampleEvery, 0 // a tensor's sample is small already
	sc.sigmas = r.tensorSigmas
	_, err := r.sampleBands(ctx, sc)
	return sc, err
}

// eachWorker runs f for every worker, each on its own goroutine, and waits.
func (r *run) eachWorker(f func(w *worker)) {
	var wg sync.WaitGroup
	for _, w := range r.ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(w)
		}()
	}
	wg.Wait()
}

// sampleMissed counts a tensor whose sample missed its threshold and widens
// the bands of the tensors after it.
func (r *run) sampleMissed() {
	r.missed++
	r.tensorSigmas = min(maxTensorBandSigmas, 2*r.tensorSigmas)
}
