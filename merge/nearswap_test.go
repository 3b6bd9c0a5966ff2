package merge

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// ownParamsFor gives every tensor of n models the parameters of the methods
// with a path of their own.
func ownParamsFor(n int, t, topk float64) TensorParams {
	tp := TensorParams{Density: make([]float64, n), Weights: make([]float32, n), Gamma: make([]float64, n),
		Epsilon: make([]float64, n), Lambda: 1, T: t, SelectTopK: topk}
	for i := range n {
		tp.Density[i], tp.Weights[i] = 1, 1
	}
	return tp
}

// ownMethodCases are the methods with a path of their own, for the tests
// that run every method (strategy_test.go).
var ownMethodCases = []methodCase{
	{"nearswap", method("nearswap", "", nil), func(r *rand.Rand, n int) func(string) TensorParams {
		tp := ownParamsFor(n, 0.01, 1)
		return func(string) TensorParams { return tp }
	}},
	{"sce", method("sce", "", nil), func(r *rand.Rand, n int) func(string) TensorParams {
		tp := ownParamsFor(n, math.NaN(), []float64{1, 0.3}[r.IntN(2)])
		return func(string) TensorParams { return tp }
	}},
	{"arcee_fusion", method("arcee_fusion", "", nil), func(r *rand.Rand, n int) func(string) TensorParams {
		tp := ownParamsFor(n, math.NaN(), 1)
		return func(string) TensorParams { return tp }
	}},
	{"emr", method("emr", "", nil), func(r *rand.Rand, n int) func(string) TensorParams {
		tp := ownParamsFor(n, math.NaN(), 1)
		return func(string) TensorParams { return tp }
	}},
	{"pcb", method("pcb", "", nil), func(r *rand.Rand, n int) func(string) TensorParams {
		tp := ownParamsFor(n, math.NaN(), 1)
		return func(string) TensorParams { return tp }
	}},
	{"pcb-tensor", method("pcb", "", func(m *Method) { m.PCB.Scope, m.PCB.Inter = ScopeTensor, InterPairwise }),
		func(r *rand.Rand, n int) func(string) TensorParams {
			tp := ownParamsFor(n, math.NaN(), 1)
			return func(string) TensorParams { return tp }
		}},
}

// ownModels is the number of models a test of method name merges: one for
// the methods that compare a fine-tune with the base, else n.
func ownModels(name string, n int) int {
	if name == "nearswap" || name == "arcee_fusion" {
		return 1
	}
	return n
}

// ownRef is a plain in-memory reference of one tensor's merge, in float32
// before the output's rounding.
type ownRef func(shape []int64, base []float32, models [][]float32, tp TensorParams) []float32

// checkOwnMethod merges random small models with the method on every kernel
// set, one to three workers and several block sizes, and compares each
// output with the reference, bit for bit (NaN with NaN).
func checkOwnMethod(t *testing.T, name string, models func(r *rand.Rand) int, params func(r *rand.Rand, n int) TensorParams, ref ownRef) {
	m := newMethod(t, name, "")
	for _, ks := range kernels.Available() {
		t.Run(ks.Name, func(t *testing.T) {
			for trial := range 3 {
				r := rand.New(rand.NewPCG(uint64(len(name)), uint64(trial)))
				n := models(r)
				set := randomSet(r, n, trial == 2)
				dir := t.TempDir()
				base, paths := set.write(t, dir, r)
				tp := params(r, n)
				opts := Options{Base: base, Models: paths, Out: filepath.Join(dir, "out"), Kernels: ks,
					Threads: 1 + trial, BlockElems: []int{1, 7, 64, 1000, 0}[r.IntN(5)]}
				var outDT *kernels.DType
				if r.IntN(2) == 0 {
					dt := []kernels.DType{kernels.F32, kernels.F16, kernels.BF16}[r.IntN(3)]
					outDT, opts.OutDType = &dt, dt.String()
				}
				p, err := NewPlan(opts, m, func(string, int, int) (TensorParams, error) { return tp, nil })
				if err != nil {
					t.Fatal(err)
				}
				if _, err := Run(context.Background(), p, nil, nil); err != nil {
					t.Fatal(err)
				}
				out, data := readModel(t, opts.Out)
				for ti, bt := range set.base {
					if bt.ints != nil {
						continue
					}
					var xs [][]float32
					for _, md := range set.models {
						xs = append(xs, md[ti].vals)
					}
					want := ref(bt.shape, bt.vals, xs, tp)
					dt := bt.dt
					if outDT != nil {
						dt = *outDT
					}
					if got := out.Tensors[bt.name].DType; got != dt.String() {
						t.Fatalf("%s: dtype %s, want %s", bt.name, got, dt)
					}
					got := decode(dt, data[bt.name])
					for e := range want {
						if w := roundTo(dt, want[e]); !sameFloat(got[e], w) {
							t.Fatalf("trial %d (%d models, %d threads, block %d): %s[%d] = %v, want %v",
								trial, n, opts.Threads, opts.BlockElems, bt.name, e, got[e], w)
						}
					}
				}
			}
		})
	}
}

func refNearSwap(_ []int64, base []float32, models [][]float32, tp TensorParams) []float32 {
	out := make([]float32, len(base))
	t := float32(tp.T)
	for e, b := range base {
		x := models[0][e]
		d := b - x
		if d < 0 {
			d = -d
		}
		if d < 1e-6 {
			d = 1e-6
		}
		w := float32(1) / d
		w *= t
		if w < 0 {
			w = 0
		}
		if w > 1 {
			w = 1
		}
		a := w * x
		c := (1 - w) * b
		out[e] = a + c
	}
	return out
}

func TestNearSwapMatchesReference(t *testing.T) {
	checkOwnMethod(t, "nearswap", func(*rand.Rand) int { return 1 },
		func(r *rand.Rand, n int) TensorParams {
			return ownParamsFor(n, []float64{0.001, 0.01, 0.5, 0, -1}[r.IntN(5)], 1)
		}, refNearSwap)
}

// Golden nearswap values, t = 0.75: within t the model's value (w clamps
// to 1); |base − x| = 2 gives w = 1/2·0.75 = 0.375, 4 gives 0.1875; equal
// values give the base's (w clamps to 1, x = base); t = 0 and t < 0 give the
// base. For |base − x| = 3.75 the two roundings matter: reciprocal(3.75)·0.75
// is 0.20000002 in float32, 0.75/3.75 one rounding away 0.2.
func TestGoldenNearSwap(t *testing.T) {
	b := vec("w", 1, 1, 1, 5, -2, 0)
	x := vec("w", 1.25, 3, 1, 1, -2.5, 3.75)
	got, _ := runGolden(t, newMethod(t, "nearswap", ""), []testTensor{b}, [][]testTensor{{x}},
		func(string) TensorParams { return ownParamsFor(1, 0.75, 1) })
	w := float32(0x1.99999cp-03) // 0.20000002
	if float32(0.75)/3.75 == w {
		t.Fatal("0.75/3.75 should round to 0.2")
	}
	want := []float32{1.25, 1.75, 1, 4.25, -2.5, w * 3.75}
	checkGolden(t, got, map[string][]float32{"w": want})
	for _, tv := range []float64{0, -1} {
		got, _ = runGolden(t, newMethod(t, "nearswap", ""), []testTensor{b}, [][]testTensor{{x}},
			func(string) TensorParams { return ownParamsFor(1, tv, 1) })
		checkGolden(t, got, map[string][]float32{"w": b.vals})
	}
}
