package merge

import (
	"context"
	"math"

	topk "github.com/tiesmm/tiesmm/select"
)

// Samples of the inputs and the bands they give: per model, a range of
// magnitudes that holds the threshold with near certainty, over a whole
// model (the single pass) or one tensor (the sampled and speculative
// per-tensor selects).

// band is one model's uncertain range of magnitude patterns, inclusive,
// with the counts of the sample's values in it and at its edges.
type band struct {
	lo, hi       uint32
	pop, atEdges uint64
}

// Sampling: one run of sampleChunk elements in every sampleEvery, but at
// least sampleMinElems per model (a narrower band, so a smaller spill). With
// bf16 inputs a first sample of firstSampleElems is tried (tuning.firstSample),
// and if it leaves a band wide, a second of at least twice its size.
const (
	sampleEvery      = 50
	sampleChunk      = 4096
	sampleMinElems   = 1 << 22
	firstSampleElems = 1 << 20
)

// bandSigmas is the band's half-width around the threshold's expected rank in
// a sample, in standard deviations of a binomial count. The sample's runs are
// contiguous, so the real spread is wider than the binomial's
// (docs/performance.md, tuning).
const bandSigmas = 8

// A tensor's band starts narrower: a miss costs that one tensor a radix
// select and a second merge, not the whole model a second pass, and a
// narrower band puts more tensors' thresholds on one tie group (merged in
// one pass, speculate.go) and fewer values inside the others. Each miss
// doubles the width for the tensors after it, up to bandSigmas twice over,
// so a model whose rows differ more than the binomial allows soon stops
// missing.
const (
	tensorBandSigmas    = 4
	maxTensorBandSigmas = 2 * bandSigmas
)

// scope is the set of elements one threshold per model is chosen over: the
// jobs merged.
type scope struct {
	jobs      []int
	every     int   // sample one run in every
	sampleMin int64 // sample at least this many elements (all if fewer)
	// firstSample: try a sample of about this many elements first (0: no).
	firstSample int64
	total       int64    // elements per model
	need        []uint64 // elements kept per model (more than total: no trim)
	models      []int    // the models trimmed
	bands       []band
	trims       []bool  // per model: trimmed at all
	sample      []block // the sample the bands come from
	sampleSize  int64   // its elements per model
	sigmas      float64 // the bands' half-width, in standard deviations (bandSigmas)
}

func (r *run) newScope(jobs []int, need []uint64) *scope {
	sc := &scope{jobs: jobs, sigmas: bandSigmas, every: r.p.tuning.sampleEvery, sampleMin: r.p.tuning.sampleMin, firstSample: r.p.tuning.firstSample, need: need, bands: make([]band, r.p.width()), trims: make([]bool, r.p.width())}
	for _, ji := range jobs {
		sc.total += r.p.Jobs[ji].Elements
	}
	for i, k := range need {
		if k > 0 && k <= uint64(sc.total) {
			sc.models = append(sc.models, i)
			sc.trims[i] = true
		}
	}
	return sc
}

// sampleBlocks picks runs of sampleChunk elements, one every `every` runs of
// the scope's flat element order, so every element has the same chance to be
// read and every tensor is represented in proportion: the estimate is not
// thrown off by tensors of very different scales.
func (r *run) sampleBlocks(sc *scope, every int64) []block {
	p := r.p
	if every <= 1 {
		return r.blocks(sc.jobs)
	}
	step := every * p.tuning.sampleChunk
	// Walked twice: to count the runs' pieces, then to list them in a
	// slice of that size.
	walk := func(emit func(b block)) {
		var flat int64 // flat index of the job's first element
		next := step / 2
		for _, ji := range sc.jobs {
			e, B := p.Jobs[ji].Elements, int64(r.blockSize(ji))
			for next < flat+e {
				start := next - flat
				n := min(p.tuning.sampleChunk, e-start)
				for n > 0 { // a run never crosses a block of the job
					m := min(n, B-start%B)
					emit(block{job: ji, index: int(start / B), start: start, n: m})
					start, n = start+m, n-m
				}
				next += step
			}
			flat += e
		}
	}
	count := 0
	walk(func(block) { count++ })
	if count == 0 {
		return r.blocks(sc.jobs)
	}
	bs := make([]block, 0, count)
	walk(func(b block) {
		b.seq = len(bs)
		bs = append(bs, b)
	})
	return bs
}

// sampleBands reads a sample of the scope and sets each trimmed model's
// band; it returns the sample's size. A first, smaller sample is kept if it
// puts every band on one value.
func (r *run) sampleBands(ctx context.Context, sc *scope) (int64, error) {
	every := min(int64(sc.every), sc.total/max(1, sc.sampleMin))
	if first := sc.total / max(1, sc.firstSample); sc.firstSample > 0 && first >= 2*every {
		size, err := r.sampleBandsFrom(ctx, sc, r.sampleBlocks(sc, first))
		if err != nil {
			return 0, err
		}
		single := true
		for _, i := range sc.models {
			single = single && sc.bands[i].lo == sc.bands[i].hi
		}
		if single {
			return size, nil
		}
		// The first sample missed one value, mostly by a little: a sample
		// of twice its size, not sampleMin, is then enough.
		every = min(int64(sc.every), sc.total/(2*sc.firstSample))
		more, err := r.sampleBandsFrom(ctx, sc, r.sampleBlocks(sc, every))
		return size + more, err
	}
	return r.sampleBandsFrom(ctx, sc, r.sampleBlocks(sc, every))
}

func (r *run) sampleBandsFrom(ctx context.Context, sc *scope, sample []block) (int64, error) {
	sc.sample = sample
	var size int64
	for _, b := range sample {
		size += b.n
	}
	sc.sampleSize = size
	for _, i := range sc.models {
		sc.bands[i].pop, sc.bands[i].atEdges = 0, 0
	}
	high, err := r.histPass(ctx, sample, sc.models, nil, histHighSide)
	if err != nil {
		return 0, err
	}
	sides := r.sides(sc.models)
	// Ranks in the sample, from the top, that bracket the threshold: its
	// expected rank ± bandSigmas standard deviations of a binomial count,
	// plus a little for the runs being contiguous.
	nm := r.p.width()
	type edge struct {
		rank  uint64
		hi    uint32
		high  uint64
		count uint64 // values in bin hi
	}
	edges := make([][2]edge, nm)
	for _, i := range sc.models {
		q := float64(sc.need[i]) / float64(sc.total)
		r0 := q * float64(size)
		d := sc.sigmas*math.Sqrt(float64(size)*q*(1-q)) + 0.0002*float64(size) + 64
		if size == sc.total {
			d = 0 // the whole scope was read: the band is the threshold itself
		}
		top, bot := uint64(max(1, r0-d)), uint64(max(1, min(float64(size), r0+d)))
		for s, rank := range []uint64{top, bot} {
			bin, above, err := high[i].Pick(rank)
			if err != nil {
				return 0, err
			}
			edges[i][s] = edge{rank: rank, hi: bin, high: above, count: high[i].Count(bin)}
		}
	}
	same := true // both edges in one high bin for every model: one low pass
	for _, i := range sc.models {
		same = same && edges[i][0].hi == edges[i][1].hi
	}
	var low []*topk.Hist
	for s := range 2 {
		his := make([]uint32, nm)
		for _, i := range sc.models {
			his[i] = edges[i][s].hi
		}
		switch {
		case s == 1 && same:
		case sides != nil:
			low = make([]*topk.Hist, nm)
			for _, i := range sc.models {
				low[i] = &r.ws[0].hists[i]
				low[i].LowFrom(his[i], edges[i][s].count, sides[i])
			}
		default:
			var err error
			if low, err = r.histPass(ctx, sample, sc.models, his, histLow); err != nil {
				return 0, err
			}
		}
		for _, i := range sc.models {
			e := edges[i][s]
			th, err := topk.Exact(e.rank, e.hi, e.high, low[i])
			if err != nil {
				return 0, err
			}
			if s == 0 {
				sc.bands[i].hi = th.Bits
				sc.bands[i].pop -= th.Greater
				sc.bands[i].atEdges = th.Equal
			} else {
				sc.bands[i].lo = th.Bits
				sc.bands[i].pop += th.Greater + th.Equal
				if sc.bands[i].lo != sc.bands[i].hi {
					sc.bands[i].atEdges += th.Equal
				}
			}
		}
	}
	return size, nil
}

// sides gathers the workers' lists of the last histHighSide pass, per
// model; nil if one overflowed (the low histograms then take passes).
func (r *run) sides(models []int) [][]uint32 {
	all := make([][]uint32, r.p.width())
	for _, w := range r.ws {
		if w.sideFull {
			return nil
		}
	}
	for _, i := range models {
		n := 0
		for _, w := range r.ws {
			n += len(w.side[i])
		}
		all[i] = make([]uint32, 0, n) // the exact size: the plan counts one copy
		for _, w := range r.ws {
			all[i] = append(all[i], w.side[i]...)
		}
	}
	return all
}

// sampleTensor reads a sample of one tensor and sets its bands.
func (r *run) sampleTensor(ctx context.Context, ji int, need []uint64) (*scope, error) {
	sc := r.newScope([]int{ji}, need)
	sc.sampleMin = min(r.p.tuning.sampleMin, r.p.tuning.tensorSampleMin)
	sc.every, sc.firstSample = r.p.tuning.tensorSampleEvery, 0 // a tensor's sample is small already
	sc.sigmas = r.tensorSigmas
	_, err := r.sampleBands(ctx, sc)
	return sc, err
}

// sampleMissed counts a tensor whose sample missed its threshold and widens
// the bands of the tensors after it.
func (r *run) sampleMissed() {
	r.missed++
	r.tensorSigmas = min(maxTensorBandSigmas, 2*r.tensorSigmas)
}

// sideLists is a worker's list, per model, of the |τ| patterns with low
// bits of a sample's high pass (topk's AddHighSide); sideFull: one did not
// fit.
type sideLists struct {
	side     [][]uint32
	sideFull bool
}
