package merge

import (
	"context"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/kernels"
)

// wideSum adds products of float32 values exactly: it agrees with big.Float
// on random products of every scale, cancellations and signed zeros
// included, whatever the order and however the sums are split and merged.
func TestWideSumExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		n := 1 + r.IntN(300)
		vals := make([]float64, n)
		for e := range vals {
			a := float32(r.NormFloat64()) * float32(math.Ldexp(1, r.IntN(250)-125))
			b := float32(r.NormFloat64()) * float32(math.Ldexp(1, r.IntN(250)-125))
			if r.IntN(10) == 0 {
				b = float32(math.Ldexp(1, -149)) // subnormal
			}
			vals[e] = float64(a) * float64(b)
			if e > 0 && r.IntN(5) == 0 {
				vals[e] = -vals[e-1] // cancellations
			}
		}
		exact := new(big.Float).SetPrec(2300)
		for _, v := range vals {
			exact.Add(exact, new(big.Float).SetFloat64(v))
		}
		want, _ := exact.Float64()
		var whole, a, b wideSum
		cut := r.IntN(n + 1)
		for e, v := range vals {
			whole.add(v)
			if e < cut {
				a.add(v)
			} else {
				b.add(v)
			}
		}
		b.merge(&a)
		for _, s := range []*wideSum{&whole, &b} {
			if got := s.value(); got != want {
				t.Fatalf("trial %d: sum %v (%x), want %v (%x)", trial, got, math.Float64bits(got), want, math.Float64bits(want))
			}
		}
	}
	var s wideSum
	s.add(math.Inf(1))
	s.add(1)
	if s.value() != math.Inf(1) {
		t.Errorf("+Inf + 1 = %v", s.value())
	}
	s.add(math.Inf(-1))
	if !math.IsNaN(s.value()) {
		t.Errorf("+Inf − Inf = %v", s.value())
	}
}

// slerpParams gives every tensor the interpolation factor t.
func slerpParams(t float64, n int) func(string) TensorParams {
	return func(string) TensorParams {
		tp := gparams(1, 1, 0, 0, ones(n)...)("")
		tp.T = t
		return tp
	}
}

// Golden slerp values, worked by hand (SEMANTICS-mk2 §2). Vectors are whole
// tensors; the base is v0.
//
//	a: v0 = [1, 0], v1 = [0, 1]: d = 0, θ = π/2, sin θ = 1, t = 0.5:
//	   s0 = s1 = sin(π/4) = 0.70710677 (float32), out = [s0, s1].
//	b: v1 = 2·v0: d = 1 > 0.9995, a lerp: (1−t)·v0 + t·v1 = 1.5·v0.
//	c: v1 = −v0: d = −1, |d| > 0.9995: the lerp as well, 0.5·v0 − 0.5·v0 = 0.
//	d: v0 = 0 (‖v0‖ ≤ 1e−8, not normalised), v1 = [0, 3]: d = 0, θ = π/2:
//	   out = s1·v1 = 3·0.70710677 rounded = 2.1213202.
func TestGoldenSlerp(t *testing.T) {
	m := newMethod(t, "slerp", "")
	base := []testTensor{vec("a", 1, 0), vec("b", 1, -2, 0.5), vec("c", 1, -2, 0.5), vec("d", 0, 0)}
	model := []testTensor{vec("a", 0, 1), vec("b", 2, -4, 1), vec("c", -1, 2, -0.5), vec("d", 0, 3)}
	got, _ := runGolden(t, m, base, [][]testTensor{model}, slerpParams(0.5, 1))
	s := float32(math.Sin(float64(float32(float32(math.Acos(0)) * 0.5))))
	checkGolden(t, got, map[string][]float32{
		"a": {s, s}, "b": {1.5, -3, 0.75}, "c": {0, 0, 0}, "d": {0, float32(3 * s)},
	})
	if s != 0.70710677 {
		t.Errorf("sin(π/4) in float32 = %v", s)
	}
	// t = 0 gives the base and t = 1 the model, on the slerp branch too.
	for _, tc := range []struct {
		t    float64
		want []float32
	}{{0, []float32{1, 0}}, {1, []float32{0, 1}}} {
		got, _ := runGolden(t, m, base[:1], [][]testTensor{model[:1]}, slerpParams(tc.t, 1))
		checkGolden(t, got, map[string][]float32{"a": tc.want})
	}
}

// TestSlerpBaseAlone: slerp with no model besides the base passes the base
// through, bit for bit: −0, NaN and subnormals included, and warns.
func TestSlerpBaseAlone(t *testing.T) {
	m := newMethod(t, "slerp", "")
	nan := float32(math.NaN())
	sub := math.Float32frombits(1)
	negZero := float32(math.Copysign(0, -1))
	base := []testTensor{vec("a", negZero, 1.5, nan, sub, -sub, float32(math.Inf(-1)))}
	got, sum := runGolden(t, m, base, nil, slerpParams(0.5, 0))
	for e, v := range base[0].vals {
		if math.Float32bits(got["a"][e]) != math.Float32bits(v) {
			t.Errorf("a[%d] = %v (%#x), want the base's %v (%#x)", e, got["a"][e], math.Float32bits(got["a"][e]), v, math.Float32bits(v))
		}
	}
	if len(sum.Warnings) != 1 || sum.Warnings[0].Code != WarnBaseOnly {
		t.Errorf("warnings %v, want one %s", sum.Warnings, WarnBaseOnly)
	}
}

// Golden nuslerp values (SEMANTICS-mk2 §2), with a base: the vectors are
// the task vectors, and the result is added to the base.
//
//	a: τ1 = [1, 0], τ2 = [0, 1], w = 1, 1: t = 0.5, θ = π/2, s = 1:
//	   sin(π/4)·(τ1 + τ2) = [0.70710677, 0.70710677], plus base [1, 1].
//	b: τ1 = [3, −4, 0], τ2 = 2·τ1: ‖τ1‖ = 5, c = 50/(5·10) = 1, a lerp:
//	   0.5·τ1 + 0.5·τ2 = 1.5·τ1.
//	c: τ2 = −τ1, antiparallel: c = −1; mergekit divides float32 noise by
//	   sin(float32 π) = −8.7e−8, tiesmm lerps: 0.5·τ1 − 0.5·τ1 = 0, the base.
//	d: τ1 = 0: normalised to 0, c = 0, θ = π/2: out = sin(π/4)·τ2.
//
// Weights 1 and 3 give t = 0.75; w = 1, −1 sums to 0, which gives t = 0.5.
func TestGoldenNuslerp(t *testing.T) {
	m := newMethod(t, "nuslerp", "")
	base := []testTensor{vec("a", 1, 1), vec("b", 0, 1, 2), vec("c", 0, 1, 2), vec("d", 4, 4)}
	m1 := []testTensor{ft(base[0], 1, 0), ft(base[1], 3, -4, 0), ft(base[2], 3, -4, 0), ft(base[3], 0, 0)}
	m2 := []testTensor{ft(base[0], 0, 1), ft(base[1], 6, -8, 0), ft(base[2], -3, 4, 0), ft(base[3], 0, 2)}
	s := float32(0.70710677)
	want := map[string][]float32{
		"a": {1 + s, 1 + s}, "b": {4.5, 1 - 6, 2}, "c": {0, 1, 2}, "d": {4, 4 + float32(2*s)},
	}
	for _, w := range [][2]float64{{1, 1}, {2, -2}} {
		tp := slerpParams(0, 2)
		params := func(name string) TensorParams {
			p := tp(name)
			p.T = 0.5
			if math.Abs(w[0]+w[1]) >= 1e-6 {
				p.T = w[1] / (w[0] + w[1])
			}
			return p
		}
		got, _ := runGolden(t, m, base, [][]testTensor{m1, m2}, params)
		checkGolden(t, got, want)
	}
	// t = 0.75 on a: sin(0.25·π/2) and sin(0.75·π/2).
	got, _ := runGolden(t, m, base[:1], [][]testTensor{m1[:1], m2[:1]}, slerpParams(0.75, 2))
	theta := float32(math.Acos(0))
	a0 := float32(math.Sin(float64(float32(0.25 * theta))))
	a1 := float32(math.Sin(float64(float32(0.75 * theta))))
	checkGolden(t, got, map[string][]float32{"a": {1 + a0, 1 + a1}})

	// Rows and columns of [[1, 0], [0, 1]] against [[0, 1], [0, 2]]:
	// rows: (1,0)·(0,1) = 0 → sin(π/4) each; (0,1) ∥ (0,2) → lerp 1.5.
	// columns: (1,0)·(0,0): a zero vector → c = 0 → sin(π/4)·(0, 0) +
	// sin(π/4)·(1, 0); (0,1)·(1,2) = 2/√5 → a true slerp, worked below.
	mat := testTensor{name: "w", shape: []int64{2, 2}, dt: kernels.F32, vals: []float32{0, 0, 0, 0}}
	x, y := mat, mat
	x.vals, y.vals = []float32{1, 0, 0, 1}, []float32{0, 1, 0, 2}
	m.SlerpAxis = AxisRows
	got, _ = runGolden(t, m, []testTensor{mat}, [][]testTensor{{x}, {y}}, slerpParams(0.5, 2))
	checkGolden(t, got, map[string][]float32{"w": {s, s, 0, 1.5}})
	m.SlerpAxis = AxisColumns
	got, _ = runGolden(t, m, []testTensor{mat}, [][]testTensor{{x}, {y}}, slerpParams(0.5, 2))
	// Column 1: ‖(0,1)‖ = 1, ‖(1,2)‖ = √5, c = 2/√5, t = 0.5.
	n1 := float32(math.Sqrt(5))
	c := float32(2 / float64(n1))
	th := float32(math.Acos(float64(c)))
	sa := float32(math.Sin(float64(float32(0.5 * th))))
	div := float32(math.Sin(float64(th)))
	col1 := func(v0, v1 float32) float32 { return float32(float32(sa*v0)+float32(sa*v1)) / div }
	checkGolden(t, got, map[string][]float32{"w": {s, col1(0, 1), 0, col1(1, 2)}})
}

// slerpSet is a base and two fine-tunes whose tensors (and rows and
// columns) meet at every angle: random, near and exactly parallel,
// antiparallel, and zero.
func slerpSet(r *rand.Rand) testSet {
	shapes := [][]int64{{37, 16}, {16}, {5, 7, 3}, {300}, {64, 33}, {1}}
	dts := []kernels.DType{kernels.F32, kernels.F16, kernels.BF16}
	var s testSet
	s.models = make([][]testTensor, 2)
	for ti, shape := range shapes {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		name := fmt.Sprintf("model.layers.%d.w", ti)
		scale := float32(math.Pow(10, float64(r.IntN(3)-2)))
		dt := dts[r.IntN(3)]
		bv := make([]float32, n)
		for e := range bv {
			bv[e] = roundTo(dt, float32(r.NormFloat64())*scale)
		}
		s.base = append(s.base, testTensor{name: name, shape: shape, dt: dt, vals: bv})
		kind := r.IntN(6)
		a, b := float32(r.NormFloat64()), float32(r.NormFloat64())
		tau := make([][]float32, 2)
		for i := range tau {
			tau[i] = make([]float32, n)
		}
		for e := range bv {
			x := float32(r.NormFloat64()) * scale
			tau[0][e] = x
			switch kind {
			case 0: // parallel
				tau[1][e] = 2 * x
			case 1: // antiparallel
				tau[1][e] = -x
			case 2: // zero
				tau[0][e], tau[1][e] = 0, x
			case 3: // near parallel
				tau[1][e] = a*x + 0.01*scale*float32(r.NormFloat64())
			default:
				tau[1][e] = a*x + b*scale*float32(r.NormFloat64())
			}
		}
		for i := range 2 {
			dt := dts[r.IntN(3)]
			vals := make([]float32, n)
			for e := range vals {
				vals[e] = roundTo(dt, bv[e]+tau[i][e])
				if kind == 0 || kind == 1 {
					vals[e] = roundTo(dt, tau[i][e]) // exact relations without a base
				}
			}
			s.models[i] = append(s.models[i], testTensor{name: name, shape: shape, dt: dt, vals: vals})
		}
	}
	return s
}

// refSlerpVectors splits a tensor into the vectors of the axis: each is a
// list of element indices.
func refSlerpVectors(shape []int64, n int, axis SlerpAxis) [][]int {
	if len(shape) < 2 || axis == AxisTensor {
		v := make([]int, n)
		for e := range v {
			v[e] = e
		}
		return [][]int{v}
	}
	if axis == AxisRows {
		row := int(shape[len(shape)-1])
		var vs [][]int
		for s := 0; s < n; s += row {
			v := make([]int, row)
			for k := range v {
				v[k] = s + k
			}
			vs = append(vs, v)
		}
		return vs
	}
	cols := n / int(shape[0])
	vs := make([][]int, cols)
	for e := range n {
		vs[e%cols] = append(vs[e%cols], e)
	}
	return vs
}

// refSlerp is the spec's computation taken literally: u = v/n elementwise
// in float32, d = Σ u0·u1 summed exactly and rounded once, the scalar chain
// in float32 with transcendentals in float64. It returns each element's
// value before the output rounding, the magnitude of the terms it adds
// (|a0·v0| + |a1·v1|)/|div|, and how far the value moves when the cosine
// is 4 float32 ULPs off either way (large near antiparallel vectors, where
// the result is divided by a small sin θ).
func refSlerp(m Method, base, x0, x1 []float32, shape []int64, t float64) (out, sens, spread []float32) {
	n := len(base)
	v0, v1 := make([]float32, n), make([]float32, n)
	for e := range n {
		switch {
		case m.Slerp == SlerpPair:
			v0[e], v1[e] = base[e], x0[e]
		case m.NoBase:
			v0[e], v1[e] = x0[e], x1[e]
		default:
			v0[e], v1[e] = x0[e]-base[e], x1[e]-base[e]
		}
	}
	out, sens, spread = make([]float32, n), make([]float32, n), make([]float32, n)
	for _, idx := range refSlerpVectors(shape, n, m.SlerpAxis) {
		a, b := make([]float32, len(idx)), make([]float32, len(idx))
		for k, e := range idx {
			a[k], b[k] = v0[e], v1[e]
		}
		n0, n1 := float32(math.Sqrt(refDot(a, a))), float32(math.Sqrt(refDot(b, b)))
		ua, ub := make([]float32, len(a)), make([]float32, len(b))
		// chain is the scalar chain from the cosine: a0, a1, div.
		var chain func(c float32) (a0, a1, div float32)
		var c float32
		if m.Slerp == SlerpPair {
			for k := range a {
				ua[k], ub[k] = a[k], b[k]
				if n0 > 1e-8 {
					ua[k] = a[k] / n0
				}
				if n1 > 1e-8 {
					ub[k] = b[k] / n1
				}
			}
			c = float32(refDot(ua, ub))
			chain = func(d float32) (float32, float32, float32) {
				if math.Abs(float64(d)) > float64(float32(0.9995)) {
					return float32(1 - t), float32(t), 1
				}
				th := float32(math.Acos(float64(d)))
				st := float32(math.Sin(float64(th)))
				tt := th * float32(t)
				return float32(math.Sin(float64(th-tt))) / st, float32(math.Sin(float64(tt))) / st, 1
			}
		} else {
			for k := range a {
				ua[k], ub[k] = a[k]/max(n0, 1e-7), b[k]/max(n1, 1e-7)
			}
			c = max(-1, min(1, float32(refDot(ua, ub))))
			chain = func(c float32) (float32, float32, float32) {
				c = max(-1, min(1, c))
				th := float32(math.Acos(float64(c)))
				st := float32(math.Sin(float64(th)))
				if c == -1 || math.Abs(float64(st)) < 1e-8 {
					return float32(1 - t), float32(t), 1
				}
				return float32(math.Sin(float64(float32(1-t) * th))), float32(math.Sin(float64(float32(t) * th))), st
			}
		}
		// The cosine a few ULPs off, as the engine's one-pass sums and
		// libm may put it, without crossing slerp's lerp threshold.
		var near []float32
		for _, dir := range []float32{-1, 1} {
			x := c
			for range 4 {
				x = math.Nextafter32(x, dir*2)
			}
			if m.Slerp == SlerpNu || (math.Abs(float64(x)) > 0.9995) == (math.Abs(float64(c)) > 0.9995) {
				near = append(near, x)
			}
		}
		a0, a1, div := chain(c)
		for k, e := range idx {
			p0, p1 := a0*a[k], a1*b[k]
			res := (p0 + p1) / div
			sens[e] = (float32(math.Abs(float64(p0))) + float32(math.Abs(float64(p1)))) / float32(math.Abs(float64(div)))
			for _, x := range near {
				b0, b1, bd := chain(x)
				alt := (b0*a[k] + b1*b[k]) / bd
				spread[e] = max(spread[e], float32(math.Abs(float64(alt-res))))
			}
			if m.Slerp == SlerpNu && !m.NoBase {
				res = base[e] + res
			}
			out[e] = res
		}
	}
	return out, sens, spread
}

// The engine against refSlerp on random tensors meeting at every angle:
// every kernel set, one to three workers, blocks from 1 element to the
// default. Runs of one set must agree bit for bit whatever the workers and
// blocks; the reference is met within the rounding class of SEMANTICS-mk2
// §6: |got − want| ≤ 2⁻¹⁹·(|a0·v0| + |a1·v1|)/|div| (the magnitude of the
// terms summed), plus how far want moves when the cosine is 4 float32 ULPs
// off (refSlerp), plus one unit in the last place of the output dtype at
// want (a scalar a few float32 ULPs off may move the output's rounding). The engine sums v0·v1/(‖v0‖‖v1‖) from one
// pass where the spec normalises first, and libm's float32 calls differ;
// both stay within a few ULPs of the scalars.
func TestSlerpMatchesReference(t *testing.T) {
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
			for trial := range 4 {
				r := rand.New(rand.NewPCG(uint64(ci), uint64(trial)))
				m := newMethod(t, tc.method, "")
				m.NoBase, m.SlerpAxis = tc.noBase, tc.axis
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
				var outDT *kernels.DType
				if r.IntN(2) == 0 {
					dt := []kernels.DType{kernels.F32, kernels.F16, kernels.BF16}[r.IntN(3)]
					outDT = &dt
				}
				var first map[string][]float32
				for ki, ks := range kernels.Available() {
					for run := range 3 {
						opts := Options{Base: base, Models: models, Out: filepath.Join(dir, fmt.Sprintf("out-%d-%d", ki, run)),
							Threads: 1 + run, BlockElems: []int{1, 7, 64, 0}[r.IntN(4)], Kernels: ks}
						if outDT != nil {
							opts.OutDType = outDT.String()
						}
						p, err := NewPlan(opts, m, func(string, int, int) (TensorParams, error) { return slerpParams(tv, nm)(""), nil })
						if err != nil {
							t.Fatal(err)
						}
						if _, err := Run(context.Background(), p, nil, nil); err != nil {
							t.Fatal(err)
						}
						md, data := readModel(t, opts.Out)
						got := map[string][]float32{}
						for name, b := range data {
							dt, _ := floatDType(md.Tensors[name].DType)
							got[name] = decode(dt, b)
						}
						if first != nil {
							for name, vals := range first {
								for e, v := range vals {
									if !sameFloat(got[name][e], v) {
										t.Fatalf("kernels %s, %d threads, block %d: %s[%d] = %v, first run %v", ks.Name, opts.Threads, opts.BlockElems, name, e, got[name][e], v)
									}
								}
							}
							continue
						}
						first = got
						checkSlerpRef(t, m, set, tv, outDT, got)
					}
				}
			}
		})
	}
}

func checkSlerpRef(t *testing.T, m Method, set testSet, tv float64, outDT *kernels.DType, got map[string][]float32) {
	t.Helper()
	for ti, bt := range set.base {
		var x1 []float32
		if len(set.models) > 1 {
			x1 = set.models[1][ti].vals
		}
		base := bt.vals
		if m.NoBase {
			base = set.models[0][ti].vals // the layout's; not used
		}
		want, sens, spread := refSlerp(m, base, set.models[0][ti].vals, x1, bt.shape, tv)
		dt := bt.dt
		if m.NoBase {
			dt = set.models[0][ti].dt
		}
		if outDT != nil {
			dt = *outDT
		}
		for e, w := range want {
			g := got[bt.name][e]
			rw := roundTo(dt, w)
			ulp := float64(nextUp(dt, rw)) - math.Abs(float64(rw))
			tol := math.Ldexp(float64(sens[e]), -19) + float64(spread[e]) + ulp
			if !(math.Abs(float64(g-rw)) <= tol) && !(g != g && w != w) {
				t.Fatalf("%s[%d] = %v, reference %v (±%g)", bt.name, e, g, rw, tol)
			}
		}
	}
}

// nextUp is the next value of dt above |v|.
func nextUp(dt kernels.DType, v float32) float32 {
	a := float32(math.Abs(float64(v)))
	switch dt {
	case kernels.BF16:
		return kernels.BF16ToF32(kernels.F32ToBF16(a) + 1)
	case kernels.F16:
		return kernels.F16ToF32(kernels.F32ToF16(a) + 1)
	}
	return math.Nextafter32(a, float32(math.Inf(1)))
}

// slerpCaseParams are nuslerp's parameters for the tests of every method.
func slerpCaseParams(r *rand.Rand, n int) func(string) TensorParams {
	return slerpParams([]float64{0.3, 0.5, 0.8}[r.IntN(3)], n)
}

// Recipe reads slerp's t per tensor, nuslerp's t from the weights in
// double precision (0.5 when they sum to about 0), its switches, and
// whether it has a base.
func TestSlerpRecipe(t *testing.T) {
	cases := []struct {
		src    string
		t      float64
		axis   SlerpAxis
		noBase bool
		err    string
	}{
		{src: "merge_method: slerp\nbase_model: b\nmodels: [{model: a}]\nparameters: {t: [0, 1]}\n", t: 0.5},
		{src: "merge_method: nuslerp\nbase_model: b\nmodels: [{model: a, parameters: {weight: 0.1}}, {model: c, parameters: {weight: 0.2}}]\n",
			t: 0.2 / (0.1 + 0.2)},
		{src: "merge_method: nuslerp\nmodels: [{model: a, parameters: {weight: 1}}, {model: c, parameters: {weight: -1}}]\nparameters: {nuslerp_flatten: false}\n",
			t: 0.5, axis: AxisRows, noBase: true},
		{src: "merge_method: nuslerp\nbase_model: b\nmodels: [{model: a}, {model: c}]\nparameters: {weight: 2, nuslerp_flatten: false, nuslerp_row_wise: true}\n",
			t: 0.5, axis: AxisColumns},
		{src: "merge_method: nuslerp\nbase_model: b\nmodels: [{model: a}, {model: c}]\nparameters: {weight: [{filter: attn, value: 1}]}\n",
			err: "model 1: nuslerp needs a weight for every model"},
	}
	for _, tc := range cases {
		c, err := config.Parse([]byte(tc.src), "t.yml")
		if err != nil {
			t.Fatal(err)
		}
		m, resolve, err := Recipe(c)
		if err != nil {
			t.Fatal(err)
		}
		tp, err := resolve("model.layers.1.mlp.up_proj.weight", 1, 3)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%s: error %v, want %q", tc.src, err, tc.err)
			}
			continue
		}
		if err != nil || tp.T != tc.t || m.SlerpAxis != tc.axis || m.NoBase != tc.noBase {
			t.Errorf("%s: t %v, axis %v, no base %v (%v); want %v, %v, %v", tc.src, tp.T, m.SlerpAxis, m.NoBase, err, tc.t, tc.axis, tc.noBase)
		}
	}
}
