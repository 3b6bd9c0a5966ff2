package merge

import (
	"context"
	"math"

	"github.com/tiesmm/tiesmm/kernels"
)

// slerp and nuslerp under compute_dtype: bfloat16, as mergekit computes
// them with dtype: bfloat16. Every input is rounded to bf16 first.
//
// slerp converts its inputs to float32 (numpy) and its result back to
// bf16: the float32 chain on bf16 inputs, rounded to bf16.
//
// nuslerp runs torch operations on bf16 tensors, each rounded to bf16
// (a Python number it meets stays a float32; a reduction accumulates in
// float32 and rounds once), per vector:
//
//	v = bf(θ − θ₀) with a base, else θ
//	n = max(bf(‖v‖), bf(1e-7)); u = bf(v / n)
//	c = clamp(bf(Σ bf(u0·u1)), −1, 1); θ = bf(acos c); s = bf(sin θ)
//	where |s| < 1e-8 (or c = −1, the fix): out = bf(bf((1−t)·v0) + bf(t·v1))
//	else out = bf(bf(bf(a0·v0) + bf(a1·v1)) / s), a0 = bf(sin bf((1−t)·θ)),
//	a1 = bf(sin bf(t·θ))
//	θ₀ + out rounded to bf16 with a base.
//
// The norms and the dot product of the units are exact sums rounded once
// to bf16, so they take a pass each before the combining pass (rows: all
// three within the block that holds the row).

// slerpInputsBF16 is slerpInputs under the bf16 compute: every input
// rounded to bf16; nuslerp's vectors against a base are bf(θᵢ − θ₀), and
// its base is nil without one.
func (r *run) slerpInputsBF16(w *worker, b block) (base, v0, v1 []float32) {
	j := &r.p.Jobs[b.job]
	n := int(b.n)
	widen := func(dst []float32, i int) []float32 {
		t, dt := j.Base, j.BaseDT
		if i >= 0 {
			t, dt = j.Models[i], j.ModelDT[i]
		}
		r.k.Widen(dst, r.src(w, t, dt, b.start, b.n), dt)
		if dt != kernels.BF16 {
			for e := range dst {
				dst[e] = rbf16(dst[e])
			}
		}
		return dst
	}
	if r.p.Method.Slerp == SlerpPair {
		v0 = widen(w.base[:n], -1)
		return v0, v0, widen(w.taus[:n], 0)
	}
	v0, v1 = widen(w.taus[:n], 0), widen(w.taus[r.stride:r.stride+n], 1)
	if r.p.Method.NoBase {
		return nil, v0, v1
	}
	base = widen(w.base[:n], -1)
	for e := range base {
		v0[e] = rbf16(float32(v0[e] - base[e]))
		v1[e] = rbf16(float32(v1[e] - base[e]))
	}
	return base, v0, v1
}

// nuBF16 is one nuslerp vector's bf16 scalars: its norms first, then the
// interpolation's coefficients from the dot product of the units.
type nuBF16 struct {
	n0, n1        float32 // clamped bf16 norms
	lerp          bool
	t0, t1        float32 // float32(1 − t), float32(t)
	a0, a1, sinTh float32
}

// nuNorms sets the clamped bf16 norms from the exact Σv0², Σv1².
func (c *nuBF16) nuNorms(t, ss0, ss1 float64) {
	eps := rbf16(1e-7)
	c.n0 = max(bf16Of64(math.Sqrt(ss0)), eps)
	c.n1 = max(bf16Of64(math.Sqrt(ss1)), eps)
	c.t0, c.t1 = float32(1-t), float32(t)
}

// unitProduct is bf(u0·u1) of one element: a term of the units' dot
// product.
func (c *nuBF16) unitProduct(v0, v1 float32) float64 {
	return float64(rbf16(float32(rbf16(v0/c.n0) * rbf16(v1/c.n1))))
}

// angle sets the coefficients from the exact Σ bf(u0·u1).
func (c *nuBF16) angle(dot float64) {
	cos := min(max(bf16Of64(dot), -1), 1)
	theta := rbf16(float32(math.Acos(float64(cos))))
	c.sinTh = rbf16(float32(math.Sin(float64(theta))))
	c.lerp = math.Abs(float64(c.sinTh)) < 1e-8 || cos == -1
	c.a0 = rbf16(float32(math.Sin(float64(rbf16(float32(c.t0 * theta))))))
	c.a1 = rbf16(float32(math.Sin(float64(rbf16(float32(c.t1 * theta))))))
}

// combine is one element's interpolation, plus its base value with one.
func (c *nuBF16) combine(v0, v1 float32, base []float32, e int) float32 {
	var v float32
	if c.lerp {
		v = rbf16(float32(rbf16(float32(c.t0*v0)) + rbf16(float32(c.t1*v1))))
	} else {
		v = rbf16(rbf16(float32(rbf16(float32(c.a0*v0))+rbf16(float32(c.a1*v1)))) / c.sinTh)
	}
	if base != nil {
		v = rbf16(float32(base[e] + v))
	}
	return v
}

// mergeNuBF16 merges one tensor by nuslerp under the bf16 compute.
func (s *slerpTensors) mergeNuBF16(ctx context.Context, r *run, ji int, bs []block) error {
	j := &r.p.Jobs[ji]
	t := j.Params.T
	if r.p.slerpAxis(ji) == AxisRows {
		r.traced(ji, "slerp-rows")
		row := lastAxisLen(*j)
		return r.parallel(ctx, bs, func(w *worker, b block) error {
			base, v0, v1 := r.slerpInputs(w, b)
			out := w.tm[:b.n]
			for st := 0; st < len(v0); st += row {
				var ss0, ss1, dot wideSum
				for e := st; e < st+row; e++ {
					ss0.add(float64(v0[e]) * float64(v0[e]))
					ss1.add(float64(v1[e]) * float64(v1[e]))
				}
				var co nuBF16
				co.nuNorms(t, ss0.value(), ss1.value())
				for e := st; e < st+row; e++ {
					dot.add(co.unitProduct(v0[e], v1[e]))
				}
				co.angle(dot.value())
				for e := st; e < st+row; e++ {
					out[e] = co.combine(v0[e], v1[e], base, e)
				}
			}
			return r.writeValues(w, b, out)
		})
	}
	vecs := 1
	if r.p.slerpAxis(ji) == AxisColumns {
		vecs = slerpColumns(j)
	}
	coef := make([]nuBF16, vecs)
	// Each pass adds to the per-worker sums of the vector an element's
	// column picks (vecs == 1: the tensor's exact sums).
	pass := func(phase string, add func(w *worker, col int, v0, v1 float32)) error {
		r.traced(ji, phase)
		for _, w := range r.ws {
			if vecs == 1 {
				s.tensor[w.id] = [3]exactSum{}
				continue
			}
			if len(s.sums[w.id]) < 3*vecs {
				s.sums[w.id] = make([]wideSum, 3*vecs)
			}
			clear(s.sums[w.id][:3*vecs])
		}
		return r.parallel(ctx, bs, func(w *worker, b block) error {
			_, v0, v1 := r.slerpInputs(w, b)
			col := int(b.start % int64(vecs))
			for e := range v0 {
				add(w, col, v0[e], v1[e])
				if col++; col == vecs {
					col = 0
				}
			}
			return nil
		})
	}
	total := func(v, k int) float64 {
		if vecs == 1 {
			var sum exactSum
			for _, w := range r.ws {
				sum.merge(&s.tensor[w.id][k])
			}
			return sum.value()
		}
		var sum wideSum
		for _, w := range r.ws {
			sum.merge(&s.sums[w.id][3*v+k])
		}
		return sum.value()
	}
	adder := func(w *worker, col, k int) interface{ add(float64) } {
		if vecs == 1 {
			return &s.tensor[w.id][k]
		}
		return &s.sums[w.id][3*col+k]
	}
	err := pass("slerp-norms", func(w *worker, col int, v0, v1 float32) {
		adder(w, col, 0).add(float64(v0) * float64(v0))
		adder(w, col, 1).add(float64(v1) * float64(v1))
	})
	if err != nil {
		return err
	}
	for v := range coef {
		coef[v].nuNorms(t, total(v, 0), total(v, 1))
	}
	err = pass("slerp-units", func(w *worker, col int, v0, v1 float32) {
		adder(w, col, 2).add(coef[col].unitProduct(v0, v1))
	})
	if err != nil {
		return err
	}
	for v := range coef {
		coef[v].angle(total(v, 2))
	}
	r.traced(ji, "slerp-merge")
	return r.parallel(ctx, bs, func(w *worker, b block) error {
		base, v0, v1 := r.slerpInputs(w, b)
		out := w.tm[:b.n]
		col := int(b.start % int64(vecs))
		for e := range out {
			out[e] = coef[col].combine(v0[e], v1[e], base, e)
			if col++; col == vecs {
				col = 0
			}
		}
		return r.writeValues(w, b, out)
	})
}
