package merge

import (
	"context"
	"math"

	topk "github.com/tiesmm/tiesmm/select"
)

// sce: with select_topk below 1, only the elements whose task vectors vary
// most across the models are kept (an exact top-k of the per-element
// variance, by the radix histograms of the trims); then the minority signs
// are erased and the task vectors summed with weights from their mean
// squares.

// sceTensors merges tensors with sce (PathSCE): the variance select's
// passes if select_topk < 1, a pass for the mean squares, then the merge.
// It owns each worker's histogram, variances and sums.
type sceTensors struct {
	perTensor
	ws []sceScratch // per worker
}

type sceScratch struct {
	hist    *topk.Hist // allocated by the first select
	vars    []float32  // a block's variances
	wide    []float64  // a block's means, squares and deviations, for vars
	sums    []exactSum // per model: Σ τ² of the kept elements
	nonzero uint64
}

func newSCE(workers, models int) *sceTensors {
	s := &sceTensors{ws: make([]sceScratch, workers)}
	for i := range s.ws {
		s.ws[i].sums = make([]exactSum, models)
	}
	return s
}

// sceMask is a tensor's variance select: keep the variances above bits, and
// at bits only the first ties[b] of block b (ties[b] < 0: all of them).
// all: no select.
type sceMask struct {
	all  bool
	bits uint32
	ties []int64
}

func (s *sceTensors) merge(ctx context.Context, r *run, jobs []int) error {
	return eachJob(jobs, func(ji int) error { return s.mergeOne(ctx, r, ji) })
}

func (s *sceTensors) mergeOne(ctx context.Context, r *run, ji int) error {
	r.traced(ji, "sce")
	j := &r.p.Jobs[ji]
	n := len(j.Models)
	bs := r.blocks([]int{ji})
	models := r.allModels(ji)
	for i := range s.ws {
		if s.ws[i].vars == nil {
			s.ws[i].vars = make([]float32, r.stride)
			s.ws[i].wide = make([]float64, 3*r.stride)
		}
	}
	mask := sceMask{all: true}
	if j.Params.SelectTopK < 1 {
		var ok bool
		var err error
		if mask, ok, err = s.selectVariance(ctx, r, ji, bs); err != nil {
			return err
		}
		if !ok { // k = 0: the base
			return r.parallel(ctx, bs, func(w *worker, b block) error {
				return r.writeValues(w, b, r.widenBase(w, b))
			})
		}
	}

	// The mean squares of the kept task vectors.
	for i := range s.ws {
		clear(s.ws[i].sums)
	}
	err := r.parallel(ctx, bs, func(w *worker, b block) error {
		r.deltas(w, b, models)
		sc := &s.ws[w.id]
		s.applyMask(r, w, b, &mask)
		for i := range n {
			for _, v := range w.taus[i*r.stride : i*r.stride+int(b.n)] {
				sc.sums[i].add(float64(v) * float64(v)) // exact: 24+24 bits
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	weights := make([]float32, n)
	var total float64
	for i := range n {
		var sum exactSum
		for k := range s.ws {
			sum.merge(&s.ws[k].sums[i])
		}
		weights[i] = float32(sum.value() / float64(j.Elements))
		total += float64(weights[i])
	}
	if S := float32(total); math.Abs(float64(S)) < 1e-6 {
		for i := range weights {
			weights[i] = 1 / float32(n)
		}
	} else {
		for i := range weights {
			weights[i] /= S
		}
	}

	return r.parallel(ctx, bs, func(w *worker, b block) error {
		base := r.deltas(w, b, models)
		s.applyMask(r, w, b, &mask)
		out := w.tm[:b.n]
		for e := range out {
			out[e] = sceValue(base[e], w.taus[e:], r.stride, weights)
		}
		return r.writeValues(w, b, out)
	})
}

// sceValue is one output from the base and the masked task vectors τ_k =
// taus[k·stride]: the majority sign (+1 where Σ τ_k ≥ 0), each τ_k of that
// sign weighted by its model's weight, divided by the weights summed (at
// least 1e-6).
func sceValue(base float32, taus []float32, stride int, weights []float32) float32 {
	var sum float32
	for k := range weights {
		sum += taus[k*stride]
	}
	pos, neg := sum >= 0, sum < 0 // NaN: neither, so no sign matches
	var num, den float32
	for k, wk := range weights {
		t := taus[k*stride]
		if !(pos && t > 0 || neg && t < 0) {
			wk = 0
		}
		num += float32(t * wk)
		den += wk
	}
	return base + num/max(den, float32(1e-6))
}

// variances fills the worker's variances of block b from w.taus: per
// element, the population variance of its task vectors across the n
// models in float64 (the two-pass form, corrected for the rounding of the
// mean), rounded once to float32; never negative. The models are added in
// order, one model across the block at a time.
func (s *sceTensors) variances(r *run, w *worker, b block, n int) []float32 {
	sc := &s.ws[w.id]
	size := int(b.n)
	v := sc.vars[:size]
	mean, q, c := sc.wide[:size], sc.wide[size:2*size], sc.wide[2*size:3*size]
	clear(mean)
	for k := range n {
		for e, t := range w.taus[k*r.stride : k*r.stride+size] {
			mean[e] += float64(t)
		}
	}
	clear(q)
	clear(c)
	for e := range mean {
		mean[e] /= float64(n)
	}
	for k := range n {
		for e, t := range w.taus[k*r.stride : k*r.stride+size] {
			d := float64(t) - mean[e]
			q[e] += float64(d * d)
			c[e] += d
		}
	}
	for e := range v {
		x := float32((q[e] - float64(c[e]*c[e])/float64(n)) / float64(n))
		if x <= 0 {
			x = 0 // also −0 and a rounding below 0
		}
		v[e] = x
	}
	return v
}

// applyMask zeroes every model's τ of the elements the select leaves out.
func (s *sceTensors) applyMask(r *run, w *worker, b block, mask *sceMask) {
	if mask.all {
		return
	}
	n := len(r.p.Jobs[b.job].Models)
	budget := int64(-1)
	if mask.ties != nil {
		budget = mask.ties[b.index]
	}
	for e, v := range s.variances(r, w, b, n) {
		bits := math.Float32bits(v) & 0x7fffffff
		if bits > mask.bits {
			continue
		}
		if bits == mask.bits && budget != 0 {
			if budget > 0 {
				budget--
			}
			continue
		}
		for k := range n {
			w.taus[k*r.stride+e] = 0
		}
	}
}

// selectVariance finds the variance select of tensor ji: k =
// int(f32(count_nonzero(var))·f32(select_topk)) largest, ties at the cut
// to the lowest flat index. ok is false when k = 0.
func (s *sceTensors) selectVariance(ctx context.Context, r *run, ji int, bs []block) (_ sceMask, ok bool, _ error) {
	j := &r.p.Jobs[ji]
	n := len(j.Models)
	models := r.allModels(ji)
	for i := range s.ws {
		if s.ws[i].hist == nil {
			s.ws[i].hist = new(topk.Hist)
		}
		s.ws[i].hist.Reset()
		s.ws[i].nonzero = 0
	}
	// The high 16 bits of every variance, and the count of non-zero ones.
	err := r.parallel(ctx, bs, func(w *worker, b block) error {
		r.deltas(w, b, models)
		sc := &s.ws[w.id]
		v := s.variances(r, w, b, n)
		sc.hist.AddHigh(v)
		for _, x := range v {
			if x != 0 {
				sc.nonzero++
			}
		}
		return nil
	})
	if err != nil {
		return sceMask{}, false, err
	}
	merged := s.ws[0].hist
	nonzero := s.ws[0].nonzero
	for i := 1; i < len(s.ws); i++ {
		merged.Take(s.ws[i].hist)
		nonzero += s.ws[i].nonzero
	}
	kf := float32(float32(nonzero) * float32(j.Params.SelectTopK))
	if !(kf >= 1) {
		return sceMask{}, false, nil
	}
	k := min(uint64(kf), uint64(j.Elements))
	hi, above, err := merged.Pick(k)
	if err != nil {
		return sceMask{}, false, err
	}
	// The low 16 bits of the variances in bin hi.
	merged.Reset()
	err = r.parallel(ctx, bs, func(w *worker, b block) error {
		r.deltas(w, b, models)
		s.ws[w.id].hist.AddLow(s.variances(r, w, b, n), hi)
		return nil
	})
	if err != nil {
		return sceMask{}, false, err
	}
	for i := 1; i < len(s.ws); i++ {
		merged.Take(s.ws[i].hist)
	}
	th, err := topk.Exact(k, hi, above, merged)
	if err != nil {
		return sceMask{}, false, err
	}
	mask := sceMask{bits: th.Bits}
	if th.Greater+th.Equal == k {
		return mask, true, nil
	}
	// Ties at the cut: count each block's, then keep the first ones.
	counts := newBlockCounts(len(bs), 1)
	err = r.parallel(ctx, bs, func(w *worker, b block) error {
		r.deltas(w, b, models)
		c := int64(0)
		for _, x := range s.variances(r, w, b, n) {
			if math.Float32bits(x)&0x7fffffff == th.Bits {
				c++
			}
		}
		counts.at(b.seq)[0] = c
		return nil
	})
	if err != nil {
		return sceMask{}, false, err
	}
	mask.ties = make([]int64, len(bs))
	left := int64(k - th.Greater)
	for _, b := range bs {
		if c := counts.at(b.seq)[0]; c <= left {
			mask.ties[b.index] = -1
			left -= c
		} else {
			mask.ties[b.index] = left
			left = 0
		}
	}
	return mask, true, nil
}
