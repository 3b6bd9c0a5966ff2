package merge

import (
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
