package merge

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// Golden values worked by hand from SEMANTICS.md, on tiny F32 tensors run
// through the whole engine (files written, planned, merged, read back). Every
// value below is a small dyadic rational, so float32 arithmetic is exact and
// the expected outputs need no rounding argument unless a comment gives one.
// Each case runs with every kernel set, with one, two and three workers and
// with blocks of 1, 3 and the default size (so ties and zero sums fall
// across block boundaries), and all runs must agree.

// vec is a 1-D F32 tensor.
func vec(name string, vals ...float32) testTensor {
	return testTensor{name: name, shape: []int64{int64(len(vals))}, dt: kernels.F32, vals: vals}
}

// ft is a fine-tune of base b with task vector tau.
func ft(b testTensor, tau ...float32) testTensor {
	if len(tau) != len(b.vals) {
		panic(fmt.Sprintf("%s: %d task values for %d elements", b.name, len(tau), len(b.vals)))
	}
	out := b
	out.vals = make([]float32, len(tau))
	for i, t := range tau {
		out.vals[i] = b.vals[i] + t
	}
	return out
}

// gparams gives every tensor the same parameters: one density for every
// model, the weights given, and gamma and epsilon for breadcrumbs and DELLA.
func gparams(density float64, lambda float32, gamma, eps float64, weights ...float32) func(string) TensorParams {
	return func(string) TensorParams {
		n := len(weights)
		tp := TensorParams{Density: make([]float64, n), Weights: weights, Gamma: make([]float64, n),
			Epsilon: make([]float64, n), Lambda: lambda}
		for i := range n {
			tp.Density[i], tp.Gamma[i], tp.Epsilon[i] = density, gamma, eps
		}
		return tp
	}
}

func newMethod(t testing.TB, name, preset string) Method {
	t.Helper()
	m, _, err := NewMethod(name, preset)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// runGolden merges the models with every kernel set and a few thread counts
// and block sizes, checks that all runs wrote the same values, and returns
// them with the first run's summary.
func runGolden(t *testing.T, m Method, base []testTensor, models [][]testTensor, params func(string) TensorParams) (map[string][]float32, *Summary) {
	t.Helper()
	dir := t.TempDir()
	basePath := filepath.Join(dir, "base")
	writeModel(t, basePath, base, 0)
	var paths []string
	for i, md := range models {
		p := filepath.Join(dir, fmt.Sprintf("ft%d", i+1))
		writeModel(t, p, md, 0)
		paths = append(paths, p)
	}
	runs := []struct{ threads, block int }{{1, 0}, {2, 1}, {3, 3}}
	var first map[string][]float32
	var firstSum *Summary
	for _, set := range kernels.Available() {
		for ri, rc := range runs {
			out := filepath.Join(dir, fmt.Sprintf("out-%s-%d", set.Name, ri))
			opts := Options{Base: basePath, Models: paths, Out: out, Threads: rc.threads, BlockElems: rc.block, Kernels: set}
			p, err := NewPlan(opts, m, func(name string, _, _ int) (TensorParams, error) { return params(name), nil })
			if err != nil {
				t.Fatal(err)
			}
			sum, err := Run(context.Background(), p, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			md, data := readModel(t, out)
			got := map[string][]float32{}
			for name, b := range data {
				if dt := md.Tensors[name].DType; dt != "F32" {
					t.Fatalf("%s: output dtype %s, want F32 (the base's)", name, dt)
				}
				got[name] = decode(kernels.F32, b)
			}
			if first == nil {
				first, firstSum = got, sum
				continue
			}
			for name, vals := range first {
				for e, v := range vals {
					if math.Float32bits(got[name][e]) != math.Float32bits(v) {
						t.Fatalf("kernels %s, %d threads, block %d: %s[%d] = %v, but %v in the first run",
							set.Name, rc.threads, rc.block, name, e, got[name][e], v)
					}
				}
			}
		}
	}
	return first, firstSum
}

func checkGolden(t *testing.T, got map[string][]float32, want map[string][]float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("output has %d tensors, want %d", len(got), len(want))
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Fatalf("output lacks tensor %q", name)
		}
		if len(g) != len(w) {
			t.Fatalf("%s: %d elements, want %d", name, len(g), len(w))
		}
		for e := range w {
			if g[e] != w[e] {
				t.Errorf("%s = %v, want %v (first difference at [%d])", name, g, w, e)
				break
			}
		}
	}
}

// The paper preset: one threshold per model over both tensors (d = 8
// elements), density 0.25, so k = ⌊8·0.25⌋+1 = 3 and every tie at the
// threshold is kept too.
//
//	base a = [1, 2, 3, 4]          b = [0.5, −0.5, 1, −1]
//	τ₁  a = [±4, −1, 3, ±3]        b = [−3, 0.25, 2, −0.5]
//	τ₂  a = [−2, 1, −3, 0.5]       b = [3, −0.25, −1, 0.5]
//
// Model 1's |τ| sorted: 4, 3, 3, 3, 2, 1, 0.5, 0.25. The 3rd largest is 3,
// and three elements tie at 3: a0, a2, a3, b0 are kept, 4 > k elements. (A
// per-tensor trim would have kept b2 = 2 too: the scope is the whole model.)
// Model 2's: 3, 3, 2, 1, 1, 0.5, 0.5, 0.25; the 3rd is 2: a0, a2, b0 kept.
//
//	trimmed τ̂₁ a = [±4, 0, 3, ±3]  b = [−3, 0, 0, 0]
//	trimmed τ̂₂ a = [−2, 0, −3, 0]  b = [3, 0, 0, 0]
//
// a2 (3 − 3) and b0 (−3 + 3) sum to exactly zero: the sign of the sum of all
// elected signs decides them, and a zero total goes to −1 (the authors' code:
// sign 0 keeps the negative values).
var paperBase = []testTensor{vec("a", 1, 2, 3, 4), vec("b", 0.5, -0.5, 1, -1)}

func paperModels(a0, a3 float32) [][]testTensor {
	return [][]testTensor{
		{ft(paperBase[0], a0, -1, 3, a3), ft(paperBase[1], -3, 0.25, 2, -0.5)},
		{ft(paperBase[0], -2, 1, -3, 0.5), ft(paperBase[1], 3, -0.25, -1, 0.5)},
	}
}

func TestGoldenTiesPaper(t *testing.T) {
	cases := []struct {
		name           string
		a0, a3, lambda float32
		majority       int
		fixed          int64
		want           map[string][]float32
	}{
		{
			// a0: 4 − 2 = 2 > 0 → +, mean of {4} = 4; a3: 3 → +, 3.
			// Elected: 2 positive, 0 negative → majority +1.
			// a2 → + → {3} = 3; b0 → + → {3 (model 2)} = 3.
			// a = [1+4, 2, 3+3, 4+3], b = [0.5+3, −0.5, 1, −1].
			name: "majority+1", a0: 4, a3: 3, lambda: 1, majority: 1, fixed: 0,
			want: map[string][]float32{"a": {5, 2, 6, 7}, "b": {3.5, -0.5, 1, -1}},
		},
		{
			// a0: −4 − 2 = −6 → −, mean of {−4, −2} = −3; a3: −3 → −, −3.
			// Elected: 0 positive, 2 negative → majority −1.
			// a2 → − → {−3 (model 2)} = −3; b0 → − → {−3 (model 1)} = −3.
			// λ = 0.5: a = [1−1.5, 2, 3−1.5, 4−1.5], b = [0.5−1.5, −0.5, 1, −1].
			name: "majority-1", a0: -4, a3: -3, lambda: 0.5, majority: -1, fixed: 2,
			want: map[string][]float32{"a": {-0.5, 2, 1.5, 2.5}, "b": {-1, -0.5, 1, -1}},
		},
		{
			// a0: 4 − 2 = 2 → +, 4; a3: −3 → −, −3. One elected sign each way:
			// the total is 0, sign(0) = 0, and the paper's code then keeps
			// the negative values: majority −1. a2 → −3, b0 → −3.
			// a = [1+4, 2, 3−3, 4−3], b = [0.5−3, −0.5, 1, −1].
			name: "tie-goes-negative", a0: 4, a3: -3, lambda: 1, majority: -1, fixed: 2,
			want: map[string][]float32{"a": {5, 2, 0, 1}, "b": {-2.5, -0.5, 1, -1}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newMethod(t, "ties", "paper")
			got, sum := runGolden(t, m, paperBase, paperModels(c.a0, c.a3), gparams(0.25, c.lambda, 0, 0, 1, 1))
			checkGolden(t, got, c.want)
			if len(sum.Kept) != 2 || sum.Kept[0] != 4 || sum.Kept[1] != 3 {
				t.Errorf("kept %v, want [4 3] (model 1 keeps a tie beyond k = 3)", sum.Kept)
			}
			if len(sum.Asked) != 2 || sum.Asked[0] != 3 || sum.Asked[1] != 3 {
				t.Errorf("asked %v, want [3 3] (k = ⌊8·0.25⌋+1)", sum.Asked)
			}
			if sum.Votes.ZeroSum != 2 {
				t.Errorf("%d zero sums, want 2 (a2 and b0)", sum.Votes.ZeroSum)
			}
			if sum.Majority != c.majority || sum.ZeroSumsFixed != c.fixed {
				t.Errorf("majority %+d with %d zero sums fixed, want %+d and %d", sum.Majority, sum.ZeroSumsFixed, c.majority, c.fixed)
			}
		})
	}
}

// The paper preset's aggregates and consensus modes, three models, density 1
// (no trim), base c = [1, −1, 2, 0]:
//
//	τ₁ = [1, −2, 4, 0.5], τ₂ = [3, 1, −1, 0.5], τ₃ = [−2, −3, 2, −4]
//
// Sum vote: e0: 2 → +, agreeing {1, 3}; e1: −4 → −, {−2, −3};
// e2: 5 → +, {4, 2}; e3: −3 → −, {−4}.
// Count vote: e0 +,+,− → +; e1 −,+,− → −; e2 +,−,+ → +; e3 +,+,− → +, {0.5, 0.5}.
func TestGoldenTiesPaperAggregates(t *testing.T) {
	base := vec("c", 1, -1, 2, 0)
	models := [][]testTensor{{ft(base, 1, -2, 4, 0.5)}, {ft(base, 3, 1, -1, 0.5)}, {ft(base, -2, -3, 2, -4)}}
	cases := []struct {
		name      string
		consensus kernels.Consensus
		agg       kernels.Aggregate
		lambda    float32
		want      []float32
	}{
		// means 2, −2.5, 3, −4
		{"sum-mean", kernels.ConsensusSum, kernels.AggregateMean, 1, []float32{3, -3.5, 5, -4}},
		// sums 4, −5, 6, −4
		{"sum-sum", kernels.ConsensusSum, kernels.AggregateSum, 1, []float32{5, -6, 8, -4}},
		// largest magnitudes times the sign: 3, −3, 4, −4; λ = 2 doubles them
		{"sum-max-lambda2", kernels.ConsensusSum, kernels.AggregateMax, 2, []float32{7, -7, 10, -8}},
		// e3 now elects + and averages {0.5, 0.5} = 0.5
		{"count-mean", kernels.ConsensusCount, kernels.AggregateMean, 1, []float32{3, -3.5, 5, 0.5}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newMethod(t, "ties", "paper")
			m.Vote.Consensus, m.Vote.Aggregate = c.consensus, c.agg
			got, _ := runGolden(t, m, []testTensor{base}, models, gparams(1, c.lambda, 0, 0, 1, 1, 1))
			checkGolden(t, got, map[string][]float32{"c": c.want})
		})
	}
}

// mergekit and peft presets: per-tensor trims keeping exactly k = ⌊n·density⌋
// (density 0.5), ties at the threshold kept in flat-index order; weights
// w = [1, 0.5].
//
//	base a = [0.5, −1, 2, 0, 1, −0.5, 3, 0.25]     b = [0, 0.5, −0.5, 1]
//	τ₁ a = [1, 3, −2, 2, 0.5, −2, 2, 0.25]         b = [0.25, −0.125, 0.5, 0.0625]
//	τ₂ a = [−1, 6, 3, −4, 0.5, 1, −5, 0.25]        b = [−0.125, 0.125, 0.125, −0.25]
//
// Tensor a, k = 4. Model 1: 3, then four 2s tie (a2, a3, a5, a6) for three
// places: the lowest indices a2, a3, a5 are kept, a6 dropped. Model 2: 6, 5,
// 4, 3 (no ties). Tensor b, k = 2: model 1 keeps 0.5, 0.25; model 2 keeps
// −0.25 and, of the three tied 0.125s, only b0.
//
//	τ̂₁ a = [0, 3, −2, 2, 0, −2, 0, 0]     b = [0.25, 0, 0.5, 0]
//	τ̂₂ a = [0, 6, 3, −4, 0, 0, −5, 0]     b = [−0.125, 0, 0, −0.25]
var (
	mkBase   = []testTensor{vec("a", 0.5, -1, 2, 0, 1, -0.5, 3, 0.25), vec("b", 0, 0.5, -0.5, 1)}
	mkModels = [][]testTensor{
		{ft(mkBase[0], 1, 3, -2, 2, 0.5, -2, 2, 0.25), ft(mkBase[1], 0.25, -0.125, 0.5, 0.0625)},
		{ft(mkBase[0], -1, 6, 3, -4, 0.5, 1, -5, 0.25), ft(mkBase[1], -0.125, 0.125, 0.125, -0.25)},
	}
)

func TestGoldenTiesMergekitPeft(t *testing.T) {
	cases := []struct {
		name   string
		method func(t *testing.T) Method
		lambda float32
		want   map[string][]float32
	}{
		{
			// Weights before the vote: u₁ = τ̂₁, u₂ = 0.5·τ̂₂ =
			// a [0, 3, 1.5, −2, 0, 0, −2.5, 0], b [−0.0625, 0, 0, −0.125].
			// a1: 3+3 → +, (3+3)/(1+0.5) = 4. a2: −2+1.5 = −0.5 → −, −2/1
			// (peft, voting on unweighted values, elects + here). a3: 2−2 = 0
			// → + (mergekit's zero rule), 2/1. a5: −2. a6: −2.5/0.5 = −5.
			// b0: 0.25−0.0625 → +, 0.25. b2: 0.5. b3: −0.125/0.5 = −0.25.
			// τₘ a = [0, 4, −2, 2, 0, −2, −5, 0], b = [0.25, 0, 0.5, −0.25].
			name:   "mergekit-normalize",
			method: func(t *testing.T) Method { return newMethod(t, "ties", "mergekit") }, lambda: 1,
			want: map[string][]float32{"a": {0.5, 3, 0, 2, 1, -2.5, -2, 0.25}, "b": {0.25, 0.5, 0, 0.75}},
		},
		{
			// normalize false: Σ m·u. τₘ a = [0, 6, −2, 2, 0, −2, −2.5, 0],
			// b = [0.25, 0, 0.5, −0.125]; λ = 2: base + 2·τₘ.
			name: "mergekit-unnormalized-lambda2",
			method: func(t *testing.T) Method {
				m := newMethod(t, "ties", "mergekit")
				m.SetNormalize(false)
				return m
			}, lambda: 2,
			want: map[string][]float32{"a": {0.5, 11, -2, 4, 1, -4.5, -2, 0.25}, "b": {0.5, 0.5, 0.5, 0.75}},
		},
		{
			// peft: vote on τ̂, then Σ m·w·τ̂ / max(1, Σ m).
			// a1: 3+6 → +, (3 + 0.5·6)/2 = 3. a2: −2+3 = 1 → +, 0.5·3 = 1.5.
			// a3: 2−4 = −2 → −, 0.5·−4 = −2. a5: −2. a6: 0.5·−5 = −2.5.
			// b0: 0.25−0.125 → +, 0.25. b2: 0.5. b3: 0.5·−0.25 = −0.125.
			name:   "peft",
			method: func(t *testing.T) Method { return newMethod(t, "ties", "peft") }, lambda: 1,
			want: map[string][]float32{"a": {0.5, 2, 3.5, -2, 1, -2.5, 0.5, 0.25}, "b": {0.25, 0.5, 0, 0.875}},
		},
		{
			// peft, count consensus: a3 has one + and one − sign: the count
			// is 0 → +, {2} → 2. a2: −,+ → 0 → +, 1.5. b0: +,− → +, 0.25.
			name: "peft-count",
			method: func(t *testing.T) Method {
				m := newMethod(t, "ties", "peft")
				m.Vote.Consensus = kernels.ConsensusCount
				return m
			}, lambda: 1,
			want: map[string][]float32{"a": {0.5, 2, 3.5, 2, 1, -2.5, 0.5, 0.25}, "b": {0.25, 0.5, 0, 0.875}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, sum := runGolden(t, c.method(t), mkBase, mkModels, gparams(0.5, c.lambda, 0, 0, 1, 0.5))
			checkGolden(t, got, c.want)
			if len(sum.Kept) != 2 || sum.Kept[0] != 6 || sum.Kept[1] != 6 {
				t.Errorf("kept %v, want [6 6] (exactly 4 + 2 per model)", sum.Kept)
			}
		})
	}
}

// Task arithmetic: base c = [1, 2, 3, 4], τ₁ = [1, −2, 0.5, 0],
// τ₂ = [2, 2, −1, 4], w = [1, 3]: Σ w·τ = [7, 4, −2.5, 12].
// normalize false, λ = 0.5: c + [3.5, 2, −1.25, 6].
// normalize true: Σ w·τ / Σ w = [1.75, 1, −0.625, 3] (every model's weight
// counts, also where its τ is 0: e3 is 12/4, not 12/3).
func TestGoldenTaskArithmetic(t *testing.T) {
	base := vec("c", 1, 2, 3, 4)
	models := [][]testTensor{{ft(base, 1, -2, 0.5, 0)}, {ft(base, 2, 2, -1, 4)}}
	t.Run("sum-lambda0.5", func(t *testing.T) {
		got, _ := runGolden(t, newMethod(t, "task_arithmetic", ""), []testTensor{base}, models, gparams(1, 0.5, 0, 0, 1, 3))
		checkGolden(t, got, map[string][]float32{"c": {4.5, 4, 1.75, 10}})
	})
	t.Run("normalize", func(t *testing.T) {
		m := newMethod(t, "task_arithmetic", "")
		m.SetNormalize(true)
		got, _ := runGolden(t, m, []testTensor{base}, models, gparams(1, 1, 0, 0, 1, 3))
		checkGolden(t, got, map[string][]float32{"c": {2.75, 3, 2.375, 7}})
	})
}

// Linear: Σ w·θ / Σ w, the base ignored (all 100 here).
// θ₁ = [1, 2, −4, 8], θ₂ = [3, −2, 4, 0], w = [1, 3]:
// Σ w·θ = [10, −4, 8, 8]; / 4 = [2.5, −1, 2, 2].
func TestGoldenLinear(t *testing.T) {
	base := vec("c", 100, 100, 100, 100)
	models := [][]testTensor{{vec("c", 1, 2, -4, 8)}, {vec("c", 3, -2, 4, 0)}}
	got, _ := runGolden(t, newMethod(t, "linear", ""), []testTensor{base}, models, gparams(1, 1, 0, 0, 1, 3))
	checkGolden(t, got, map[string][]float32{"c": {2.5, -1, 2, 2}})
	m := newMethod(t, "linear", "")
	m.SetNormalize(false)
	got, _ = runGolden(t, m, []testTensor{base}, models, gparams(1, 1, 0, 0, 1, 3))
	checkGolden(t, got, map[string][]float32{"c": {10, -4, 8, 8}})
}

// Breadcrumbs: per tensor, rank |τ| (ties by position), drop the top ⌊γ·n⌋,
// keep the next ⌊density·n⌋, then Σ w·τ (w = [1, 0.5]). n = 8.
//
//	base c = [1, 2, 3, 4, 5, 6, 7, 8]
//	τ₁ = [8, −1, 4, 0.5, −6, 2, 3, −0.25]: ranked c0, c4, c2, c6, c5, c1, c3, c7
//	τ₂ = [2, 2, −2, 1, 2, −0.5, 0.5, 4]:   ranked c7, c0, c1, c2, c4, c3, c5, c6
func TestGoldenBreadcrumbs(t *testing.T) {
	base := vec("c", 1, 2, 3, 4, 5, 6, 7, 8)
	models := [][]testTensor{{ft(base, 8, -1, 4, 0.5, -6, 2, 3, -0.25)}, {ft(base, 2, 2, -2, 1, 2, -0.5, 0.5, 4)}}
	t.Run("gamma0.25-density0.5", func(t *testing.T) {
		// Top 2 dropped, next 4 kept:
		// τ̂₁ = [0, −1, 4, 0, 0, 2, 3, 0] (c0, c4 dropped)
		// τ̂₂ = [0, 2, −2, 1, 2, 0, 0, 0] (c7 and the first tied 2, c0, dropped)
		// Σ w·τ̂ = [0, 0, 3, 0.5, 1, 2, 3, 0]
		got, sum := runGolden(t, newMethod(t, "breadcrumbs", ""), []testTensor{base}, models, gparams(0.5, 1, 0.25, 0, 1, 0.5))
		checkGolden(t, got, map[string][]float32{"c": {1, 2, 6, 4.5, 6, 8, 10, 8}})
		if sum.Kept[0] != 4 || sum.Kept[1] != 4 {
			t.Errorf("kept %v, want [4 4]", sum.Kept)
		}
	})
	t.Run("shrink", func(t *testing.T) {
		// γ = 0.5, density 0.75: 4 + 6 > 8, so the top shrinks to 8 − 6 = 2
		// and the 6 below it are kept:
		// τ̂₁ = [0, −1, 4, 0.5, 0, 2, 3, −0.25]
		// τ̂₂ = [0, 2, −2, 1, 2, −0.5, 0.5, 0]
		// Σ w·τ̂ = [0, 0, 3, 1, 1, 1.75, 3.25, −0.25]
		got, sum := runGolden(t, newMethod(t, "breadcrumbs", ""), []testTensor{base}, models, gparams(0.75, 1, 0.5, 0, 1, 0.5))
		checkGolden(t, got, map[string][]float32{"c": {1, 2, 6, 5, 6, 7.75, 10.25, 7.75}})
		if sum.Kept[0] != 6 || sum.Kept[1] != 6 {
			t.Errorf("kept %v, want [6 6]", sum.Kept)
		}
	})
}

// Model Stock with two models: t = 2c/(1+c), θ = t·mean(θᵢ) + (1−t)·θ₀.
func TestGoldenModelStock(t *testing.T) {
	m := newMethod(t, "model_stock", "")
	p := gparams(1, 1, 0, 0, 1, 1)
	t.Run("orthogonal", func(t *testing.T) {
		// τ₁ = [1, 0, 2, 0], τ₂ = [0, 3, 0, −1]: c = 0, t = 0, θ = θ₀.
		base := vec("c", 1, 2, 3, 4)
		got, _ := runGolden(t, m, []testTensor{base}, [][]testTensor{{ft(base, 1, 0, 2, 0)}, {ft(base, 0, 3, 0, -1)}}, p)
		checkGolden(t, got, map[string][]float32{"c": {1, 2, 3, 4}})
	})
	t.Run("identical", func(t *testing.T) {
		// τ₁ = τ₂ = [1, 2, 2, 0], |τ|² = 9: c = 9/(3·3) = 1, t = 2/2 = 1,
		// θ = mean(θᵢ) = θ₁ = [2, 4, 5, 4].
		base := vec("c", 1, 2, 3, 4)
		got, _ := runGolden(t, m, []testTensor{base}, [][]testTensor{{ft(base, 1, 2, 2, 0)}, {ft(base, 1, 2, 2, 0)}}, p)
		checkGolden(t, got, map[string][]float32{"c": {2, 4, 5, 4}})
	})
	t.Run("60-degrees", func(t *testing.T) {
		// θ₀ = 0, τ₁ = [2, 0, 0, 0], τ₂ = [1, 1, 1, 1]: |τ₁| = |τ₂| = 2,
		// τ₁·τ₂ = 2, c = 0.5, t = 1/1.5 = 2/3, which rounds to the float32
		// 11184811·2⁻²⁴ (0x3f2aaaab). mean = [1.5, 0.5, 0.5, 0.5].
		// t·1.5 = 33554433·2⁻²⁵ = 1 + 2⁻²⁵, below half a float32 step
		// above 1 (2⁻²⁴): it rounds to 1. t·0.5 = 11184811·2⁻²⁵ is exact.
		base := vec("c", 0, 0, 0, 0)
		third := math.Float32frombits(0x3eaaaaab) // 11184811·2⁻²⁵
		got, _ := runGolden(t, m, []testTensor{base}, [][]testTensor{{ft(base, 2, 0, 0, 0)}, {ft(base, 1, 1, 1, 1)}}, p)
		checkGolden(t, got, map[string][]float32{"c": {1, third, third, third}})
	})
}

// DARE and DELLA drop at random, so only what follows from the rules is
// checked here; random_test.go checks the statistics.

// With density 1 nothing is dropped and the L1 rescale factor is 1: the
// result is task arithmetic's, base + Σ w·τ = the values of
// TestGoldenTaskArithmetic.
func TestGoldenDropDensityOne(t *testing.T) {
	base := vec("c", 1, 2, 3, 4)
	models := [][]testTensor{{ft(base, 1, -2, 0.5, 0)}, {ft(base, 2, 2, -1, 4)}}
	for _, name := range []string{"dare_linear", "della_linear"} {
		for _, rescale := range []Rescale{RescaleL1, RescaleInverse} {
			t.Run(fmt.Sprintf("%s-rescale%d", name, rescale), func(t *testing.T) {
				m := newMethod(t, name, "")
				m.Seed, m.Rescale = 7, rescale
				got, sum := runGolden(t, m, []testTensor{base}, models, gparams(1, 0.5, 0, 0.15, 1, 3))
				checkGolden(t, got, map[string][]float32{"c": {4.5, 4, 1.75, 10}})
				if sum.Kept[0] != 4 || sum.Kept[1] != 4 {
					t.Errorf("kept %v, want everything", sum.Kept)
				}
			})
		}
	}
}

// rescale: inverse with DARE at density 0.25: each output is the base
// (dropped) or base + τ/0.25 = base + 4τ, exactly.
func TestGoldenDareInverse(t *testing.T) {
	const n = 64
	bv, tau := make([]float32, n), make([]float32, n)
	for e := range bv {
		bv[e] = float32(e%5) - 2
		tau[e] = float32(e%7+1) * 0.125 * float32(1-2*(e%2))
	}
	base := vec("c", bv...)
	m := newMethod(t, "dare_linear", "")
	m.Seed, m.Rescale = 11, RescaleInverse
	got, sum := runGolden(t, m, []testTensor{base}, [][]testTensor{{ft(base, tau...)}}, gparams(0.25, 1, 0, 0, 1))
	kept := 0
	for e, v := range got["c"] {
		switch v {
		case bv[e]:
		case bv[e] + 4*tau[e]:
			kept++
		default:
			t.Fatalf("c[%d] = %v: neither the base %v nor base + 4τ = %v", e, v, bv[e], bv[e]+4*tau[e])
		}
	}
	if kept == 0 || kept == n || uint64(kept) != sum.Kept[0] {
		t.Fatalf("%d of %d kept (summary %d): want some of each, and the summary to agree", kept, n, sum.Kept[0])
	}
}

// rescale: inverse with DELLA divides a kept value by its own keep
// probability. Rows of 5, density 0.5, ε = 0.25: by magnitude rank the
// probabilities are 0.25, 0.375, 0.5, 0.625, 0.75; the magnitudes 0.5, 0.75,
// 1, 1.25, 1.5 are chosen so that every kept value becomes ±2 exactly.
func TestGoldenDellaInverse(t *testing.T) {
	const rows = 40
	mags := []float32{0.5, 0.75, 1, 1.25, 1.5}
	bv, tau := make([]float32, rows*5), make([]float32, rows*5)
	for r := range rows {
		for k := range 5 {
			e := r*5 + k
			bv[e] = 1
			tau[e] = mags[(k+2*r)%5] // a different rank order on each row
			if (r+k)%3 == 0 {
				tau[e] = -tau[e]
			}
		}
	}
	base := testTensor{name: "c", shape: []int64{rows, 5}, dt: kernels.F32, vals: bv}
	m := newMethod(t, "della_linear", "")
	m.Seed, m.Rescale = 5, RescaleInverse
	got, sum := runGolden(t, m, []testTensor{base}, [][]testTensor{{ft(base, tau...)}}, gparams(0.5, 1, 0, 0.25, 1))
	kept := 0
	for e, v := range got["c"] {
		want := float32(3)
		if tau[e] < 0 {
			want = -1
		}
		switch v {
		case 1:
		case want:
			kept++
		default:
			t.Fatalf("c[%d] = %v (τ = %v): want 1 (dropped) or %v", e, v, tau[e], want)
		}
	}
	if kept == 0 || kept == rows*5 || uint64(kept) != sum.Kept[0] {
		t.Fatalf("%d of %d kept (summary %d)", kept, rows*5, sum.Kept[0])
	}
}

// rescale: l1 (mergekit's) scales the kept values of a tensor by
// f = Σ|τ| / Σ|τ kept|, one factor for the tensor, so its L1 norm is kept.
// With base 0 and one model of weight 1 the output is the rescaled τ; the
// sums here are of a few dozen small dyadic values, exact in float64.
func TestGoldenL1Rescale(t *testing.T) {
	const rows, cols = 8, 6
	tau := make([]float32, rows*cols)
	for e := range tau {
		tau[e] = float32(e%9+1) * 0.0625 * float32(1-2*(e%3%2))
	}
	base := testTensor{name: "c", shape: []int64{rows, cols}, dt: kernels.F32, vals: make([]float32, rows*cols)}
	for _, name := range []string{"dare_linear", "della_linear"} {
		t.Run(name, func(t *testing.T) {
			m := newMethod(t, name, "")
			m.Seed = 3
			got, _ := runGolden(t, m, []testTensor{base}, [][]testTensor{{ft(base, tau...)}}, gparams(0.5, 1, 0, 0.2, 1))
			var before, after float64
			for e, v := range got["c"] {
				before += math.Abs(float64(tau[e]))
				if v != 0 {
					after += math.Abs(float64(tau[e]))
				}
			}
			if after == 0 || after == before {
				t.Fatalf("kept L1 %v of %v: want a real drop", after, before)
			}
			f := float32(before / after)
			var l1 float64
			for e, v := range got["c"] {
				l1 += math.Abs(float64(v))
				if v != 0 && v != tau[e]*f {
					t.Fatalf("c[%d] = %v, want τ·f = %v·%v = %v", e, v, tau[e], f, tau[e]*f)
				}
			}
			if math.Abs(l1-before) > 1e-6*before {
				t.Fatalf("L1 after rescale %v, before %v", l1, before)
			}
		})
	}
}
