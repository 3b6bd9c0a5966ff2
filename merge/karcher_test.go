package merge

import (
	"math"
	"testing"
)

// Golden values of karcher (SEMANTICS-mk2 §2) on tiny tensors. Every input
// is a model (the base among them), weights 1/N, no task vectors: the
// engine's base only lays out the output. out = Σ float32(β_k·x_k), summed
// in float32 in model order.
func TestGoldenKarcher(t *testing.T) {
	m := sphereMethod(t, "karcher", nil)
	p2, p3 := gparams(1, 1, 0, 0, 1, 1), gparams(1, 1, 0, 0, 1, 1, 1)
	run := func(t *testing.T, m Method, inputs ...testTensor) map[string][]float32 {
		models := make([][]testTensor, len(inputs))
		for i, in := range inputs {
			models[i] = []testTensor{in}
		}
		params := p2
		if len(inputs) == 3 {
			params = p3
		}
		got, _ := runGolden(t, m, []testTensor{inputs[0]}, models, params)
		return got
	}
	t.Run("orthogonal", func(t *testing.T) {
		// u0 = [.6, .8, 0, 0], u1 = [0, 0, 0, 1]: the mean direction is
		// (u0 + u1)/√2, where the tangent T cancels (‖T‖ ~ 1e-8 < tol);
		// the mean norm is 5: β_k = 1/√2.
		got := run(t, m, vec("c", 3, 4, 0, 0), vec("c", 0, 0, 0, 5))
		b := float32(1 / math.Sqrt2)
		checkGolden(t, got, map[string][]float32{"c": {b * 3, b * 4, 0, b * 5}})
	})
	t.Run("parallel", func(t *testing.T) {
		// x1 = 2·x0, n = 5 and 10: θ = 0 for both, T = 0; the mean norm
		// 7.5 along x0/5: out = 1.5·x0 (β = 3/4, 3/8).
		got := run(t, m, vec("c", 3, 0, 4, 0), vec("c", 6, 0, 8, 0))
		checkGolden(t, got, map[string][]float32{"c": {4.5, 0, 6, 0}})
	})
	t.Run("zero-vector", func(t *testing.T) {
		// x1 = 0 is not valid (n ≤ tol): u = u0, but the scale still
		// counts it: (5 + 0)/2 · u0 = x0/2.
		got := run(t, m, vec("c", 3, 0, 4, 0), vec("c", 0, 0, 0, 0))
		checkGolden(t, got, map[string][]float32{"c": {1.5, 0, 2, 0}})
	})
	t.Run("none-valid", func(t *testing.T) {
		// Both norms ≤ tol = 1e-5: zeros.
		got := run(t, m, vec("c", 0, 0, 0, 0), vec("c", 1e-6, 0, -1e-6, 0))
		checkGolden(t, got, map[string][]float32{"c": {0, 0, 0, 0}})
	})
	t.Run("antiparallel", func(t *testing.T) {
		// u0 = −u1: the mean is 0 (< tol), so u = u0; θ0 = 0 is skipped and
		// u1 − c1·u = u1 + u0 = 0: T = 0. out = 1·u0 = x0.
		got := run(t, m, vec("c", 1, 0, 0, 0), vec("c", -1, 0, 0, 0))
		checkGolden(t, got, map[string][]float32{"c": {1, 0, 0, 0}})
	})
	t.Run("three-parallel-one-zero", func(t *testing.T) {
		// x0 = [2, 0, 0, 0], x1 = [4, 0, 0, 0], x2 = 0: a = ½ over the
		// valid two, u = u0, scale (2 + 4 + 0)/3 = 2: out = [2, 0, 0, 0].
		got := run(t, m, vec("c", 2, 0, 0, 0), vec("c", 4, 0, 0, 0), vec("c", 0, 0, 0, 0))
		checkGolden(t, got, map[string][]float32{"c": {2, 0, 0, 0}})
	})
	t.Run("one-input", func(t *testing.T) {
		// A single input (the base alone) is returned unchanged.
		got, _ := runGolden(t, m, []testTensor{vec("c", 1, 2, 3, 4)}, [][]testTensor{{vec("c", 5, 6, 7, 8)}}, gparams(1, 1, 0, 0, 1))
		checkGolden(t, got, map[string][]float32{"c": {5, 6, 7, 8}})
	})
}

// The coefficient algebra on hand-made Gram matrices: the corners that do
// not need files.
func TestKarcherCoefs(t *testing.T) {
	// Orthonormal e0, e1, e2 (G = I): by symmetry the mean is their sum over
	// √3, reached at once (T = 0), scale 1: β_k = 1/√3.
	G := gram{n: 3, g: []float64{1, 0, 0, 0, 1, 0, 0, 0, 1}}
	for k, b := range karcherCoefs(G, 10, 1e-5) {
		if math.Abs(b-1/math.Sqrt(3)) > 1e-7 {
			t.Errorf("β%d = %v, want 1/√3", k, b)
		}
	}
	// Two unit vectors at 90°, with weights 1/3 and 2/3 (e1 listed twice):
	// the Karcher mean lies at 2/3 of the arc from e0, 60° from e0.
	G = gram{n: 3, g: []float64{1, 0, 0, 0, 1, 1, 0, 1, 1}}
	b := karcherCoefs(G, 100, 1e-12)
	c0, c1 := b[0], b[1]+b[2] // along e0 and e1
	if math.Abs(c0-0.5) > 1e-6 || math.Abs(c1-math.Sqrt(3)/2) > 1e-6 {
		t.Errorf("mean (%v, %v), want (1/2, √3/2)", c0, c1)
	}
	// max_iter 0: the normalised weighted mean, (e0 + 2·e1)/√5.
	b = karcherCoefs(G, 0, 1e-5)
	if c0, c1 := b[0], b[1]+b[2]; math.Abs(c0-1/math.Sqrt(5)) > 1e-12 || math.Abs(c1-2/math.Sqrt(5)) > 1e-12 {
		t.Errorf("mean (%v, %v), want (1, 2)/√5", c0, c1)
	}
}
