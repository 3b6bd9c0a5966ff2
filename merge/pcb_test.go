package merge

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// pcbMethod is pcb with the settings given.
func pcbMethod(t testing.TB, c PCB) Method {
	m := newMethod(t, "pcb", "")
	m.PCB = c
	return m
}

// e32 and th32 are exp and tanh in float64, rounded to float32.
func e32(x float32) float32  { return float32(math.Exp(float64(x))) }
func th32(x float32) float32 { return float32(math.Tanh(float64(x))) }

// refSorted is sorted(x)[k]: NaN after everything, −0 equal to +0.
func refSorted(xs []float32, k int64) float32 {
	s := slices.Clone(xs)
	slices.SortStableFunc(s, func(a, b float32) int {
		switch {
		case a != a && b != b:
			return 0
		case a != a:
			return 1
		case b != b:
			return -1
		case a < b:
			return -1
		case a > b:
			return 1
		}
		return 0
	})
	return s[k]
}

// refSortedAbs is sorted(|x|)[k], by magnitude pattern (NaN above +Inf).
func refSortedAbs(xs []float32, k int64) float32 {
	mags := make([]uint32, len(xs))
	for i, x := range xs {
		mags[i] = math.Float32bits(x) &^ (1 << 31)
	}
	slices.Sort(mags)
	return math.Float32frombits(mags[k])
}

func refSign(x float32) float32 {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	case x == 0:
		return 0
	}
	return x
}

// refPCB is PCB-Merging by the book over one group: taus[i] is task i's τ
// over the group's d elements; it returns m per element (before θ₀ + λ·m).
// weights[e][i] is task i's weight at element e.
func refPCB(c PCB, taus [][]float32, weights [][]float32) []float32 {
	N, d := len(taus), int64(len(taus[0]))
	fN := float32(N)
	lo, hi := make([]float32, N), make([]float32, N)
	loRank := int64(float64(d) * c.ClipLo)
	hiRank := int64(float64(d)*(1-c.ClipHi) - 1)
	for i, tau := range taus {
		lo[i], hi[i] = refSortedAbs(tau, loRank), refSortedAbs(tau, hiRank)
	}
	a, u, beta := make([][]float32, N), make([][]float32, N), make([][]float32, N)
	for i, tau := range taus {
		a[i], u[i], beta[i] = make([]float32, d), make([]float32, d), make([]float32, d)
		for e, x := range tau {
			a[i][e] = min(max(float32(math.Abs(float64(x))), lo[i]), hi[i])
			if hi[i] != lo[i] {
				u[i][e] = (a[i][e] - lo[i]) / (hi[i] - lo[i])
			}
		}
	}
	for e := range d {
		var S float32
		for j := range N {
			var v float32
			switch c.Inter {
			case InterSum:
				v = taus[j][e]
			case InterNormSum:
				v = float32(refSign(taus[j][e]) * u[j][e])
			}
			if j == 0 {
				S = v
			} else {
				S += v
			}
		}
		for i := range N {
			var inter float32
			switch c.Inter {
			case InterPairwise:
				ni := float32(refSign(taus[i][e]) * u[i][e])
				for j := range N {
					v := th32(float32(ni * float32(refSign(taus[j][e])*u[j][e])))
					if j == 0 {
						inter = v
					} else {
						inter += v
					}
				}
			default:
				inter = th32(float32(taus[i][e] * S))
			}
			intra := e32(float32(fN * float32(u[i][e]*u[i][e])))
			beta[i][e] = float32(intra * inter)
		}
	}
	tRank := min(int64(float64(d)*(1-c.Ratio)), d-1)
	ts, tops := make([]float32, N), make([]float32, N)
	none := make([]bool, N)
	for i := range N {
		ts[i], tops[i] = refSorted(beta[i], tRank), refSorted(beta[i], d-1)
		none[i] = ts[i] == tops[i] || ts[i] != ts[i] && tops[i] != tops[i]
	}
	m := make([]float32, d)
	for e := range d {
		var num, den float32
		first := true
		for i := range N {
			if none[i] {
				continue
			}
			s := (max(beta[i][e], ts[i]) - ts[i]) / (tops[i] - ts[i])
			if s == 0 {
				continue // a dropped value adds nothing
			}
			ci := float32(refSign(taus[i][e]) * a[i][e])
			term := float32(float32(ci*weights[e][i]) * s)
			if first {
				num, den, first = term, s, false
			} else {
				num, den = num+term, den+s
			}
		}
		m[e] = num / max(den, float32(1e-12))
	}
	return m
}

// refPCBSet is the reference's output of every float tensor of the set,
// before the output's rounding: θ₀ + λ·m, over the whole model or per
// tensor.
func refPCBSet(c PCB, set testSet, params func(string) TensorParams) map[string][]float32 {
	var groups [][]int // tensor indices of each group
	for ti, bt := range set.base {
		if bt.ints != nil {
			continue
		}
		if c.Scope == ScopeTensor || len(groups) == 0 {
			groups = append(groups, nil)
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], ti)
	}
	out := map[string][]float32{}
	for _, g := range groups {
		taus := make([][]float32, len(set.models))
		var weights [][]float32
		for _, ti := range g {
			tp := params(set.base[ti].name)
			for e, b := range set.base[ti].vals {
				for i := range set.models {
					taus[i] = append(taus[i], set.models[i][ti].vals[e]-b)
				}
				weights = append(weights, tp.Weights)
			}
		}
		m := refPCB(c, taus, weights)
		off := 0
		for _, ti := range g {
			bt := set.base[ti]
			lambda := params(bt.name).Lambda
			vals := make([]float32, len(bt.vals))
			for e, b := range bt.vals {
				vals[e] = b + float32(lambda*m[off+e])
			}
			out[bt.name] = vals
			off += len(bt.vals)
		}
	}
	return out
}

// The engine against the reference, bit for bit, on random sets: every
// kernel set, one to three workers, several block sizes, both scopes and
// every inter.
func TestPCBMatchesReference(t *testing.T) {
	for _, ks := range kernels.Available() {
		t.Run(ks.Name, func(t *testing.T) {
			for trial := range 6 {
				r := rand.New(rand.NewPCG(23, uint64(trial)))
				n := 2 + r.IntN(3)
				c := PCB{Ratio: []float64{0.1, 0.3, 1}[r.IntN(3)], ClipLo: []float64{0, 1e-4, 0.01, 0.05}[r.IntN(4)],
					ClipHi: []float64{0, 1e-4, 0.01, 0.05}[r.IntN(4)], Scope: []Scope{ScopeModel, ScopeTensor}[trial%2],
					Inter: Inter(trial / 2 % 3)}
				set := randomSet(r, n, trial%3 == 2)
				dir := t.TempDir()
				base, paths := set.write(t, dir, r)
				w, lambda := randWeights(r, n), float32(r.IntN(4)+1)/2
				params := func(name string) TensorParams {
					tp := ownParamsFor(n, math.NaN(), 1)
					tp.Weights, tp.Lambda = w, lambda
					if strings.Contains(name, "layers.1") {
						tp.Weights = ones(n) // weights may vary by tensor
					}
					return tp
				}
				opts := Options{Base: base, Models: paths, Out: filepath.Join(dir, "out"), Kernels: ks,
					Threads: 1 + trial%3, BlockElems: []int{1, 7, 64, 1000, 0}[r.IntN(5)]}
				p, err := NewPlan(opts, pcbMethod(t, c), func(name string, _, _ int) (TensorParams, error) { return params(name), nil })
				if err != nil {
					t.Fatal(err)
				}
				if _, err := Run(context.Background(), p, nil, nil); err != nil {
					t.Fatal(err)
				}
				want := refPCBSet(c, set, params)
				out, data := readModel(t, opts.Out)
				for _, bt := range set.base {
					if bt.ints != nil {
						continue
					}
					dt := bt.dt
					if got := out.Tensors[bt.name].DType; got != dt.String() {
						t.Fatalf("%s: dtype %s, want %s", bt.name, got, dt)
					}
					got := decode(dt, data[bt.name])
					for e, v := range want[bt.name] {
						if w := roundTo(dt, v); !sameFloat(got[e], w) {
							t.Fatalf("trial %d (%d models, %+v, %d threads, block %d): %s[%d] = %v, want %v",
								trial, n, c, opts.Threads, opts.BlockElems, bt.name, e, got[e], w)
						}
					}
				}
			}
		})
	}
}

// pcbGoldenParams gives every tensor the weights given and lambda.
func pcbGoldenParams(lambda float32, weights ...float32) func(string) TensorParams {
	return func(string) TensorParams {
		tp := ownParamsFor(len(weights), math.NaN(), 1)
		tp.Weights, tp.Lambda = weights, lambda
		return tp
	}
}

// Golden pcb values, inter sum, on a zero base with clip [0, 0] (lo and hi
// are the smallest and largest |τ|, so c = τ) and ratio 0.5:
//
//	τ₁  a = [4, −2, 0, 2]   b = [1, 1]
//	τ₂  a = [4, 2, −4, 0]   b = [−1, 1]
//
// Model scope (d = 6): lo = 0 and hi = 4 for both, u = |τ|/4, intra =
// exp(2u²); S = τ₁ + τ₂ = [8, 0, −4, 2 | 0, 2], inter = tanh(τ·S):
//
//	β₁ = [e²·tanh 32, 0, 0, e^0.5·tanh 4 | 0, e^0.125·tanh 2]
//	β₂ = [e²·tanh 32, 0, e²·tanh 16, 0 | 0, e^0.125·tanh 2]
//
// t = sorted β[⌊6·0.5⌋ = 3] = e^0.125·tanh 2 for both, which is b1's own β:
// b1 is dropped by both (ties at the threshold are dropped). Kept: model 1
// a0, a3; model 2 a0, a2 (tanh 16 and tanh 32 are 1 in float32: s = 1 for
// both). m: a0 = (4·w₁ + 4·w₂)/2, a2 = −4·s/s = −4, a3 = 2·s/s = 2, b = 0.
//
// Tensor scope: tensor a (d = 4) has t = sorted β[2]: model 1 keeps a0 only
// (a3's β is its threshold); model 2's two largest β are both e² (a0, a2),
// so its threshold is its maximum and it keeps nothing in a. Tensor b (d =
// 2) has ⌊2·0.5⌋ = 1 = d − 1: its threshold is every task's maximum, and it
// stays the base.
func TestGoldenPCBSum(t *testing.T) {
	base := []testTensor{vec("a", 0, 0, 0, 0), vec("b", 0, 0)}
	models := [][]testTensor{
		{ft(base[0], 4, -2, 0, 2), ft(base[1], 1, 1)},
		{ft(base[0], 4, 2, -4, 0), ft(base[1], -1, 1)},
	}
	c := PCB{Ratio: 0.5, Scope: ScopeModel}
	got, sum := runGolden(t, pcbMethod(t, c), base, models, pcbGoldenParams(1, 1, 1))
	checkGolden(t, got, map[string][]float32{"a": {4, 0, -4, 2}, "b": {0, 0}})
	if len(sum.Warnings) != 0 {
		t.Errorf("warnings %v, want none", sum.Warnings)
	}
	// Weights 0.5 and 1, λ 2: a0 = 2·(4·0.5 + 4)/2 = 6; a3 = 2·(2·0.5·s)/s = 2.
	got, _ = runGolden(t, pcbMethod(t, c), base, models, pcbGoldenParams(2, 0.5, 1))
	checkGolden(t, got, map[string][]float32{"a": {6, 0, -8, 2}, "b": {0, 0}})

	c.Scope = ScopeTensor
	got, sum = runGolden(t, pcbMethod(t, c), base, models, pcbGoldenParams(1, 1, 1))
	checkGolden(t, got, map[string][]float32{"a": {4, 0, 0, 0}, "b": {0, 0}})
	if len(sum.Warnings) != 1 || sum.Warnings[0].Code != WarnPCBKeepsNothing ||
		!strings.Contains(sum.Warnings[0].Message, "1 tensor kept no element of any model") ||
		!strings.Contains(sum.Warnings[0].Message, `stays the base's: "b"`) ||
		!strings.Contains(sum.Warnings[0].Message, `in 1 tensor some models kept no element: "a"`) {
		t.Errorf("warnings %v, want one counting b (nothing kept) and a (model 2 keeps nothing)", sum.Warnings)
	}
}

// Golden values of inter normsum and pairwise, model scope, clip [0, 0],
// ratio 0.7 (t = sorted β[⌊5·0.3⌋ = 1]), zero base, d = 5:
//
//	τ₁ = [4, 3, 1, 0, −4]   u₁ = [1, 0.75, 0.25, 0, 1]    n₁ = sign(τ₁)·u₁ = [1, 0.75, 0.25, 0, −1]
//	τ₂ = [2, 3, 1, −4, 0]   u₂ = [0.5, 0.75, 0.25, 1, 0]  n₂ = [0.5, 0.75, 0.25, −1, 0]
//
// intra = exp(2u²). normsum: S′ = n₁ + n₂ = [1.5, 1.5, 0.5, −1, −1],
// inter = tanh(τ·S′):
//
//	β₁ = [e²·tanh 6, e^1.125·tanh 4.5, e^0.125·tanh 0.5, 0, e²·tanh 4]
//	β₂ = [e^0.5·tanh 3, e^1.125·tanh 4.5, e^0.125·tanh 0.5, e²·tanh 4, 0]
//
// Both thresholds are element 2's β (the second smallest), so element 2 is
// dropped by both; model 1 keeps 0, 1, 4 (its maximum at 0), model 2 keeps
// 0, 1, 3 (its maximum at 3).
//
// pairwise: inter = Σⱼ tanh(nᵢ·nⱼ):
//
//	β₁ = [e²·(tanh 1 + tanh 0.5), e^1.125·2·tanh 0.5625, e^0.125·2·tanh 0.0625, 0, e²·tanh 1]
//	β₂ = [e^0.5·(tanh 0.5 + tanh 0.25), e^1.125·2·tanh 0.5625, e^0.125·2·tanh 0.0625, e²·tanh 1, 0]
//
// with the same order, so the same elements are kept (maxima at 0 and 3).
// The model has one tensor: tensor scope gives the same values.
func TestGoldenPCBNormSumPairwise(t *testing.T) {
	base := []testTensor{vec("w", 0, 0, 0, 0, 0)}
	models := [][]testTensor{{ft(base[0], 4, 3, 1, 0, -4)}, {ft(base[0], 2, 3, 1, -4, 0)}}
	s := func(b, t, top float32) float32 { return (b - t) / (top - t) }
	// want: m for the kept sets above, in float32 steps: Σ (c·1)·s / Σ s.
	want := func(b1, b2 [5]float32) []float32 {
		t1, t2, top1, top2 := b1[2], b2[2], b1[0], b2[3]
		s20, s11, s21 := s(b2[0], t2, top2), s(b1[1], t1, top1), s(b2[1], t2, top2)
		return []float32{
			(4 + float32(2*s20)) / (1 + s20),
			(float32(3*s11) + float32(3*s21)) / (s11 + s21),
			0,
			-4,
			-4,
		}
	}
	for _, scope := range []Scope{ScopeModel, ScopeTensor} {
		c := PCB{Ratio: 0.7, Scope: scope, Inter: InterNormSum}
		got, _ := runGolden(t, pcbMethod(t, c), base, models, pcbGoldenParams(1, 1, 1))
		b1 := [5]float32{float32(e32(2) * th32(6)), float32(e32(1.125) * th32(4.5)), float32(e32(0.125) * th32(0.5)), 0, float32(e32(2) * th32(4))}
		b2 := [5]float32{float32(e32(0.5) * th32(3)), float32(e32(1.125) * th32(4.5)), float32(e32(0.125) * th32(0.5)), float32(e32(2) * th32(4)), 0}
		checkGolden(t, got, map[string][]float32{"w": want(b1, b2)})

		c.Inter = InterPairwise
		got, _ = runGolden(t, pcbMethod(t, c), base, models, pcbGoldenParams(1, 1, 1))
		b1 = [5]float32{float32(e32(2) * (th32(1) + th32(0.5))), float32(e32(1.125) * (th32(0.5625) + th32(0.5625))),
			float32(e32(0.125) * (th32(0.0625) + th32(0.0625))), 0, float32(e32(2) * th32(1))}
		b2 = [5]float32{float32(e32(0.5) * (th32(0.5) + th32(0.25))), b1[1], b1[2], float32(e32(2) * th32(1)), 0}
		checkGolden(t, got, map[string][]float32{"w": want(b1, b2)})
	}
}

// Golden: a task with τ ≡ 0 and one with hi = lo, inter sum, N = 3, clip
// [0, 0], ratio 0.5 (t = sorted β[2]), zero base:
//
//	τ₁ = [2, 1, 0, −1]   lo 0, hi 2: u = [1, 0.5, 0, 0.5], intra = exp(3u²)
//	τ₂ = [1, −1, 1, 1]   lo = hi = 1: u ≡ 0, intra ≡ 1, c = τ₂
//	τ₃ ≡ 0               β₃ ≡ 0: its maximum is its threshold, it keeps nothing
//
// S = [3, 0, 1, 0]; β₁ = [e³·tanh 6, 0, 0, −0]: t₁ = 0, keeps element 0;
// β₂ = tanh(τ₂·S) = [tanh 3, −0, tanh 1, 0]: t₂ = tanh 1 (element 2, a tie
// at the threshold, dropped), keeps element 0. m₀ = (2 + 1)/2.
// Then the clip itself: clip [0.25, 0.25] on τ₁ = [8, −1, 2, 4] gives
// lo = sorted|τ|[1] = 2, hi = sorted|τ|[⌊4·0.75 − 1⌋ = 2] = 4, so c₁ =
// [4, −2, 2, 4]; with τ₂ = [8, 1, 2, 4] (lo 2, hi 4, c₂ = [4, 2, 2, 4]), u
// = [1, 0, 0, 1] for both and S = [16, 0, 4, 8]: β = [e²·tanh 128, 0,
// tanh 8, e²·tanh 32] for both, the two top values equal (tanh 32 and
// tanh 128 are 1 in float32), and the threshold sorted β[⌊4·0.4⌋ = 1] is
// tanh 8: elements 0 and 3 are kept with s = 1, m = [4, 0, 0, 4], where
// unclipped τ would give 8 at element 0.
func TestGoldenPCBZeroTaskAndClip(t *testing.T) {
	base := []testTensor{vec("w", 0, 0, 0, 0)}
	models := [][]testTensor{{ft(base[0], 2, 1, 0, -1)}, {ft(base[0], 1, -1, 1, 1)}, {ft(base[0], 0, 0, 0, 0)}}
	got, sum := runGolden(t, pcbMethod(t, PCB{Ratio: 0.5, Scope: ScopeModel}), base, models, pcbGoldenParams(1, 1, 1, 1))
	checkGolden(t, got, map[string][]float32{"w": {1.5, 0, 0, 0}})
	if len(sum.Warnings) != 1 || sum.Warnings[0].Code != WarnPCBKeepsNothing || !strings.Contains(sum.Warnings[0].Message, "model 3") {
		t.Errorf("warnings %v, want one that model 3 keeps nothing", sum.Warnings)
	}
	models = [][]testTensor{{ft(base[0], 8, -1, 2, 4)}, {ft(base[0], 8, 1, 2, 4)}}
	got, _ = runGolden(t, pcbMethod(t, PCB{Ratio: 0.6, ClipLo: 0.25, ClipHi: 0.25, Scope: ScopeModel}), base, models, pcbGoldenParams(1, 1, 1))
	checkGolden(t, got, map[string][]float32{"w": {4, 0, 0, 4}})
}

// Validation: the model count, the ratio, and clip ranks outside a group,
// named by tensor in tensor scope.
func TestErrPCB(t *testing.T) {
	base := []testTensor{vec("a", 0, 0, 0, 0), vec("b", 0, 0)}
	two := [][]testTensor{{ft(base[0], 1, 2, 3, 4), ft(base[1], 1, 2)}, {ft(base[0], 4, 3, 2, 1), ft(base[1], 2, 1)}}
	plan := func(c PCB, models [][]testTensor) error {
		dir := t.TempDir()
		writeModel(t, filepath.Join(dir, "base"), base, 0)
		var paths []string
		for i, md := range models {
			p := filepath.Join(dir, "ft"+string(rune('1'+i)))
			writeModel(t, p, md, 0)
			paths = append(paths, p)
		}
		opts := Options{Base: filepath.Join(dir, "base"), Models: paths, Out: filepath.Join(dir, "out")}
		_, err := NewPlan(opts, pcbMethod(t, c), func(string, int, int) (TensorParams, error) {
			return pcbGoldenParams(1, ones(len(models))...)(""), nil
		})
		return err
	}
	for _, tc := range []struct {
		c      PCB
		models [][]testTensor
		want   string
	}{
		{PCB{Ratio: 0.1}, two[:1], "pcb needs at least two fine-tuned models besides the base, not 1"},
		{PCB{Ratio: 0}, two, "pcb: ratio 0 outside (0, 1]"},
		{PCB{Ratio: 1.5}, two, "pcb: ratio 1.5 outside (0, 1]"},
		{PCB{Ratio: 0.5, ClipLo: 1}, two, "pcb: clip [1, 0]: each fraction must lie in [0, 1)"},
		{PCB{Ratio: 0.5, ClipLo: 0.5, ClipHi: 0.5, Scope: ScopeTensor}, two,
			`tensor "b": pcb: clip [0.5, 0.5] puts the clip bounds at ranks 1 (lo) and 0 (hi) of the sorted |τ| of 2 elements`},
		{PCB{Ratio: 0.5, ClipLo: 0.5, ClipHi: 0.5, Scope: ScopeModel}, two,
			"the whole model (scope model): pcb: clip [0.5, 0.5] puts the clip bounds at ranks 3 (lo) and 2 (hi) of the sorted |τ| of 6 elements"},
	} {
		err := plan(tc.c, tc.models)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error with %q", tc.c, err, tc.want)
		}
	}
	if err := plan(PCB{Ratio: 0.5, ClipLo: 0.25, ClipHi: 0.25, Scope: ScopeTensor}, two); err != nil {
		t.Errorf("clip [0.25, 0.25] on tensor a (ranks 1 and 2 of 4) is valid, b's (0 and 0 of 2) too: %v", err)
	}
}

// tanh32's shortcuts give float32(math.Tanh(x)): every float32 in the
// binades next to 2⁻¹³, a sample of the smaller ones, and every float32
// from 9 to 11.
func TestTanh32(t *testing.T) {
	check := func(x float32) {
		for _, v := range []float32{x, -x} {
			if got, want := tanh32(v), float32(math.Tanh(float64(v))); math.Float32bits(got) != math.Float32bits(want) {
				t.Fatalf("tanh32(%g) = %g, want %g", v, got, want)
			}
		}
	}
	for b := math.Float32bits(0x1p-15); b <= math.Float32bits(0x1p-12); b++ {
		check(math.Float32frombits(b))
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1 << 20 {
		check(math.Float32frombits(r.Uint32N(math.Float32bits(0x1p-15))))
	}
	for b := math.Float32bits(9); b <= math.Float32bits(11); b++ {
		check(math.Float32frombits(b))
	}
	check(float32(math.Inf(1)))
}
