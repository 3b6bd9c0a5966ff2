package merge

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"
)

// sphereMethod is multislerp or karcher with its parameters edited.
func sphereMethod(t testing.TB, name string, edit func(*Sphere)) Method {
	m := newMethod(t, name, "")
	if edit != nil {
		edit(&m.Sphere)
	}
	return m
}

// mergeError merges and returns the error the merge must end with.
func mergeError(t *testing.T, m Method, base []testTensor, models [][]testTensor, params func(string) TensorParams) error {
	t.Helper()
	dir := t.TempDir()
	basePath := filepath.Join(dir, "base")
	writeModel(t, basePath, base, 0)
	var paths []string
	for i, md := range models {
		p := filepath.Join(dir, "ft"+string(rune('1'+i)))
		writeModel(t, p, md, 0)
		paths = append(paths, p)
	}
	opts := Options{Base: basePath, Models: paths, Out: filepath.Join(dir, "out"), Threads: 2}
	p, err := NewPlan(opts, m, func(name string, _, _ int) (TensorParams, error) { return params(name), nil })
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(), p, nil, nil)
	if err == nil {
		t.Fatal("the merge succeeded, want an error")
	}
	return err
}

// Golden values of multislerp (SEMANTICS-mk2 §2) on tiny tensors: X_k are
// the task vectors, w the normalised weights, S = Σ n_k·w_k, and the output
// base + Σ float32(β_k·X_k), summed in float32 in model order.
func TestGoldenMultislerp(t *testing.T) {
	m := sphereMethod(t, "multislerp", nil)
	base := vec("c", 1, 2, 3, 4)
	t.Run("orthogonal", func(t *testing.T) {
		// X0 = [3, 4, 0, 0], X1 = [0, 0, 5, 0], both of norm 5, w = ½, ½:
		// m ∥ u0 + u1, d_k = 1/√2, g = 0, so out = S·(u0 + u1)/√2 with
		// S = 5: β_k = 1/√2 (the eps cancel between u_k and ‖m‖).
		got, _ := runGolden(t, m, []testTensor{base}, [][]testTensor{{ft(base, 3, 4, 0, 0)}, {ft(base, 0, 0, 5, 0)}}, gparams(1, 1, 0, 0, 1, 1))
		b := float32(1 / math.Sqrt2)
		checkGolden(t, got, map[string][]float32{"c": {1 + b*3, 2 + b*4, 3 + b*5, 4}})
	})
	t.Run("parallel", func(t *testing.T) {
		// X1 = 2·X0, n = 3 and 6, w = ¼, ¾: every u_k is m, g = 0,
		// S = 3/4 + 18/4 = 21/4, β = S·w_k/n_k = 7/16 and 21/32:
		// out = base + 7/4·X0.
		got, _ := runGolden(t, m, []testTensor{base}, [][]testTensor{{ft(base, 1, 2, 2, 0)}, {ft(base, 2, 4, 4, 0)}}, gparams(1, 1, 0, 0, 1, 3))
		checkGolden(t, got, map[string][]float32{"c": {2.75, 5.5, 6.5, 4}})
	})
	t.Run("zero-vector", func(t *testing.T) {
		// X1 = 0 counts with n = 0 and u = 0: m ∥ u0, g = 0, S = 5·½:
		// out = base + X0/2.
		got, _ := runGolden(t, m, []testTensor{base}, [][]testTensor{{ft(base, 3, 4, 0, 0)}, {ft(base, 0, 0, 0, 0)}}, gparams(1, 1, 0, 0, 1, 1))
		checkGolden(t, got, map[string][]float32{"c": {2.5, 4, 3, 4}})
	})
	t.Run("mean-below-eps-two-models", func(t *testing.T) {
		// X0 = [1, 0, 0, 0], X1 = −2·X0, eps = 1e-6: m = ½·u0 + ½·u1 has
		// norm ½/(1+eps) − 1/(2+eps) ≈ 2.5e-7 < eps, so out = base + ½·X0 +
		// ½·X1 = base + [−½, 0, 0, 0].
		m := sphereMethod(t, "multislerp", func(s *Sphere) { s.Eps = 1e-6 })
		got, _ := runGolden(t, m, []testTensor{base}, [][]testTensor{{ft(base, 1, 0, 0, 0)}, {ft(base, -2, 0, 0, 0)}}, gparams(1, 1, 0, 0, 1, 1))
		checkGolden(t, got, map[string][]float32{"c": {0.5, 2, 3, 4}})
	})
	t.Run("mean-below-eps-three-models", func(t *testing.T) {
		// X0 = −X1 and X2 = 0: m = 0 exactly; with three models an error
		// naming the tensor.
		err := mergeError(t, m, []testTensor{base}, [][]testTensor{{ft(base, 1, 2, 0, 0)}, {ft(base, -1, -2, 0, 0)}, {base}}, gparams(1, 1, 0, 0, 1, 1, 1))
		if !strings.Contains(err.Error(), `tensor "c"`) || !strings.Contains(err.Error(), "eps") {
			t.Fatalf("error %q, want one naming tensor c and eps", err)
		}
	})
	t.Run("weights-sum-zero", func(t *testing.T) {
		err := mergeError(t, m, []testTensor{base}, [][]testTensor{{ft(base, 1, 2, 0, 0)}, {ft(base, 0, 0, 1, 0)}}, gparams(1, 1, 0, 0, 1, -1))
		if !strings.Contains(err.Error(), `tensor "c"`) || !strings.Contains(err.Error(), "sum to 0") {
			t.Fatalf("error %q, want one naming tensor c and the zero sum", err)
		}
	})
	t.Run("unnormalised", func(t *testing.T) {
		// The orthogonal case with w = 1, 1 not normalised: m ∥ u0 + u1
		// still, d_k = 1/√2, g = Σ (u_k − m/√2) = 0, S = 10: β_k = √2.
		m := sphereMethod(t, "multislerp", func(s *Sphere) { s.NormalizeWeights = false })
		got, _ := runGolden(t, m, []testTensor{base}, [][]testTensor{{ft(base, 3, 4, 0, 0)}, {ft(base, 0, 0, 5, 0)}}, gparams(1, 1, 0, 0, 1, 1))
		b := float32(math.Sqrt2)
		checkGolden(t, got, map[string][]float32{"c": {1 + b*3, 2 + b*4, 3 + b*5, 4}})
	})
	t.Run("one-model", func(t *testing.T) {
		// One model is returned unchanged, −0 included.
		negZero := float32(math.Copysign(0, -1))
		got, _ := runGolden(t, m, []testTensor{base}, [][]testTensor{{vec("c", 5, negZero, 7, 8)}}, gparams(1, 1, 0, 0, 2))
		if math.Signbit(float64(got["c"][1])) != true {
			t.Errorf("c[1] = %v, want −0", got["c"][1])
		}
		checkGolden(t, got, map[string][]float32{"c": {5, 0, 7, 8}})
	})
	t.Run("no-base", func(t *testing.T) {
		// Without a base the models are the vectors: the orthogonal case.
		m := sphereMethod(t, "multislerp", nil)
		m.NoBase = true
		zero := vec("c", 0, 0, 0, 0)
		got, _ := runGolden(t, m, []testTensor{zero}, [][]testTensor{{vec("c", 3, 4, 0, 0)}, {vec("c", 0, 0, 5, 0)}}, gparams(1, 1, 0, 0, 1, 1))
		b := float32(1 / math.Sqrt2)
		checkGolden(t, got, map[string][]float32{"c": {b * 3, b * 4, b * 5, 0}})
	})
}
