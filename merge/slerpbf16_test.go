package merge

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// bf is x rounded to bf16, the test's own rounding: round to nearest even
// on the float32 bits, NaN kept.
func bf(x float32) float32 {
	if x != x {
		return x
	}
	u := math.Float32bits(x)
	u += 0x7fff + (u>>16)&1
	return math.Float32frombits(u &^ 0xffff)
}

// bf64 rounds an exact value (given as a float64 from an exact sum) to bf16
// in one step, through big-float free reasoning: the float64's distance to
// the two bf16 neighbours decides, ties to even.
func bf64(v float64) float32 {
	f := float32(v)
	lo := math.Float32frombits(math.Float32bits(f) &^ 0xffff) // toward zero
	hi := math.Float32frombits(math.Float32bits(lo) + 0x10000)
	dl, dh := math.Abs(v-float64(lo)), math.Abs(float64(hi)-v)
	switch {
	case dl < dh:
		return lo
	case dh < dl:
		return hi
	case math.Float32bits(lo)&0x10000 == 0:
		return lo
	}
	return hi
}

// refSlerpBF16 is slerp and nuslerp under compute_dtype: bfloat16, taken
// literally from the spec: inputs rounded to bf16, each torch operation
// rounded to bf16, reductions exact and rounded once.
func refSlerpBF16(m Method, base, x0, x1 []float32, shape []int64, t float64) []float32 {
	n := len(base)
	b, a0, a1 := make([]float32, n), make([]float32, n), make([]float32, n)
	for e := range n {
		b[e] = bf(base[e])
		a0[e] = bf(x0[e])
		if x1 != nil {
			a1[e] = bf(x1[e])
		}
	}
	out := make([]float32, n)
	if m.Slerp == SlerpPair {
		c := pairCoef(t, refDot(b, b), refDot(a0, a0), refDot(b, a0))
		for e := range out {
			out[e] = bf(float32(c.a0*b[e]) + float32(c.a1*a0[e]))
		}
		return out
	}
	v0, v1 := a0, a1
	if !m.NoBase {
		v0, v1 = make([]float32, n), make([]float32, n)
		for e := range n {
			v0[e], v1[e] = bf(a0[e]-b[e]), bf(a1[e]-b[e])
		}
	}
	t0, t1 := float32(1-t), float32(t)
	for _, idx := range refSlerpVectors(shape, n, m.SlerpAxis) {
		p, q := make([]float32, len(idx)), make([]float32, len(idx))
		for k, e := range idx {
			p[k], q[k] = v0[e], v1[e]
		}
		eps := bf(1e-7)
		n0 := max(bf64(math.Sqrt(refDot(p, p))), eps)
		n1 := max(bf64(math.Sqrt(refDot(q, q))), eps)
		prods := make([]float32, len(idx))
		ones := make([]float32, len(idx))
		for k := range p {
			prods[k] = bf(bf(p[k]/n0) * bf(q[k]/n1))
			ones[k] = 1
		}
		c := min(max(bf64(refDot(prods, ones)), -1), 1)
		th := bf(float32(math.Acos(float64(c))))
		s := bf(float32(math.Sin(float64(th))))
		c0 := bf(float32(math.Sin(float64(bf(t0 * th)))))
		c1 := bf(float32(math.Sin(float64(bf(t1 * th)))))
		for k, e := range idx {
			var v float32
			if math.Abs(float64(s)) < 1e-8 || c == -1 {
				v = bf(bf(t0*p[k]) + bf(t1*q[k]))
			} else {
				v = bf(bf(bf(c0*p[k])+bf(c1*q[k])) / s)
			}
			if !m.NoBase {
				v = bf(b[e] + v)
			}
			out[e] = v
		}
	}
	return out
}

// Under compute_dtype: bfloat16 the engine meets refSlerpBF16 bit for bit
// (the output rounding of a bf16 value aside), on tensors meeting at every
// angle, every kernel set, one to three workers and several block sizes.
func TestSlerpBF16MatchesReference(t *testing.T) {
	cases := []struct {
		name   string
		method string
		noBase bool
		axis   SlerpAxis
	}{
		{"slerp", "slerp", false, AxisTensor},
		{"nuslerp", "nuslerp", false, AxisTensor},
		{"nuslerp-nobase", "nuslerp", true, AxisTensor},
		{"nuslerp-rows", "nuslerp", false, AxisRows},
		{"nuslerp-columns", "nuslerp", false, AxisColumns},
		{"nuslerp-columns-nobase", "nuslerp", true, AxisColumns},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for trial := range 3 {
				r := rand.New(rand.NewPCG(uint64(ci)+100, uint64(trial)))
				m := newMethod(t, tc.method, "")
				m.NoBase, m.SlerpAxis, m.Compute = tc.noBase, tc.axis, kernels.BF16
				set := slerpSet(r)
				nm := 2
				if m.Slerp == SlerpPair {
					nm, set.models = 1, set.models[:1]
				}
				tv := []float64{0.5, 0.25, 0.9, -0.2, 1.3}[r.IntN(5)]
				dir := t.TempDir()
				base, models := set.write(t, dir, r)
				if m.NoBase {
					base = models[0]
				}
				outDT := []kernels.DType{kernels.F32, kernels.F16, kernels.BF16}[r.IntN(3)]
				for ki, ks := range kernels.Available() {
					for run := range 3 {
						opts := Options{Base: base, Models: models, Out: filepath.Join(dir, fmt.Sprintf("out-%d-%d", ki, run)),
							Threads: 1 + run, BlockElems: []int{1, 7, 64, 0}[r.IntN(4)], Kernels: ks, OutDType: outDT.String()}
						p, err := NewPlan(opts, m, func(string, int, int) (TensorParams, error) { return slerpParams(tv, nm)(""), nil })
						if err != nil {
							t.Fatal(err)
						}
						if _, err := Run(context.Background(), p, nil, nil); err != nil {
							t.Fatal(err)
						}
						md, data := readModel(t, opts.Out)
						for ti, bt := range set.base {
							var x1 []float32
							if nm > 1 {
								x1 = set.models[1][ti].vals
							}
							bv := bt.vals
							if m.NoBase {
								bv = set.models[0][ti].vals
							}
							want := refSlerpBF16(m, bv, set.models[0][ti].vals, x1, bt.shape, tv)
							dt, _ := floatDType(md.Tensors[bt.name].DType)
							got := decode(dt, data[bt.name])
							for e, w := range want {
								if rw := roundTo(dt, w); !sameFloat(got[e], rw) {
									t.Fatalf("kernels %s, %d threads, block %d: %s[%d] = %v, reference %v",
										ks.Name, opts.Threads, opts.BlockElems, bt.name, e, got[e], rw)
								}
							}
						}
					}
				}
			}
		})
	}
}

// refMultislerpBF16 is multislerp under compute_dtype: bfloat16 taken
// literally from the spec, whole tensors at a time: each operation rounded
// to bf16, reductions exact and rounded once, sums over models in float32
// in model order. ok is false where the spec is an error.
func refMultislerpBF16(base []float32, models [][]float32, weights []float32, normalize, hasBase bool, eps float64) (out []float32, ok bool) {
	n, size := len(models), len(base)
	xs := make([][]float32, n)
	for k, x := range models {
		xs[k] = make([]float32, size)
		for e := range x {
			xs[k][e] = bf(x[e])
			if hasBase && n > 1 {
				xs[k][e] = bf(xs[k][e] - bf(base[e]))
			}
		}
	}
	if n == 1 {
		return xs[0], true
	}
	w := make([]float32, n)
	var total float32
	for k := range w {
		w[k] = bf(weights[k])
		total += w[k]
	}
	if normalize {
		if bf(total) == 0 {
			return nil, false
		}
		for k := range w {
			w[k] = bf(w[k] / bf(total))
		}
	}
	sum := func(v []float32) float64 { // exact Σ v
		ones := make([]float32, len(v))
		for e := range ones {
			ones[e] = 1
		}
		return refDot(v, ones)
	}
	e32 := float32(eps)
	norms := make([]float32, n)
	units := make([][]float32, n)
	var avg float32
	for k := range n {
		norms[k] = bf64(math.Sqrt(refDot(xs[k], xs[k])))
		d := bf(norms[k] + e32)
		units[k] = make([]float32, size)
		for e := range size {
			units[k][e] = bf(xs[k][e] / d)
		}
		avg += bf(norms[k] * w[k])
	}
	avg = bf(avg)
	mean := make([]float32, size)
	for e := range mean {
		var s float32
		for k := range n {
			s += bf(units[k][e] * w[k])
		}
		mean[e] = bf(s)
	}
	mn := bf64(math.Sqrt(refDot(mean, mean)))
	out = make([]float32, size)
	if float64(mn) < eps {
		if n != 2 {
			return nil, false
		}
		for e := range out {
			out[e] = bf(bf(xs[0][e]*w[0]) + bf(xs[1][e]*w[1]))
		}
	} else {
		for e := range mean {
			mean[e] = bf(mean[e] / mn)
		}
		tangent := make([]float32, size)
		for k := range n {
			prods := make([]float32, size)
			for e := range prods {
				prods[e] = bf(units[k][e] * mean[e])
			}
			dk := bf64(sum(prods))
			for e := range tangent {
				tangent[e] += bf(bf(units[k][e]-bf(dk*mean[e])) * w[k])
			}
		}
		for e := range tangent {
			tangent[e] = bf(tangent[e])
		}
		tn := bf(bf64(math.Sqrt(refDot(tangent, tangent))) + e32)
		cs := bf(float32(math.Cos(float64(tn))))
		q := bf(bf(float32(math.Sin(float64(tn)))) / tn)
		for e := range out {
			out[e] = bf(bf(bf(mean[e]*cs)+bf(tangent[e]*q)) * avg)
		}
	}
	if hasBase {
		for e := range out {
			out[e] = bf(bf(base[e]) + out[e])
		}
	}
	return out, true
}

// Under compute_dtype: bfloat16 multislerp meets refMultislerpBF16 bit for
// bit: one to four models, with and without a base and normalisation, every
// kernel set, one to three workers, several block sizes.
func TestMultislerpBF16MatchesReference(t *testing.T) {
	for trial := range 6 {
		r := rand.New(rand.NewPCG(7, uint64(trial)))
		n := 1 + trial%4
		m := sphereMethod(t, "multislerp", func(s *Sphere) { s.NormalizeWeights = trial%3 != 2 })
		m.NoBase = trial%2 == 1
		m.Compute = kernels.BF16
		c := randomSphereCase(r, n)
		weights := make([]float32, n)
		for k := range weights {
			weights[k] = float32(0.25 + r.Float64())
		}
		dir := t.TempDir()
		basePath := filepath.Join(dir, "base")
		writeModel(t, basePath, c.base, 0)
		var paths []string
		for k, md := range c.models {
			p := filepath.Join(dir, fmt.Sprintf("ft%d", k+1))
			writeModel(t, p, md, 0)
			paths = append(paths, p)
		}
		for ki, ks := range kernels.Available() {
			for run := range 3 {
				out := filepath.Join(dir, fmt.Sprintf("out-%d-%d", ki, run))
				opts := Options{Base: basePath, Models: paths, Out: out, OutDType: "F32", Threads: 1 + run,
					BlockElems: []int{1, 7, 1000, 0}[r.IntN(4)], Kernels: ks}
				p, err := NewPlan(opts, m, func(string, int, int) (TensorParams, error) {
					return TensorParams{Weights: weights, Density: make([]float64, n), Gamma: make([]float64, n), Epsilon: make([]float64, n), Lambda: 1}, nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := Run(context.Background(), p, nil, nil); err != nil {
					t.Fatal(err)
				}
				_, data := readModel(t, out)
				for ti, bt := range c.base {
					models := make([][]float32, n)
					for k := range n {
						models[k] = c.models[k][ti].vals
					}
					want, ok := refMultislerpBF16(bt.vals, models, weights, m.Sphere.NormalizeWeights, !m.NoBase, m.Sphere.Eps)
					if !ok {
						t.Fatalf("trial %d: %s: the reference refuses the case", trial, bt.name)
					}
					got := decode(kernels.F32, data[bt.name])
					for e, w := range want {
						if !sameFloat(got[e], w) {
							t.Fatalf("trial %d, kernels %s, %d threads, block %d: %s[%d] = %v, reference %v",
								trial, ks.Name, opts.Threads, opts.BlockElems, bt.name, e, got[e], w)
						}
					}
				}
			}
		}
	}
}

// Golden nuslerp under compute_dtype: bfloat16, worked by hand. Task
// vectors v0 = [3, 4], v1 = [4, 3] (base 0), w = 1, 1 so t = ½:
//
//	n = 5 for both; u0 = [bf(0.6), bf(0.8)] = [0.6015625, 0.80078125],
//	u1 the same reversed; each product 0.48171997 rounds to 0.482421875,
//	their sum c = 0.96484375 (a bf16); θ = bf(acos c) = bf(0.26573) =
//	0.265625; s = bf(sin θ) = bf(0.262512) = 0.26171875; tθ = 0.1328125,
//	a0 = a1 = bf(sin 0.1328125) = bf(0.132422) = 0.1328125;
//	a0·3 = 0.3984375 and a1·4 = 0.53125 (both bf16), their sum 0.9296875,
//	÷ s = 3.55224 → bf16 3.546875. The float32 compute gives 3.5355337.
func TestGoldenNuslerpBF16(t *testing.T) {
	m := newMethod(t, "nuslerp", "")
	m.Compute = kernels.BF16
	base := []testTensor{vec("a", 0, 0)}
	got, _ := runGolden(t, m, base, [][]testTensor{{vec("a", 3, 4)}, {vec("a", 4, 3)}}, slerpParams(0.5, 2))
	checkGolden(t, got, map[string][]float32{"a": {3.546875, 3.546875}})
}
