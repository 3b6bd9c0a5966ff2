package merge

import (
	"math"
	"testing"
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
