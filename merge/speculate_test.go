package merge

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// quantizedSet is one bf16 tensor of n elements and fine-tunes whose task
// vectors take the values ±k·2⁻⁷ (exact in bf16 on a base of multiples of
// 2⁻⁷), |k| = 3, 2, 1 for 10, 75 and 15 % of them: a density between 0.2
// and 0.8 puts every threshold in the tie group of 2, and the sample puts
// each band on that one value. With trap, the positions the sample reads
// (every fourth from the second, see sampleBlocks) hold ±2 and the others
// ±3 or ±1, so at a density of 0.9 the band is one value, the wrong one.
func quantizedSet(r *rand.Rand, n, models int, trap bool) testSet {
	base := make([]float32, n)
	for e := range base {
		base[e] = float32(r.IntN(129)-64) / 128
	}
	s := testSet{base: []testTensor{{name: "w", shape: []int64{int64(n)}, dt: kernels.BF16, vals: base}}}
	for range models {
		vals := make([]float32, n)
		for e, b := range base {
			k := []float32{3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1}[r.IntN(20)] * []float32{1, -1}[r.IntN(2)]
			if trap { // the sample sees only 2; 3 and 1 elsewhere
				k = []float32{3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 1, 1, 1}[r.IntN(20)] * []float32{1, -1}[r.IntN(2)]
				if e%4 == 2 {
					k = []float32{2, -2}[r.IntN(2)]
				}
			}
			vals[e] = b + k/128
		}
		s.models = append(s.models, []testTensor{{name: "w", shape: []int64{int64(n)}, dt: kernels.BF16, vals: vals}})
	}
	return s
}

// TestOnePassMatchesReference merges quantized tensors per tensor with the
// exact-k rule (ties cut inside the tensor, so blocks past the kept ties are
// merged again) and with every tie kept, and holds the output and the kept
// counts to the reference. The trap makes the one-pass merge find its
// sample wrong, undo its counts, and take the radix select; at a low
// density most ties are dropped, so the exact-k rule takes the select pass.
func TestOnePassMatchesReference(t *testing.T) {
	for ci, c := range []struct {
		preset    string
		trap      bool
		densities []float64
		onePass   int
	}{
		{"mergekit", false, []float64{0.7, 0.72, 0.75}, 1},
		{"mergekit", true, []float64{0.9, 0.95}, 0},
		{"mergekit", false, []float64{0.3, 0.4}, 0},
		{"paper", false, []float64{0.3, 0.5, 0.7}, 1},
	} {
		for trial := range 3 {
			r := rand.New(rand.NewPCG(uint64(ci), uint64(trial)))
			const n = 20000
			nm := 1 + r.IntN(3)
			set := quantizedSet(r, n, nm, c.trap)
			dir := t.TempDir()
			base, models := set.write(t, dir, r)
			m := preset(c.preset, func(m *Method) { m.Scope = ScopeTensor })()
			params := uniformParams(c.densities[r.IntN(len(c.densities))], randWeights(r, nm), 1)
			sets := kernels.Available()
			opts := Options{Base: base, Models: models, Out: filepath.Join(dir, "out"), Threads: 1 + r.IntN(2),
				BlockElems: []int{64, 100, 1000}[r.IntN(3)], Kernels: sets[r.IntN(len(sets))]}
			p, err := NewPlan(opts, m, func(name string, _, _ int) (TensorParams, error) { return params(name), nil })
			if err != nil {
				t.Fatal(err)
			}
			p.tensorSampled, p.tensorSampleMin, p.sampleEvery, p.sampleChunk = 1, 1, 4, 1
			sum, err := Run(context.Background(), p, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			what := fmt.Sprintf("case %d: %s trap %v trial %d (%d models, block %d, %s)", ci, c.preset, c.trap, trial, nm, opts.BlockElems, opts.Kernels.Name)
			if fell := b2i(c.trap); sum.OnePass != c.onePass || sum.FellBack != fell {
				t.Fatalf("%s: %d merged in one pass, %d fell back; want %d and %d", what, sum.OnePass, sum.FellBack, c.onePass, fell)
			}
			if c.preset == "mergekit" && c.onePass == 1 && sum.Remerged == 0 {
				t.Fatalf("%s: no block merged again, though ties were cut", what)
			}
			if c.preset == "paper" && sum.Remerged != 0 {
				t.Fatalf("%s: %d blocks merged again, though every tie is kept", what, sum.Remerged)
			}
			want, kept := set.expected(m, params, nil)
			_, data := readModel(t, opts.Out)
			got := decode(kernels.BF16, data["w"])
			for e, w := range want["w"] {
				if !sameFloat(got[e], w) {
					t.Fatalf("%s: w[%d] = %v (%#x), want %v", what, e, got[e], math.Float32bits(got[e]), w)
				}
			}
			for i := range kept {
				if sum.Kept[i] != kept[i] {
					t.Fatalf("%s: model %d kept %d, reference %d", what, i+1, sum.Kept[i], kept[i])
				}
			}
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
