package merge

import (
	"math"
	"math/big"
	"math/rand/v2"
	"sort"
	"testing"
)

// refSCE is sce by the book: exact variances (big.Rat), a sort for the
// top-k (ties to the lowest index), exact mean squares (big.Float).
func refSCE(_ []int64, base []float32, models [][]float32, tp TensorParams) []float32 {
	n, N := len(base), len(models)
	tv := make([][]float32, N)
	for k, x := range models {
		tv[k] = make([]float32, n)
		for e := range base {
			tv[k][e] = x[e] - base[e]
		}
	}
	if tp.SelectTopK < 1 {
		v := make([]float32, n)
		nz := 0
		for e := range v {
			v[e] = refVariance(tv, e)
			if v[e] != 0 {
				nz++
			}
		}
		k := int(float32(float32(nz) * float32(tp.SelectTopK)))
		if k <= 0 {
			return append([]float32(nil), base...)
		}
		order := make([]int, n)
		for e := range order {
			order[e] = e
		}
		key := func(e int) uint32 { return math.Float32bits(v[e]) & 0x7fffffff }
		sort.SliceStable(order, func(a, b int) bool { return key(order[a]) > key(order[b]) })
		for _, e := range order[min(k, n):] {
			for i := range tv {
				tv[i][e] = 0
			}
		}
	}
	w := make([]float32, N)
	var S float64
	for k := range tv {
		sum := new(big.Float).SetPrec(3000)
		special := float64(0) // a NaN, or +Inf from an infinite τ
		for _, t := range tv[k] {
			if math.IsNaN(float64(t)) || math.IsInf(float64(t), 0) {
				special += float64(t) * float64(t)
				continue
			}
			sq := new(big.Float).SetPrec(3000).SetFloat64(float64(t))
			sum.Add(sum, sq.Mul(sq, sq))
		}
		f, _ := sum.Float64()
		w[k] = float32((f + special) / float64(n))
		S += float64(w[k])
	}
	s32 := float32(S)
	for k := range w {
		if math.Abs(float64(s32)) < 1e-6 {
			w[k] = 1 / float32(N)
		} else {
			w[k] = w[k] / s32
		}
	}
	out := make([]float32, n)
	for e := range out {
		var sum float32
		for k := range tv {
			sum += tv[k][e]
		}
		var num, den float32
		for k := range tv {
			t, wk := tv[k][e], float32(0)
			if sum >= 0 && t > 0 || sum < 0 && t < 0 {
				wk = w[k]
			}
			num += float32(t * wk)
			den += wk
		}
		if den < 1e-6 {
			den = 1e-6
		}
		out[e] = base[e] + num/den
	}
	return out
}

// refVariance is the population variance of tv[·][e], exact, rounded once.
func refVariance(tv [][]float32, e int) float32 {
	sum, sq := new(big.Rat), new(big.Rat)
	for k := range tv {
		t := float64(tv[k][e])
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return float32(math.NaN())
		}
		r := new(big.Rat).SetFloat64(t)
		sum.Add(sum, r)
		sq.Add(sq, r.Mul(r, r))
	}
	N := big.NewRat(int64(len(tv)), 1)
	v := new(big.Rat).Mul(sq, N)
	v.Sub(v, sum.Mul(sum, sum))
	v.Quo(v, N.Mul(N, N))
	f, _ := v.Float32()
	return f
}

func TestSCEMatchesReference(t *testing.T) {
	checkOwnMethod(t, "sce", func(r *rand.Rand) int { return 1 + r.IntN(3) },
		func(r *rand.Rand, n int) TensorParams {
			return ownParamsFor(n, math.NaN(), []float64{1, 0.5, 0.1, 0.3}[r.IntN(4)])
		}, refSCE)
}

// Golden sce values on a zero base (the outputs are the merged τ).
func TestGoldenSCE(t *testing.T) {
	b := vec("w", 0, 0, 0, 0)
	run := func(topk float64, taus ...[]float32) []float32 {
		t.Helper()
		var ms [][]testTensor
		for _, tau := range taus {
			ms = append(ms, []testTensor{ft(b, tau...)})
		}
		got, _ := runGolden(t, newMethod(t, "sce", ""), []testTensor{b}, ms,
			func(string) TensorParams { return ownParamsFor(len(taus), math.NaN(), topk) })
		return got["w"]
	}
	tv1, tv2 := []float32{1, 2, -1, 0}, []float32{1, -2, 3, 0}
	// select_topk 1: no select. m = mean τ² = 1.5 and 3.5, S = 5. Element 0:
	// both agree, num/den = 1; 1: Σ = 0 counts as +, only τ₁ = 2 is kept; 2:
	// only τ₂ = 3 (its product with the weight rounds); 3: nothing, 0/1e-6.
	w2 := float32(3.5) / 5
	want := []float32{1, 2, float32(3*w2) / w2, 0}
	checkGolden(t, map[string][]float32{"w": run(1, tv1, tv2)}, map[string][]float32{"w": want})
	// select_topk 0.5: variances 0, 4, 4, 0, two non-zero, k = 1: of the
	// tied 4s the lower index is kept, alone: m = 1 and 1, and element 1's
	// Σ = 0 keeps τ₁ = 2.
	checkGolden(t, map[string][]float32{"w": run(0.5, tv1, tv2)}, map[string][]float32{"w": {0, 2, 0, 0}})
	// k = 0 (select_topk 0.2 of 2 non-zero variances; or identical models,
	// no non-zero variance): the base.
	checkGolden(t, map[string][]float32{"w": run(0.2, tv1, tv2)}, map[string][]float32{"w": {0, 0, 0, 0}})
	checkGolden(t, map[string][]float32{"w": run(0.9, tv1, tv1)}, map[string][]float32{"w": {0, 0, 0, 0}})
	// |S| < 1e-6: m = 2⁻²² and 2⁻²⁴ sum to 2.98e-7, so both weigh 1/2:
	// (2⁻¹⁰ + 2⁻¹¹)/2 = 3·2⁻¹², not (0.8·2⁻¹⁰ + 0.2·2⁻¹¹).
	small := run(1, []float32{0x1p-10, 0, 0, 0}, []float32{0x1p-11, 0, 0, 0})
	checkGolden(t, map[string][]float32{"w": small}, map[string][]float32{"w": {3 * 0x1p-12, 0, 0, 0}})
}
