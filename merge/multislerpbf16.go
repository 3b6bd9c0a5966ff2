package merge

import (
	"context"
	"fmt"
	"math"

	"github.com/tiesmm/tiesmm/kernels"
)

// multislerp under compute_dtype: bfloat16, mergekit's torch code on bf16
// tensors, each operation rounded to bf16 (a Python number stays a
// float32; a reduction accumulates in float32 and rounds once; a sum over
// the models adds in model order). With X_k = bf(θ_k − θ₀) (θ_k without a
// base) and w_k the weights rounded to bf16, divided by bf(Σ w) when
// normalising:
//
//	n_k = bf(‖X_k‖); u_k = bf(X_k / bf(n_k + eps))
//	M = bf(Σ_k bf(u_k·w_k)); below bf(‖M‖) < eps two models give
//	bf(bf(X_0·w_0) + bf(X_1·w_1)) and more are an error
//	M̂ = bf(M / bf(‖M‖)); D_k = bf(Σ bf(u_k·M̂))
//	R = bf(Σ_k bf(bf(u_k − bf(D_k·M̂))·w_k)); r = bf(bf(‖R‖) + eps)
//	out = bf(bf(bf(M̂·bf(cos r)) + bf(R·bf(bf(sin r)/r)))·A), A = bf(Σ_k bf(n_k·w_k))
//	plus θ₀, rounded to bf16, with a base.
//
// Each of ‖X_k‖, ‖M‖, D_k and ‖R‖ is an exact sum over the tensor of
// values the previous ones decide, so the tensor takes four passes for
// them and a fifth that writes it; each pass recomputes the elements'
// chain from the inputs.

// msBF16 is one tensor's multislerp scalars under the bf16 compute, filled
// pass by pass.
type msBF16 struct {
	w, div   []float32 // bf16 weights; bf(n_k + eps)
	eps      float32
	meanNorm float32   // bf(‖M‖)
	dots     []float32 // D_k
	cosR     float32
	sinRByR  float32
	avgNorm  float32 // A
	fallback bool    // ‖M‖ < eps with two models: the weighted sum
}

// sphereInputsBF16 fills w.taus with the block's X_k rounded as the bf16
// compute rounds them, and returns the base rounded to bf16 (nil without
// one).
func (r *run) sphereInputsBF16(w *worker, b block, hasBase bool) []float32 {
	j := &r.p.Jobs[b.job]
	n := int(b.n)
	widen := func(dst []float32, t int) []float32 {
		tensor, dt := j.Base, j.BaseDT
		if t >= 0 {
			tensor, dt = j.Models[t], j.ModelDT[t]
		}
		r.k.Widen(dst, r.src(w, tensor, dt, b.start, b.n), dt)
		if dt != kernels.BF16 {
			for e := range dst {
				dst[e] = rbf16(dst[e])
			}
		}
		return dst
	}
	var base []float32
	if hasBase {
		base = widen(w.base[:n], -1)
	}
	for k := range j.Models {
		x := widen(w.taus[k*r.stride:k*r.stride+n], k)
		for e := range base {
			x[e] = rbf16(float32(x[e] - base[e]))
		}
	}
	return base
}

// units sets u_k of element e into u.
func (c *msBF16) units(r *run, w *worker, e int, u []float32) {
	for k := range u {
		u[k] = rbf16(w.taus[k*r.stride+e] / c.div[k])
	}
}

// mean is M of one element from its units.
func (c *msBF16) mean(u []float32) float32 {
	var m float32
	for k, v := range u {
		m = float32(m + rbf16(float32(v*c.w[k])))
	}
	return rbf16(m)
}

// tangent is R of one element from its units and M̂.
func (c *msBF16) tangent(u []float32, mh float32) float32 {
	var s float32
	for k, v := range u {
		t := rbf16(float32(v - rbf16(float32(c.dots[k]*mh))))
		s = float32(s + rbf16(float32(t*c.w[k])))
	}
	return rbf16(s)
}

// mergeMultislerpBF16 merges one tensor by multislerp under the bf16
// compute; one model is returned as it is, rounded to bf16.
func (s *gramTensor) mergeMultislerpBF16(ctx context.Context, r *run, ji int, bs []block, hasBase bool) error {
	j := &r.p.Jobs[ji]
	n := len(j.Models)
	sp := r.p.Method.Sphere
	if n == 1 {
		r.traced(ji, "merge")
		return r.parallel(ctx, bs, func(w *worker, b block) error {
			r.sphereInputsBF16(w, b, false)
			return r.writeValues(w, b, w.taus[:b.n])
		})
	}
	c := msBF16{w: bf16Weights(&j.Params), div: make([]float32, n), dots: make([]float32, n), eps: float32(sp.Eps)}
	if sp.NormalizeWeights {
		var sum float32
		for _, v := range c.w {
			sum = float32(sum + v)
		}
		total := rbf16(sum)
		if total == 0 {
			return fmt.Errorf("multislerp: the weights sum to 0, so they cannot be normalised (set normalize_weights: false, or change the weights)")
		}
		for k, v := range c.w {
			c.w[k] = rbf16(v / total)
		}
	}
	// pass sums, per worker, what add gives each element into sums[0:k].
	pass := func(phase string, k int, add func(w *worker, sums []exactSum, e int, u []float32)) ([]float64, error) {
		r.traced(ji, phase)
		for _, w := range r.ws {
			clear(s.sums[w.id][:k])
		}
		err := r.parallel(ctx, bs, func(w *worker, b block) error {
			r.sphereInputsBF16(w, b, hasBase)
			u := make([]float32, n)
			for e := range int(b.n) {
				add(w, s.sums[w.id], e, u)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		totals := make([]float64, k)
		for i := range totals {
			var sum exactSum
			for _, w := range r.ws {
				sum.merge(&s.sums[w.id][i])
			}
			totals[i] = sum.value()
		}
		return totals, nil
	}
	for _, w := range r.ws {
		if len(s.sums[w.id]) < n {
			s.sums[w.id] = make([]exactSum, n)
		}
	}
	ss, err := pass("multislerp-norms", n, func(w *worker, sums []exactSum, e int, _ []float32) {
		for k := range n {
			x := float64(w.taus[k*r.stride+e])
			sums[k].add(x * x)
		}
	})
	if err != nil {
		return err
	}
	var avg float32
	for k := range n {
		nk := bf16Of64(math.Sqrt(ss[k]))
		c.div[k] = rbf16(float32(nk + c.eps))
		avg = float32(avg + rbf16(float32(nk*c.w[k])))
	}
	c.avgNorm = rbf16(avg)
	mm, err := pass("multislerp-mean", 1, func(w *worker, sums []exactSum, e int, u []float32) {
		c.units(r, w, e, u)
		m := float64(c.mean(u))
		sums[0].add(m * m)
	})
	if err != nil {
		return err
	}
	c.meanNorm = bf16Of64(math.Sqrt(mm[0]))
	if float64(c.meanNorm) < sp.Eps {
		if n != 2 {
			return fmt.Errorf("multislerp: the weighted mean of the %d models' directions has norm %.3g, below eps %g (opposite task vectors whose weights cancel): change the weights", n, c.meanNorm, sp.Eps)
		}
		c.fallback = true
	} else {
		ds, err := pass("multislerp-dots", n, func(w *worker, sums []exactSum, e int, u []float32) {
			c.units(r, w, e, u)
			mh := rbf16(c.mean(u) / c.meanNorm)
			for k, v := range u {
				sums[k].add(float64(rbf16(float32(v * mh))))
			}
		})
		if err != nil {
			return err
		}
		for k := range n {
			c.dots[k] = bf16Of64(ds[k])
		}
		rs, err := pass("multislerp-tangent", 1, func(w *worker, sums []exactSum, e int, u []float32) {
			c.units(r, w, e, u)
			t := float64(c.tangent(u, rbf16(c.mean(u)/c.meanNorm)))
			sums[0].add(t * t)
		})
		if err != nil {
			return err
		}
		tn := rbf16(float32(bf16Of64(math.Sqrt(rs[0])) + c.eps))
		c.cosR = rbf16(float32(math.Cos(float64(tn))))
		c.sinRByR = rbf16(rbf16(float32(math.Sin(float64(tn)))) / tn)
	}
	r.traced(ji, "merge")
	return r.parallel(ctx, bs, func(w *worker, b block) error {
		base := r.sphereInputsBF16(w, b, hasBase)
		u := make([]float32, n)
		out := w.tm[:b.n]
		for e := range out {
			var v float32
			if c.fallback {
				x0, x1 := w.taus[e], w.taus[r.stride+e]
				v = rbf16(float32(rbf16(float32(x0*c.w[0])) + rbf16(float32(x1*c.w[1]))))
			} else {
				c.units(r, w, e, u)
				mh := rbf16(c.mean(u) / c.meanNorm)
				v = rbf16(float32(rbf16(float32(mh*c.cosR)) + rbf16(float32(c.tangent(u, mh)*c.sinRByR))))
				v = rbf16(float32(v * c.avgNorm))
			}
			if base != nil {
				v = rbf16(float32(base[e] + v))
			}
			out[e] = v
		}
		return r.writeValues(w, b, out)
	})
}
