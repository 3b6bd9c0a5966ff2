package merge

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// refArceeFusion is arcee_fusion with every importance in memory and a sort
// for the quartiles.
func refArceeFusion(shape []int64, base []float32, models [][]float32, _ TensorParams) []float32 {
	x, n := models[0], len(base)
	row := n
	if len(shape) >= 2 {
		row = int(shape[len(shape)-1])
	}
	imp := make([]float32, n)
	for s := 0; s < n; s += row {
		xr, br := x[s:s+row], base[s:s+row]
		mx, mb := math.Inf(-1), math.Inf(-1)
		for e := range xr {
			mx, mb = max(mx, float64(xr[e])), max(mb, float64(br[e]))
		}
		var zx, zb float64
		for e := range xr {
			zx += math.Exp(float64(xr[e]) - mx)
			zb += math.Exp(float64(br[e]) - mb)
		}
		var kl float64
		for e := range xr {
			p := math.Exp(float64(xr[e])-mx)/zx + 1e-8
			q := math.Exp(float64(br[e])-mb)/zb + 1e-8
			kl += float64(p * math.Log(p/q))
		}
		for e := s; e < s+row; e++ {
			d := x[e] - base[e]
			if d < 0 {
				d = -d
			}
			imp[e] = float32(d * float32(kl))
		}
	}
	sorted := append([]float32(nil), imp...)
	sort.Slice(sorted, func(a, b int) bool { // NaN last
		if sorted[a] != sorted[a] {
			return false
		}
		return sorted[b] != sorted[b] || sorted[a] < sorted[b]
	})
	Q := func(q float32) float32 { return sorted[int(float32(q*float32(n-1)))] }
	thr := Q(0.5) + float32(1.5*float32(Q(0.75)-Q(0.25)))
	out := make([]float32, n)
	for e := range out {
		var m float32
		if imp[e] >= thr {
			m = 1
		}
		out[e] = base[e] + float32((x[e]-base[e])*m)
	}
	return out
}

func TestArceeFusionMatchesReference(t *testing.T) {
	checkOwnMethod(t, "arcee_fusion", func(*rand.Rand) int { return 1 },
		func(_ *rand.Rand, n int) TensorParams { return ownParamsFor(n, math.NaN(), 1) }, refArceeFusion)
}

// Golden arcee_fusion values on a [4, 2] tensor with a zero base: row r of
// the model is [dᵣ, 0], so its importances are dᵣ·KLᵣ and 0, KL growing
// like d² for small d. With d = 0.01, 0.02, 0.022, 2 the sorted importances
// are 0, 0, 0, 0, a, b, c, D: Q(.25) = sorted[1] = 0, Q(.5) = sorted[3] = 0,
// Q(.75) = sorted[5] = b, so thr = 1.5·b, which c ≈ 1.33·b misses and only
// D reaches. A model equal to the base has every importance 0 = thr, all
// kept (≥), and gives the base.
func TestGoldenArceeFusion(t *testing.T) {
	b := testTensor{name: "w", shape: []int64{4, 2}, dt: kernels.F32, vals: make([]float32, 8)}
	x := b
	x.vals = []float32{0.01, 0, 0.02, 0, 0.022, 0, 2, 0}
	got, _ := runGolden(t, newMethod(t, "arcee_fusion", ""), []testTensor{b}, [][]testTensor{{x}},
		func(string) TensorParams { return ownParamsFor(1, math.NaN(), 1) })
	checkGolden(t, got, map[string][]float32{"w": {0, 0, 0, 0, 0, 0, 2, 0}})
	// One row (a vector): [3, 1, 1, 1] against [1, 1, 1, 1]: only element 0
	// differs, importances 2·KL, 0, 0, 0; Q(.25) = Q(.5) = sorted[1] = 0,
	// Q(.75) = sorted[int(2.25)] = 0: thr = 0 and everything is kept.
	v := vec("v", 1, 1, 1, 1)
	got, _ = runGolden(t, newMethod(t, "arcee_fusion", ""), []testTensor{v}, [][]testTensor{{vec("v", 3, 1, 1, 1)}},
		func(string) TensorParams { return ownParamsFor(1, math.NaN(), 1) })
	checkGolden(t, got, map[string][]float32{"v": {3, 1, 1, 1}})
}
