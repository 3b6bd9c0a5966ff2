package merge

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// runPaper merges a set with the paper preset, sampling one run of block
// elements in every (after a first sample of about first elements, if not 0),
// under every kernel set this CPU has (a subtest each), and checks the output
// against the reference bit for bit. It returns the first set's summary;
// the others must have sampled, spilled and fallen back alike.
func runPaper(t *testing.T, set testSet, every int, block int, first int64, wantFallback bool) *Summary {
	t.Helper()
	var sums []*Summary
	for _, ks := range kernels.Available() {
		t.Run(ks.Name, func(t *testing.T) {
			sum := runPaperWith(t, ks, set, every, block, first, wantFallback)
			if len(sums) > 0 {
				if s := sums[0]; sum.Sampled != s.Sampled || sum.Spilled != s.Spilled || sum.FellBack != s.FellBack {
					t.Fatalf("sampled %d, spilled %d, fell back %d; with %s %d, %d, %d",
						sum.Sampled, sum.Spilled, sum.FellBack, s.Kernel, s.Sampled, s.Spilled, s.FellBack)
				}
			}
			sums = append(sums, sum)
		})
	}
	if len(sums) == 0 {
		t.FailNow()
	}
	return sums[0]
}

func runPaperWith(t *testing.T, ks *kernels.Set, set testSet, every int, block int, first int64, wantFallback bool) *Summary {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 8))
	dir := t.TempDir()
	base, models := set.write(t, dir, r)
	m := preset("paper", nil)()
	params := uniformParams(0.2, ones(len(models)), 1)
	opts := Options{Base: base, Models: models, Out: filepath.Join(dir, "out"), Threads: 2, BlockElems: block, Kernels: ks}
	p, err := NewPlan(opts, m, func(name string, _, _ int) (TensorParams, error) { return params(name), nil })
	if err != nil {
		t.Fatal(err)
	}
	p.tuning.sampleEvery, p.tuning.sampleMin, p.tuning.sampleChunk, p.tuning.firstSample = every, 1, int64(block), first
	if !p.singlePass() {
		t.Fatal("the paper preset should take the single pass")
	}
	sum, err := Run(context.Background(), p, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, kept := set.expected(m, params, nil)
	_, data := readModel(t, opts.Out)
	for name, w := range want {
		dt, _ := floatDType(p.Base.Tensors[name].DType)
		got := decode(dt, data[name])
		for e := range w {
			if !sameFloat(got[e], w[e]) {
				t.Fatalf("%s[%d] = %v, want %v (spilled %d, fell back %v)", name, e, got[e], w[e], sum.Spilled, sum.FellBack)
			}
		}
	}
	for i := range kept {
		if sum.Kept[i] != kept[i] {
			t.Fatalf("model %d kept %d, reference %d", i+1, sum.Kept[i], kept[i])
		}
	}
	if (sum.FellBack > 0) != wantFallback {
		t.Fatalf("fell back = %v, want %v", sum.FellBack, wantFallback)
	}
	return sum
}

func TestSinglePassSampled(t *testing.T) {
	for seed := range uint64(4) {
		set := randomSet(rand.New(rand.NewPCG(seed, 99)), 3, seed == 3)
		sum := runPaper(t, set, 3, 16, 0, false)
		var total int64
		for _, bt := range set.base {
			total += int64(len(bt.vals))
		}
		if sum.Sampled == 0 || sum.Sampled > total/2 {
			t.Fatalf("sampled %d of %d elements, want about a third", sum.Sampled, total)
		}
		if sum.Spilled == 0 {
			t.Fatalf("nothing spilled: the band should hold some positions")
		}
	}
}

// TestSinglePassFallsBack feeds a model whose sampled runs (16 elements in
// every 64, from element 32 on) hold tiny task vectors and the others large ones: the sample
// places the band far too low, the counts show it, and the merge redoes the
// selection with two passes, still exact.
func TestSinglePassFallsBack(t *testing.T) {
	const n = 4096
	base := testTensor{name: "model.layers.0.mlp.up_proj.weight", shape: []int64{64, 64}, dt: kernels.F32, vals: make([]float32, n)}
	set := testSet{base: []testTensor{base}}
	for mi := range 2 {
		vals := make([]float32, n)
		for e := range vals {
			scale := float32(1)
			if (e/16)%4 == 2 {
				scale = 1e-4
			}
			vals[e] = scale * float32(1+(e*(mi+3))%17)
		}
		set.models = append(set.models, []testTensor{{name: base.name, shape: base.shape, dt: kernels.F32, vals: vals}})
	}
	runPaper(t, set, 4, 16, 0, true)
}

// TestSinglePassTieBand: a third of each task vector is exactly ±0.5, and
// the threshold falls inside that tie group, so the sampled band is the one
// value 0.5: no position needs spilling, and the counts confirm it.
func TestSinglePassTieBand(t *testing.T) {
	sum := runPaper(t, tieBandSet(), 4, 16, 0, false)
	if sum.Spilled != 0 {
		t.Fatalf("%d positions spilled; a one-value band needs none", sum.Spilled)
	}
}

// TestSinglePassFirstSample: a first sample that puts every band on one
// value is kept; one that leaves a band wide is followed by the full one.
// Either way the result is exact.
func TestSinglePassFirstSample(t *testing.T) {
	set := tieBandSet()
	const n = 1 << 16
	sum := runPaper(t, set, 4, 16, n/16, false)
	if sum.Sampled == 0 || sum.Sampled > n/8 || sum.Spilled != 0 {
		t.Fatalf("tie band: sampled %d of %d, spilled %d; want the first sample (about %d) kept, nothing spilled", sum.Sampled, n, sum.Spilled, n/16)
	}
	for seed := range uint64(3) {
		set := randomSet(rand.New(rand.NewPCG(seed, 98)), 3, false)
		var total int64
		for _, bt := range set.base {
			total += int64(len(bt.vals))
		}
		sum := runPaper(t, set, 3, 16, total/16, false)
		if sum.Sampled < total/4 {
			t.Fatalf("random set: sampled %d of %d; a wide first band should bring the full sample (about a third)", sum.Sampled, total)
		}
	}
}

// tieBandSet has a third of each task vector exactly ±0.5, where the
// threshold falls.
func tieBandSet() testSet {
	const n = 1 << 16
	base := testTensor{name: "model.layers.0.mlp.up_proj.weight", shape: []int64{256, 256}, dt: kernels.BF16, vals: make([]float32, n)}
	set := testSet{base: []testTensor{base}}
	for mi := range 3 {
		vals := make([]float32, n)
		for e := range vals {
			switch (e*7 + mi) % 12 {
			case 0: // 1/12 large: all kept
				vals[e] = 4 + float32(e%5)
			case 1, 2, 3, 4: // 1/3 at the tie: the threshold (k ≈ n/5) falls in it
				vals[e] = 0.5
			default:
				vals[e] = 0.25 * float32(e%3) / 3
			}
			if e%2 == 1 {
				vals[e] = -vals[e]
			}
			vals[e] = roundTo(kernels.BF16, vals[e])
		}
		set.models = append(set.models, []testTensor{{name: base.name, shape: base.shape, dt: kernels.BF16, vals: vals}})
	}
	return set
}

// TestSpillEachGroups streams records back through reads that cut blocks
// anywhere: every block comes back whole, once, in order.
func TestSpillEachGroups(t *testing.T) {
	const rec = 16
	for _, chunk := range []int{1, 40, 48, 100, 1 << 20} {
		s, err := newRecordFile(t.TempDir(), rec)
		if err != nil {
			t.Fatal(err)
		}
		s.chunk = chunk
		var want [][]byte
		for b, n := range []int{1, 5, 2, 7, 1, 3} {
			var group []byte
			for e := range n {
				r := make([]byte, rec)
				binary.LittleEndian.PutUint32(r, uint32(b))
				binary.LittleEndian.PutUint64(r[4:], uint64(e))
				group = append(group, r...)
			}
			if err := s.append(group); err != nil {
				t.Fatal(err)
			}
			want = append(want, group)
		}
		var got [][]byte
		err = s.each(func(r []byte) [2]int64 { return [2]int64{int64(binary.LittleEndian.Uint32(r)), 0} }, func(recs []byte) error {
			got = append(got, recs)
			return nil
		})
		s.close()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("chunk %d: %d groups, want %d", chunk, len(got), len(want))
		}
		for g := range want {
			if !bytes.Equal(got[g], want[g]) {
				t.Fatalf("chunk %d: group %d = %x, want %x", chunk, g, got[g], want[g])
			}
		}
	}
}

// TestSinglePassUpperEdge gives the whole-model single pass a band whose
// edges are big tie groups (|τ| 2 and 1) with a few values between them, and
// the threshold at the upper edge, inside, and at the lower edge. The values
// at the upper edge are kept whatever the threshold is, so they must not be
// spilled, and the result must stay exact.
func TestSinglePassUpperEdge(t *testing.T) {
	const n, group, inside = 40000, 4000, 400
	// k = ⌊n·0.2⌋ + 1 = 8001; above sets where it falls.
	for _, c := range []struct {
		name  string
		above int
	}{{"upper edge", 5000}, {"inside", 3801}, {"lower edge", 3101}} {
		t.Run(c.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(12, 13))
			tau := make([]float32, 0, n)
			for range c.above {
				tau = append(tau, 3+r.Float32())
			}
			for range group {
				tau = append(tau, 2, 1)
			}
			for k := range inside {
				tau = append(tau, 1+float32(k+1)/(inside+1))
			}
			for len(tau) < n {
				tau = append(tau, 0.5*r.Float32())
			}
			r.Shuffle(n, func(a, b int) { tau[a], tau[b] = tau[b], tau[a] })
			set := testSet{base: []testTensor{{name: "w", shape: []int64{n}, dt: kernels.F32, vals: make([]float32, n)}},
				models: [][]testTensor{{{name: "w", shape: []int64{n}, dt: kernels.F32, vals: tau}}}}
			sum := runPaper(t, set, 4, 64, 0, false)
			if sum.Spilled == 0 || sum.Spilled > group+inside+200 {
				t.Errorf("%d positions spilled: want the lower edge and the inside (%d), not the upper edge", sum.Spilled, group+inside)
			}
		})
	}
}
