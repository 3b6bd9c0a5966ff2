package merge

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// normalize: true on the linear-combination methods divides by Σ w, but
// mergekit divides by 1 where |Σ w| < 1e-8. Weights 1, −1 and 1e-9 sum to
// float32(1e-9): base c = [1, 2, 3, 4], τ₁ = [1, −2, 0.5, 0],
// τ₂ = [2, 2, −1, 4], τ₃ = [1, 1, 1, 1]; Σ w·τ = τ₁ − τ₂ + 1e-9·τ₃, and
// 1e-9 is below half a float32 step of every partial sum here, so
// Σ w·τ = [−1, −4, 1.5, −4] and the output is c + that = [0, −2, 4.5, 0].
// Divided by 1e-9 it would be of the order of 1e9.
func TestGoldenNormalizeGuard(t *testing.T) {
	base := vec("c", 1, 2, 3, 4)
	models := [][]testTensor{{ft(base, 1, -2, 0.5, 0)}, {ft(base, 2, 2, -1, 4)}, {ft(base, 1, 1, 1, 1)}}
	for _, name := range []string{"task_arithmetic", "dare_linear", "breadcrumbs", "della_linear"} {
		t.Run(name, func(t *testing.T) {
			m := newMethod(t, name, "")
			m.SetNormalize(true)
			got, sum := runGolden(t, m, []testTensor{base}, models, gparams(1, 1, 0, 0.15, 1, -1, 1e-9))
			checkGolden(t, got, map[string][]float32{"c": {0, -2, 4.5, 0}})
			wantWarnings(t, sum.Warnings, want{WarnNormalizeGuard, "", "c", []string{"1e-09", "below 1e-08", "divided by 1"}})
		})
	}
	// A sum of weights at the guard is divided by.
	t.Run("above", func(t *testing.T) {
		m := newMethod(t, "task_arithmetic", "")
		m.SetNormalize(true)
		got, sum := runGolden(t, m, []testTensor{base}, models[:2], gparams(1, 1, 0, 0, 2, -1))
		// Σ w·τ = [0, −6, 2, −4], Σ w = 1.
		checkGolden(t, got, map[string][]float32{"c": {1, -4, 5, 0}})
		wantWarnings(t, sum.Warnings)
	})
	// linear divides unguarded, as mergekit's linear does.
	if s := weightSum([]float32{1, -1, 1e-9}); math.Abs(float64(s)) >= normalizeGuard {
		t.Fatalf("Σ w = %v, want below the guard", s)
	}
	if newMethod(t, "linear", "").linearNormalize() {
		t.Error("linear is guarded; mergekit divides its sum unguarded")
	}
}

// DELLA ranks a tensor of three dimensions or more along dimension 1, as
// mergekit does (argsort over dim 1): in a [E, 4, 3] tensor each line of 4
// elements (fixed e and column) is ranked, so with density 0.5 and ε = 0.3
// the keep probabilities are 0.2, 0.4, 0.6 and 0.8, where ranking along the
// last dimension (lines of 3) would give 0.2, 0.5 and 0.8. With rescale:
// inverse a kept value is τ/p, so the output shows each element's p; it is
// checked against refDella, element by element, with every kernel set, thread
// count and block size of runGolden.
func TestDellaRanksDim1(t *testing.T) {
	const E, R, C = 60, 4, 3
	const d, eps = 0.5, 0.3
	shape := []int64{E, R, C}
	tau := make([]float32, E*R*C)
	for e := range tau {
		tau[e] = float32((e*7)%11+1) * 0.125 // magnitudes that rank differently along dims 1 and 2
		if e%5 == 0 {
			tau[e] = -tau[e]
		}
	}
	base := testTensor{name: "experts", shape: shape, dt: kernels.F32, vals: make([]float32, len(tau))}
	m := newMethod(t, "della_linear", "")
	m.Seed, m.Rescale = 21, RescaleInverse
	got, _ := runGolden(t, m, []testTensor{base}, [][]testTensor{{ft(base, tau...)}}, gparams(d, 1, 0, eps, 1))

	key := streamKey(m.Seed, "experts", 0)
	want := func(shape []int64) ([]float32, []float64) {
		keep, p := make([]bool, len(tau)), make([]float64, len(tau))
		refDella(shape, tau, d, eps, key, keep, p)
		out := make([]float32, len(tau))
		for e := range out {
			if keep[e] {
				out[e] = tau[e] / float32(p[e])
			}
		}
		return out, p
	}
	dim1, p1 := want(shape)
	last, pLast := want([]int64{E * R, C}) // the same values ranked along the last dimension
	differ := 0
	for e := range p1 {
		if p1[e] != pLast[e] {
			differ++
		}
	}
	if differ < len(tau)/2 {
		t.Fatalf("only %d of %d keep probabilities differ between the two rankings", differ, len(tau))
	}
	checkGolden(t, got, map[string][]float32{"experts": dim1})
	same := true
	for e := range last {
		same = same && last[e] == got["experts"][e]
	}
	if same {
		t.Fatal("the output is also what ranking along the last dimension gives")
	}
}

// A DELLA block holds whole slabs of a tensor of three dimensions or more:
// the plan counts a slab-sized block, whatever --block-size says, and
// refuses a --max-memory that cannot hold one, naming the least that can.
func TestDellaSlabMemory(t *testing.T) {
	dir := t.TempDir()
	const E, R, C = 4, 256, 512 // a slab of 131072 elements
	n := E * R * C
	vals := make([]float32, n)
	base := testTensor{name: "experts", shape: []int64{E, R, C}, dt: kernels.BF16, vals: vals}
	writeModel(t, filepath.Join(dir, "base"), []testTensor{base}, 0)
	writeModel(t, filepath.Join(dir, "ft"), []testTensor{base}, 0)
	m := newMethod(t, "della_linear", "")
	resolve := func(string, int, int) (TensorParams, error) { return gparams(0.5, 1, 0, 0.1, 1)(""), nil }
	opts := Options{Base: filepath.Join(dir, "base"), Models: []string{filepath.Join(dir, "ft")}, Out: filepath.Join(dir, "out"),
		Threads: 1, BlockElems: 1024}
	p, err := NewPlan(opts, m, resolve)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.stride(p.BlockElems); got != R*C {
		t.Fatalf("stride %d, want a slab of %d", got, R*C)
	}
	heap, _ := p.workerBytes(p.BlockElems)
	if heap < int64(5*R*C*4) {
		t.Fatalf("a worker counts %d bytes of heap, less than five float32 slabs", heap)
	}
	opts.MaxMemory = p.MemoryBound - 1
	_, err = NewPlan(opts, m, resolve)
	if err == nil || !strings.Contains(err.Error(), "too small") {
		t.Fatalf("a bound one byte under the plan's: %v, want refused", err)
	}
	opts.MaxMemory = p.MemoryBound
	if _, err := NewPlan(opts, m, resolve); err != nil {
		t.Fatalf("the plan's own bound refused: %v", err)
	}
}

// runBF16 is runGolden for bf16 inputs and outputs: every kernel set, a few
// thread counts and block sizes, all runs agreeing; it returns the output.
func runBF16(t *testing.T, m Method, base []float32, models [][]float32, params func(string) TensorParams) []float32 {
	t.Helper()
	dir := t.TempDir()
	tensor := func(vals []float32) []testTensor {
		return []testTensor{{name: "c", shape: []int64{int64(len(vals))}, dt: kernels.BF16, vals: vals}}
	}
	basePath := filepath.Join(dir, "base")
	writeModel(t, basePath, tensor(base), 0)
	var paths []string
	for i, md := range models {
		p := filepath.Join(dir, fmt.Sprintf("ft%d", i+1))
		writeModel(t, p, tensor(md), 0)
		paths = append(paths, p)
	}
	var first []float32
	for _, set := range kernels.Available() {
		for ri, rc := range []struct{ threads, block int }{{1, 0}, {2, 1}, {3, 4}} {
			out := filepath.Join(dir, fmt.Sprintf("out-%s-%d", set.Name, ri))
			opts := Options{Base: basePath, Models: paths, Out: out, Threads: rc.threads, BlockElems: rc.block, Kernels: set}
			p, err := NewPlan(opts, m, func(name string, _, _ int) (TensorParams, error) { return params(name), nil })
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Run(context.Background(), p, nil, nil); err != nil {
				t.Fatal(err)
			}
			_, data := readModel(t, out)
			got := decode(kernels.BF16, data["c"])
			if first == nil {
				first = got
				continue
			}
			for e := range got {
				if math.Float32bits(got[e]) != math.Float32bits(first[e]) {
					t.Fatalf("kernels %s, %d threads, block %d: c[%d] = %v, but %v in the first run", set.Name, rc.threads, rc.block, e, got[e], first[e])
				}
			}
		}
	}
	return first
}

// compute_dtype: bfloat16 rounds each of mergekit's torch operations to bf16
// (a sum over models accumulates in float32 and rounds once); the default
// rounds once, at the end. bf16 inputs, weights 0.3 and 0.6, which bf16
// holds as 0.30078125 and 0.6015625 (0.3 and 0.6 round up).
//
//	c[0]: θ₀ = 0, θ₁ = θ₂ = 1, so τ = 1, 1.
//	  bf16: bf(1·0.30078125) + bf(1·0.6015625) = 0.90234375 (231/256, a bf16).
//	  float32: 0.3f + 0.6f = 0.90000004, which rounds to the bf16 0.8984375.
//	c[1]: θ₀ = 1, θ₁ = 0.5, θ₂ = −0.5, so τ = −0.5, −1.5.
//	  bf16: −0.150390625 (exact) − 0.90234375 (exact) = −1.052734375, rounded
//	  to −1.0546875 (a bf16 step at 1 is 1/128); 1 − 1.0546875 = −0.0546875.
//	  float32: −0.15000001 − 0.90000004 = −1.0500001; 1 − 1.0500001 =
//	  −0.050000072, which rounds to −0.050048828125.
//
// The other elements follow the same steps; c[4] has τ = 0 and is the base
// either way. With normalize and λ = 0.5 the divisor is bf(0.30078125 +
// 0.6015625) = 0.90234375 (float32: 0.90000004), the quotient is rounded,
// then its product by λ, then the sum with the base.
func TestGoldenComputeBF16(t *testing.T) {
	base := []float32{0, 1, 0.5, -1.25, 2, 1}
	models := [][]float32{{1, 0.5, 1, 0.5, 2, 1.125}, {1, -0.5, 1, 0.25, 2, -0.5}}
	cases := []struct {
		name        string
		method      string
		normalize   bool
		lambda      float32
		bf16, float []float32
	}{
		{"task_arithmetic", "task_arithmetic", false, 1,
			[]float32{0.90234375, -0.0546875, 0.953125, 0.1796875, 2, 0.13671875},
			[]float32{0.8984375, -0.050048828125, 0.94921875, 0.1748046875, 2, 0.1376953125}},
		{"task_arithmetic-normalize-lambda", "task_arithmetic", true, 0.5,
			[]float32{0.5, 0.4140625, 0.75, -0.45703125, 2, 0.5234375},
			[]float32{0.5, 0.416015625, 0.75, -0.458984375, 2, 0.51953125}},
		// linear ignores the base: Σ bf(wᵢ·θᵢ) / bf(Σ wᵢ).
		{"linear", "linear", true, 1,
			[]float32{1, -0.1669921875, 1, 0.333984375, 2, 0.041015625},
			[]float32{1, -0.1669921875, 1, 0.333984375, 2, 0.041748046875}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newMethod(t, c.method, "")
			m.SetNormalize(c.normalize)
			params := gparams(1, c.lambda, 0, 0, 0.3, 0.6)
			check := func(what string, got, want []float32) {
				t.Helper()
				for e := range want {
					if got[e] != want[e] {
						t.Errorf("%s: c = %v, want %v (first difference at [%d])", what, got, want, e)
						return
					}
				}
			}
			check("float32", runBF16(t, m, base, models, params), c.float)
			m.Compute = kernels.BF16
			check("bfloat16", runBF16(t, m, base, models, params), c.bf16)
		})
	}
}

// The bf16 compute covers linear, task_arithmetic, slerp, nuslerp and
// multislerp; every other method is refused before a plan is made, naming
// what keeps it in float32.
func TestComputeBF16Refused(t *testing.T) {
	for _, c := range []struct{ name, preset, why string }{
		{"ties", "mergekit", "trim"}, {"ties", "paper", "trim"}, {"dare_linear", "", "random drop"},
		{"dare_ties", "mergekit", "random drop"}, {"breadcrumbs", "", "trim"}, {"della", "mergekit", "random drop"},
		{"della_linear", "", "random drop"}, {"model_stock", "", "Model Stock"}, {"karcher", "", "iterated mean"},
		{"sce", "", "own passes"}, {"nearswap", "", "own passes"}, {"arcee_fusion", "", "own passes"},
	} {
		m := newMethod(t, c.name, c.preset)
		m.Compute = kernels.BF16
		err := m.CheckCompute()
		if err == nil || !strings.Contains(err.Error(), c.why) || !strings.Contains(err.Error(), "covers linear, task_arithmetic, slerp, nuslerp and multislerp only") {
			t.Errorf("%s %s: %v, want refused for its %s", c.name, c.preset, err, c.why)
		}
	}
	for _, name := range []string{"linear", "task_arithmetic", "slerp", "nuslerp", "multislerp"} {
		m := newMethod(t, name, "")
		m.Compute = kernels.BF16
		if err := m.CheckCompute(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	f := newFixture(t)
	m := newMethod(t, "ties", "mergekit")
	m.Compute = kernels.BF16
	err := f.merge(f.model(t, "base", 0), []string{f.model(t, "ft1", 1)}, &m, tiesParams(0.5))
	if err == nil || !strings.Contains(err.Error(), "compute_dtype") {
		t.Fatalf("ties with compute_dtype bfloat16 planned: %v", err)
	}
}

// A weight is rounded to bf16 from the float64 written, in one step: 1 +
// 2⁻⁸ + 2⁻³⁰ lies just above the halfway point between the bf16s 1 and
// 1 + 2⁻⁷, so it rounds up, but float32 rounds it to 1 + 2⁻⁸, the halfway
// point, which then rounds to even, down to 1.
func TestBF16WeightOneRounding(t *testing.T) {
	w := 1 + 0x1p-8 + 0x1p-30
	if got := bf16Of64(w); got != 1+0x1p-7 {
		t.Errorf("bf16 of %v = %v, want %v", w, got, 1+0x1p-7)
	}
	if got := rbf16(float32(w)); got != 1 {
		t.Errorf("bf16 of float32(%v) = %v, want 1 (the double rounding this avoids)", w, got)
	}
	for _, v := range []float64{0.3, -0.6, 1, 0, 1e-9, -2.5e10} {
		if got, want := bf16Of64(v), rbf16(float32(v)); got != want {
			t.Errorf("bf16 of %v = %v, want %v", v, got, want)
		}
	}
}
