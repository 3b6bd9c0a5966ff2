package merge

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// Statistical tests of the random methods (DARE, DELLA), with fixed seeds:
// a correct implementation passes them whatever the seed (bounds at 5σ),
// and they are deterministic here.

// dropRun merges one F32 tensor of the given shape and task vectors with a
// zero base (so the output is the merged task vector) and returns the output
// values and the summary.
func dropRun(t *testing.T, m Method, shape []int64, taus [][]float32, tp TensorParams) ([]float32, *Summary) {
	t.Helper()
	dir := t.TempDir()
	n := len(taus[0])
	base := testTensor{name: "w", shape: shape, dt: kernels.F32, vals: make([]float32, n)}
	writeModel(t, filepath.Join(dir, "base"), []testTensor{base}, 0)
	var paths []string
	for i, tau := range taus {
		p := filepath.Join(dir, fmt.Sprintf("ft%d", i+1))
		writeModel(t, p, []testTensor{{name: "w", shape: shape, dt: kernels.F32, vals: tau}}, 0)
		paths = append(paths, p)
	}
	out := filepath.Join(dir, "out")
	p, err := NewPlan(Options{Base: filepath.Join(dir, "base"), Models: paths, Out: out},
		m, func(string, int, int) (TensorParams, error) { return tp, nil })
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Run(context.Background(), p, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, data := readModel(t, out)
	return decode(kernels.F32, data["w"]), sum
}

func oneModel(density, eps float64) TensorParams {
	return TensorParams{Density: []float64{density}, Weights: []float32{1}, Gamma: []float64{0}, Epsilon: []float64{eps}, Lambda: 1}
}

// within5Sigma checks a count of successes of n Bernoulli(p) trials.
func within5Sigma(t *testing.T, what string, got int, n int, p float64) {
	t.Helper()
	mean, sd := float64(n)*p, math.Sqrt(float64(n)*p*(1-p))
	if math.Abs(float64(got)-mean) > 5*sd {
		t.Errorf("%s: %d of %d, expected %.0f ± %.0f (5σ = %.0f)", what, got, n, mean, sd, 5*sd)
	}
}

// DARE keeps each element with probability density: over 10⁵ elements the
// kept count is within 5σ of n·density. With two models the two masks are
// independent: the four kept/dropped combinations show up in proportion.
func TestDareKeptFraction(t *testing.T) {
	const rows, cols = 400, 250
	n := rows * cols
	ones, twos := make([]float32, n), make([]float32, n)
	for e := range ones {
		ones[e], twos[e] = 1, 2
	}
	for _, d := range []float64{0.1, 0.5, 0.9} {
		t.Run(fmt.Sprint(d), func(t *testing.T) {
			m := newMethod(t, "dare_linear", "")
			m.Seed, m.Rescale = 1234, RescaleNone
			out, sum := dropRun(t, m, []int64{rows, cols}, [][]float32{ones}, oneModel(d, 0))
			kept := 0
			for _, v := range out {
				if v != 0 {
					kept++
				}
			}
			within5Sigma(t, "kept", kept, n, d)
			if uint64(kept) != sum.Kept[0] {
				t.Errorf("summary says %d kept, the output %d", sum.Kept[0], kept)
			}

			tp := oneModel(d, 0)
			tp.Density, tp.Weights = []float64{d, d}, []float32{1, 1}
			tp.Gamma, tp.Epsilon = []float64{0, 0}, []float64{0, 0}
			out, _ = dropRun(t, m, []int64{rows, cols}, [][]float32{ones, twos}, tp)
			var count [4]int // output 0: neither, 1: model 1 only, 2: model 2 only, 3: both
			for _, v := range out {
				count[int(v)]++
			}
			p := []float64{(1 - d) * (1 - d), d * (1 - d), (1 - d) * d, d * d}
			for c := range count {
				within5Sigma(t, fmt.Sprintf("two models, output %d", c), count[c], n, p[c])
			}
		})
	}
}

// DELLA keeps an element with probability d − ε + 2ε·rank/(n−1), rank being
// its magnitude's rank in its row. Rows of 100 hold the magnitudes
// 1/128 … 100/128 in a random order with random signs, so the rank of each
// element is known; the bottom decile (ranks 0–9) should be kept at the mean
// of its probabilities, d − ε + 2ε·4.5/99, the top (ranks 90–99) at
// d − ε + 2ε·94.5/99.
func TestDellaKeepsLarge(t *testing.T) {
	const rows, cols = 1000, 100
	const d, eps = 0.5, 0.3
	r := rand.New(rand.NewPCG(9, 9))
	tau := make([]float32, rows*cols)
	rank := make([]int, rows*cols)
	for row := range rows {
		perm := r.Perm(cols)
		for k, rk := range perm {
			e := row*cols + k
			rank[e] = rk
			tau[e] = float32(rk+1) / 128
			if r.IntN(2) == 0 {
				tau[e] = -tau[e]
			}
		}
	}
	m := newMethod(t, "della_linear", "")
	m.Seed, m.Rescale = 77, RescaleNone
	out, sum := dropRun(t, m, []int64{rows, cols}, [][]float32{tau}, oneModel(d, eps))
	var bottom, top, kept int
	for e, v := range out {
		if v == 0 {
			continue
		}
		if v != tau[e] {
			t.Fatalf("w[%d] = %v: without rescale a kept value is τ = %v", e, v, tau[e])
		}
		kept++
		switch {
		case rank[e] < 10:
			bottom++
		case rank[e] >= 90:
			top++
		}
	}
	within5Sigma(t, "bottom decile kept", bottom, rows*10, d-eps+2*eps*4.5/99)
	within5Sigma(t, "top decile kept", top, rows*10, d-eps+2*eps*94.5/99)
	within5Sigma(t, "kept overall", kept, rows*cols, d) // the mean probability is d
	if uint64(kept) != sum.Kept[0] {
		t.Errorf("summary says %d kept, the output %d", sum.Kept[0], kept)
	}
}

// The L1 rescale keeps each tensor's L1 norm (up to float32 rounding of the
// scaled values) for DARE and DELLA.
func TestL1RescaleKeepsNorm(t *testing.T) {
	const rows, cols = 200, 500
	r := rand.New(rand.NewPCG(5, 6))
	tau := make([]float32, rows*cols)
	var before float64
	for e := range tau {
		tau[e] = float32(r.NormFloat64()) * 0.01
		before += math.Abs(float64(tau[e]))
	}
	for _, name := range []string{"dare_linear", "della_linear"} {
		t.Run(name, func(t *testing.T) {
			m := newMethod(t, name, "")
			m.Seed = 99
			out, sum := dropRun(t, m, []int64{rows, cols}, [][]float32{tau}, oneModel(0.3, 0.2))
			var after float64
			for _, v := range out {
				after += math.Abs(float64(v))
			}
			if math.Abs(after-before) > 1e-6*before {
				t.Errorf("L1 norm %v after rescale, %v before (relative error %.2g)", after, before, math.Abs(after-before)/before)
			}
			within5Sigma(t, "kept", int(sum.Kept[0]), rows*cols, 0.3)
		})
	}
}

// outputBytes reads every file of an output directory.
func outputBytes(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

func sameFiles(a, b map[string][]byte) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d files against %d", len(a), len(b))
	}
	for name, x := range a {
		if !bytes.Equal(x, b[name]) {
			return name + " differs"
		}
	}
	return ""
}

// The random methods write the same bytes whatever the thread count and
// block size (DELLA rounds blocks to whole rows, so the sizes give different
// splits), and other bytes with another seed.
func TestRandomSameBytes(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 3))
	set := randomSet(r, 3, false)
	// A tensor big enough for several blocks of every size, rows of 100.
	big := testTensor{name: "model.layers.0.mlp.up_proj.weight", shape: []int64{700, 100}, dt: kernels.BF16, vals: make([]float32, 70000)}
	for e := range big.vals {
		big.vals[e] = roundTo(kernels.BF16, float32(r.NormFloat64()))
	}
	set.base = append(set.base, big)
	for mi := range set.models {
		mt := big
		mt.vals = make([]float32, len(big.vals))
		for e, b := range big.vals {
			mt.vals[e] = roundTo(kernels.BF16, b+float32(r.NormFloat64())*0.01)
		}
		set.models[mi] = append(set.models[mi], mt)
	}
	dir := t.TempDir()
	base, models := set.write(t, dir, r)
	params := uniformParams(0.4, []float32{0.5, 0.3, 0.2}, 1)
	for _, name := range []string{"dare_ties", "dare_linear", "della", "della_linear"} {
		t.Run(name, func(t *testing.T) {
			var ref map[string][]byte
			run := func(seed uint64, threads, block int) map[string][]byte {
				m := newMethod(t, name, "mergekit")
				m.Seed = seed
				out := filepath.Join(dir, fmt.Sprintf("%s-%d-%d-%d", name, seed, threads, block))
				p, err := NewPlan(Options{Base: base, Models: models, Out: out, Threads: threads, BlockElems: block},
					m, func(n string, _, _ int) (TensorParams, error) { return params(n), nil })
				if err != nil {
					t.Fatal(err)
				}
				if _, err := Run(context.Background(), p, nil, nil); err != nil {
					t.Fatal(err)
				}
				files := outputBytes(t, out)
				os.RemoveAll(out)
				return files
			}
			for _, threads := range []int{1, 2, 3} {
				for _, block := range []int{1000, 4096, 65536} {
					files := run(42, threads, block)
					if ref == nil {
						ref = files
					} else if d := sameFiles(ref, files); d != "" {
						t.Fatalf("%d threads, block %d: %s from the first run", threads, block, d)
					}
				}
			}
			if d := sameFiles(ref, run(43, 2, 4096)); d == "" {
				t.Fatal("seed 43 wrote the same bytes as seed 42")
			}
		})
	}
}
