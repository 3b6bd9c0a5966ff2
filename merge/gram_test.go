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

// The Gram methods against a plain reference that iterates on whole
// tensors, as mergekit does, in float64: vectors are float64 arrays, and
// the scalars the method rounds to float32 (the weights, karcher's c_k, θ_k
// and a·θ/sin θ) are rounded the same way. The engine computes the same
// algorithm on the Gram matrix and writes Σ float32(β_k·x_k) (+ base); the
// two differ by rounding only, and are held to
//
//	|out − ref| ≤ 2⁻¹⁹·(|base| + Σ_k S/n_k·|x_k|)
//
// per element, S the output's norm scale (Σ w_k·n_k, or the mean norm).

func norm64(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v * v
	}
	return math.Sqrt(s)
}

func dot64(a, b []float64) float64 {
	var s float64
	for e := range a {
		s += a[e] * b[e]
	}
	return s
}

// refMultislerp is multislerp on whole float64 vectors; ok is false where
// the engine must fail (‖m‖ < eps with more than two models).
func refMultislerp(xs [][]float64, weights []float32, normalize bool, eps float64) (out []float64, scale float64, ok bool) {
	n, d := len(xs), len(xs[0])
	w := make([]float64, n)
	var sum float32
	for _, v := range weights {
		sum += v
	}
	for k, v := range weights {
		if normalize {
			v /= sum
		}
		w[k] = float64(v)
	}
	units := make([][]float64, n)
	m := make([]float64, d)
	for k, x := range xs {
		nk := norm64(x)
		scale += nk * w[k]
		units[k] = make([]float64, d)
		for e, v := range x {
			units[k][e] = v / (nk + eps)
			m[e] += w[k] * units[k][e]
		}
	}
	mn := norm64(m)
	if mn < eps {
		if n != 2 {
			return nil, 0, false
		}
		out = make([]float64, d)
		for e := range out {
			out[e] = w[0]*xs[0][e] + w[1]*xs[1][e]
		}
		return out, scale, true
	}
	for e := range m {
		m[e] /= mn
	}
	g := make([]float64, d)
	for k, u := range units {
		dk := dot64(u, m)
		for e := range g {
			g[e] += w[k] * (u[e] - dk*m[e])
		}
	}
	r := norm64(g) + eps
	out = make([]float64, d)
	for e := range out {
		out[e] = (m[e]*math.Cos(r) + g[e]*(math.Sin(r)/r)) * scale
	}
	return out, scale, true
}

// refKarcher is karcher on whole float64 vectors.
func refKarcher(xs [][]float64, maxIter int, tol float64) (out []float64, scale float64) {
	n, d := len(xs), len(xs[0])
	out = make([]float64, d)
	norms := make([]float64, n)
	var valid []int
	for k, x := range xs {
		norms[k] = norm64(x)
		scale += norms[k] / float64(n)
		if norms[k] > tol {
			valid = append(valid, k)
		}
	}
	if len(valid) == 0 {
		return out, scale
	}
	a := (1 / float64(n)) / (float64(len(valid)) / float64(n))
	units := make([][]float64, n)
	u := make([]float64, d)
	for _, k := range valid {
		units[k] = make([]float64, d)
		for e, v := range xs[k] {
			units[k][e] = v / norms[k]
			u[e] += a * units[k][e]
		}
	}
	if un := norm64(u); un < tol {
		copy(u, units[valid[0]])
	} else {
		for e := range u {
			u[e] /= un
		}
	}
	for range maxIter {
		T := make([]float64, d)
		for _, k := range valid {
			c := float32(max(-1, min(1, dot64(u, units[k]))))
			theta := float32(math.Acos(float64(c)))
			if float64(theta) < tol {
				continue
			}
			s := float64(float32(a) * float32(float64(theta)/float64(float32(math.Sin(float64(theta))))))
			for e := range T {
				T[e] += s * (units[k][e] - float64(c)*u[e])
			}
		}
		tn := norm64(T)
		if tn < tol {
			break
		}
		for e := range u {
			u[e] = math.Cos(tn)*u[e] + math.Sin(tn)*T[e]/tn
		}
		if un := norm64(u); un > tol {
			for e := range u {
				u[e] /= un
			}
		}
	}
	for e := range out {
		out[e] = scale * u[e]
	}
	return out, scale
}

// sphereCase is one random merge: a base and inputs around it.
type sphereCase struct {
	base   []testTensor
	models [][]testTensor
}

// randomSphereCase makes a few tensors of assorted shapes and dtypes: a
// base, and n models whose task vectors share a common part (so angles are
// neither tiny nor right) plus their own noise.
func randomSphereCase(r *rand.Rand, n int) sphereCase {
	shapes := [][]int64{{7, 13}, {100}, {3, 5, 4}, {1}, {2, 3000}}
	var c sphereCase
	c.models = make([][]testTensor, n)
	for ti, sh := range shapes {
		el := int64(1)
		for _, d := range sh {
			el *= d
		}
		dt := []kernels.DType{kernels.F32, kernels.BF16, kernels.F16}[r.IntN(3)]
		name := fmt.Sprintf("t%d", ti)
		base := make([]float32, el)
		common := make([]float32, el)
		for e := range base {
			base[e] = roundTo(dt, float32(r.NormFloat64()))
			common[e] = float32(r.NormFloat64() * 0.05)
		}
		c.base = append(c.base, testTensor{name: name, shape: sh, dt: dt, vals: base})
		for k := range n {
			vals := make([]float32, el)
			mix := r.Float64()
			for e := range vals {
				vals[e] = roundTo(dt, base[e]+common[e]+float32(mix*0.05*r.NormFloat64()))
			}
			c.models[k] = append(c.models[k], testTensor{name: name, shape: sh, dt: dt, vals: vals})
		}
	}
	return c
}

// expect is the reference output of tensor ti and its tolerance.
func (c sphereCase) expect(m Method, ti int, weights []float32) (want, tol []float64, ok bool) {
	n := len(c.models)
	base := c.base[ti].vals
	xs := make([][]float64, n)
	hasBase := !m.NoBase
	for k := range n {
		v := c.models[k][ti].vals
		xs[k] = make([]float64, len(v))
		for e := range v {
			x := v[e]
			if hasBase {
				x = v[e] - base[e] // float32, as the engine's task vectors
			}
			xs[k][e] = float64(x)
		}
	}
	var ref []float64
	var scale float64
	if n == 1 {
		ref, scale, hasBase = append([]float64(nil), xs[0]...), 1, false
		if m.Sphere.Kind == SphereMultislerp && !m.NoBase {
			for e, v := range c.models[0][ti].vals {
				ref[e] = float64(v)
			}
		}
	} else if m.Sphere.Kind == SphereMultislerp {
		ref, scale, ok = refMultislerp(xs, weights, m.Sphere.NormalizeWeights, m.Sphere.Eps)
		if !ok {
			return nil, nil, false
		}
	} else {
		ref, scale = refKarcher(xs, m.Sphere.MaxIter, m.Sphere.Tol)
	}
	want, tol = make([]float64, len(ref)), make([]float64, len(ref))
	for e := range ref {
		want[e] = float64(float32(ref[e]))
		sens := 0.0
		if hasBase {
			want[e] = float64(float32(want[e]) + base[e])
			sens = math.Abs(float64(base[e]))
		}
		for k := range xs {
			if nk := norm64(xs[k]); nk > 0 && n > 1 {
				sens += scale / nk * math.Abs(xs[k][e])
			}
		}
		tol[e] = 0x1p-19 * sens
	}
	return want, tol, true
}

func TestSphereMatchesReference(t *testing.T) {
	type mcase struct {
		name   string
		method func(r *rand.Rand) Method
	}
	cases := []mcase{
		{"multislerp", func(r *rand.Rand) Method { return sphereMethod(t, "multislerp", nil) }},
		{"multislerp-unnormalised", func(r *rand.Rand) Method {
			return sphereMethod(t, "multislerp", func(s *Sphere) { s.NormalizeWeights = false })
		}},
		{"multislerp-no-base", func(r *rand.Rand) Method {
			m := sphereMethod(t, "multislerp", nil)
			m.NoBase = true
			return m
		}},
		{"karcher", func(r *rand.Rand) Method { return sphereMethod(t, "karcher", nil) }},
		{"karcher-iter", func(r *rand.Rand) Method {
			return sphereMethod(t, "karcher", func(s *Sphere) { s.MaxIter, s.Tol = r.IntN(30), 1e-7 })
		}},
	}
	for _, ks := range kernels.Available() {
		t.Run(ks.Name, func(t *testing.T) {
			for ci, mc := range cases {
				t.Run(mc.name, func(t *testing.T) {
					for trial := range 3 {
						r := rand.New(rand.NewPCG(uint64(ci), uint64(trial)))
						sphereTrial(t, r, ks, mc.method(r), trial)
					}
				})
			}
		})
	}
}

func sphereTrial(t *testing.T, r *rand.Rand, ks *kernels.Set, m Method, trial int) {
	n := 1 + r.IntN(4)
	if trial > 0 {
		n = 2 + r.IntN(3)
	}
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
		writeModel(t, p, md, []int64{0, 1000}[r.IntN(2)])
		paths = append(paths, p)
	}
	var first map[string][]float32
	for _, threads := range []int{1, 2, 3} {
		for _, block := range []int{1, 7, 1000, 65536} {
			if threads > 1 && block == 1 && trial > 0 {
				continue // slow: the case with 1-element blocks runs once
			}
			out := filepath.Join(dir, fmt.Sprintf("out-%d-%d", threads, block))
			opts := Options{Base: basePath, Models: paths, Out: out, OutDType: "F32", Threads: threads, BlockElems: block, Kernels: ks}
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
			got := map[string][]float32{}
			for name, b := range data {
				got[name] = decode(kernels.F32, b)
			}
			if first == nil {
				first = got
				checkSphereReference(t, c, m, weights, got, threads, block)
				continue
			}
			for name, vals := range first {
				for e, v := range vals {
					if math.Float32bits(got[name][e]) != math.Float32bits(v) {
						t.Fatalf("%d threads, block %d: %s[%d] = %v, %v with 1 thread", threads, block, name, e, got[name][e], v)
					}
				}
			}
		}
	}
}

func checkSphereReference(t *testing.T, c sphereCase, m Method, weights []float32, got map[string][]float32, threads, block int) {
	t.Helper()
	worst := 0.0
	for ti, bt := range c.base {
		want, tol, ok := c.expect(m, ti, weights)
		if !ok {
			t.Fatalf("%s: the reference fails (‖m‖ < eps)", bt.name)
		}
		for e, w := range want {
			d := math.Abs(float64(got[bt.name][e]) - w)
			if d > tol[e] {
				t.Fatalf("%d models, %d threads, block %d: %s[%d] = %v, reference %v (off %.3g, tolerance %.3g)",
					len(c.models), threads, block, bt.name, e, got[bt.name][e], w, d, tol[e])
			}
			if tol[e] > 0 {
				worst = max(worst, d/tol[e])
			}
		}
	}
	t.Logf("%d models: worst difference %.3g of the tolerance", len(c.models), worst)
}
