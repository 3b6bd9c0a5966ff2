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
// 2⁻⁷), |k| = 3, 2, 1 for 20, 50 and 30 % of them: a density between 0.3
// and 0.6 puts every threshold in the tie group of 2, and the sample puts
// each band on that one value. With trap, the positions the sample reads (every
// fourth from the second, see sampleBlocks) hold the smallest change, so
// the bands are one value but the wrong one.
func quantizedSet(r *rand.Rand, n, models int, trap bool) testSet {
	base := make([]float32, n)
	for e := range base {
		base[e] = float32(r.IntN(129)-64) / 128
	}
	s := testSet{base: []testTensor{{name: "w", shape: []int64{int64(n)}, dt: kernels.BF16, vals: base}}}
	for range models {
		vals := make([]float32, n)
		for e, b := range base {
			k := []float32{3, 3, 2, 2, 2, 2, 2, 1, 1, 1}[r.IntN(10)] * []float32{1, -1}[r.IntN(2)]
			if trap && e%4 == 2 {
				k = []float32{1, -1}[r.IntN(2)]
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
// counts to the reference; the trap makes the one-pass merge find its
// sample wrong, undo its counts, and take the radix select.
func TestOnePassMatchesReference(t *testing.T) {
	for ci, c := range []struct {
		preset string
		trap   bool
	}{{"mergekit", false}, {"mergekit", true}, {"paper", false}} {
		for trial := range 3 {
			r := rand.New(rand.NewPCG(uint64(ci), uint64(trial)))
			const n = 20000
			nm := 1 + r.IntN(3)
			set := quantizedSet(r, n, nm, c.trap)
			dir := t.TempDir()
			base, models := set.write(t, dir, r)
			m := preset(c.preset, func(m *Method) { m.Scope = ScopeTensor })()
			params := uniformParams([]float64{0.35, 0.45, 0.55}[r.IntN(3)], randWeights(r, nm), 1)
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
			what := fmt.Sprintf("%s trap %v trial %d (%d models, block %d, %s)", c.preset, c.trap, trial, nm, opts.BlockElems, opts.Kernels.Name)
			if c.trap {
				if sum.OnePass != 0 || sum.FellBack != 1 {
					t.Fatalf("%s: %d merged in one pass, %d fell back; want 0 and 1", what, sum.OnePass, sum.FellBack)
				}
			} else if sum.OnePass != 1 || sum.FellBack != 0 {
				t.Fatalf("%s: %d merged in one pass, %d fell back; want 1 and 0", what, sum.OnePass, sum.FellBack)
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
