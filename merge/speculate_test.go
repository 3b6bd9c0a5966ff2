package merge

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// speculateSet is one tensor of n elements whose |τ| take three values:
// 2 (every fifth element), the tie value 1, and 0.5. Where the ties fall
// depends on whether the sample reads the element (pattern): the sample
// then misplaces the tie cut, or misses the threshold altogether.
// The sample reads runs of 64 in every 256 elements, from 128.
func speculateSet(r *rand.Rand, n int, patterns []func(e int, sampled bool) float32) testSet {
	base := make([]float32, n)
	set := testSet{base: []testTensor{{name: "w", shape: []int64{int64(n)}, dt: kernels.BF16, vals: base}}}
	for _, pattern := range patterns {
		vals := make([]float32, n)
		for e := range vals {
			vals[e] = pattern(e, e%256 >= 128 && e%256 < 192) * []float32{1, -1}[r.IntN(2)]
		}
		set.models = append(set.models, []testTensor{{name: "w", shape: []int64{int64(n)}, dt: kernels.BF16, vals: vals}})
	}
	return set
}

// tiesWhere puts a tie at the elements (not every fifth) for which at says so.
func tiesWhere(at func(e int, sampled bool) bool) func(e int, sampled bool) float32 {
	return func(e int, sampled bool) float32 {
		switch {
		case e%5 == 0:
			return 2
		case at(e, sampled):
			return 1
		}
		return 0.5
	}
}

// TestSpeculativeMerge holds the one-pass per-tensor merge to the reference
// where the sample misplaces the tie cut both ways (model 1: the sampled
// part of the first half is denser in ties than the rest, so the estimated
// cut is early; model 2: the other way), with the exact-k rule, which must
// merge the blocks in between again, and with every tie kept, which needs
// no second merge. Where the sample misses the threshold (model 2 then has
// all its unsampled elements above the tie value, or too few ties), the
// radix select must take over.
func TestSpeculativeMerge(t *testing.T) {
	const n = 256 * 200
	early := tiesWhere(func(e int, sampled bool) bool { return sampled == (e < n/2) || e%2 == 0 })
	late := tiesWhere(func(e int, sampled bool) bool { return sampled != (e < n/2) || e%2 == 0 })
	above := func(e int, sampled bool) float32 { return []float32{2, 1}[b2i(sampled)] }
	few := func(e int, sampled bool) float32 {
		if sampled {
			return []float32{1, 2}[b2i(e%5 == 0)]
		}
		return 0.5
	}
	for _, c := range []struct {
		name     string
		preset   string
		patterns []func(int, bool) float32
		again    bool // some blocks merged twice
		miss     bool
	}{
		{"exact-k cut misplaced", "mergekit", []func(int, bool) float32{early, late}, true, false},
		{"ties kept", "paper", []func(int, bool) float32{early, late}, false, false},
		{"threshold above the ties", "mergekit", []func(int, bool) float32{early, above}, false, true},
		{"too few ties", "mergekit", []func(int, bool) float32{late, few}, false, true},
		{"too few ties, ties kept", "paper", []func(int, bool) float32{late, few}, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(3, 4))
			set := speculateSet(r, n, c.patterns)
			m := preset(c.preset, func(m *Method) { m.Scope, m.GlobalMajority = ScopeTensor, false })()
			params := uniformParams(0.35, ones(2), 1)
			p, sum := runOneTensor(t, r, set, m, params, 1024, nil)
			// The radix select's merge counts the same votes.
			radix := *p
			radix.tuning.tensorSampled, radix.Opts.Out = n+1, p.Opts.Out+"-radix"
			rsum, err := Run(context.Background(), &radix, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Votes != rsum.Votes {
				t.Errorf("votes %+v, the radix select's merge %+v", sum.Votes, rsum.Votes)
			}
			if sum.OnePass != 1-b2i(c.miss) || sum.FellBack != b2i(c.miss) {
				t.Errorf("%d tensors merged in one pass, %d fell back", sum.OnePass, sum.FellBack)
			}
			if (sum.Remerged > 0) != c.again || sum.Remerged > n/4 {
				t.Errorf("%d elements merged again", sum.Remerged)
			}
			checkOneTensor(t, p, sum, set, m, params)
		})
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestSpeculativeMergeRandom holds the one-pass merge to the reference on
// random tie-heavy tensors (|τ| from a few values, their mix drifting along
// the tensor so the sample misplaces cuts), with random models, dtypes,
// block sizes, threads and tie rules, under every kernel set this CPU has,
// and checks that the trials took the one-pass merge.
func TestSpeculativeMergeRandom(t *testing.T) {
	for _, ks := range kernels.Available() {
		t.Run(ks.Name, func(t *testing.T) { speculativeMergeRandom(t, ks) })
	}
}

func speculativeMergeRandom(t *testing.T, ks *kernels.Set) {
	onePass := 0
	for trial := range 24 {
		r := rand.New(rand.NewPCG(11, uint64(trial)))
		nm := 1 + r.IntN(4)
		n := 20000 + r.IntN(30000)
		dt := []kernels.DType{kernels.BF16, kernels.F16, kernels.F32}[r.IntN(3)]
		base := make([]float32, n)
		for e := range base { // a coarse grid: θ₀ + τ is exact in every dtype, τ ties
			base[e] = float32(r.IntN(7)-3) * 0x1p-4
		}
		set := testSet{base: []testTensor{{name: "w", shape: []int64{int64(n)}, dt: dt, vals: base}}}
		for range nm {
			vals := make([]float32, n)
			for e := range vals {
				// Larger values more often towards the end.
				k := min(5, r.IntN(4)+r.IntN(1+3*e/n))
				mag := []float32{0, 0x1p-9, 0x1p-8, 0x1p-7, 0x1p-6, 0x1p-5}[k]
				vals[e] = roundTo(dt, base[e]+mag*[]float32{1, -1}[r.IntN(2)])
			}
			set.models = append(set.models, []testTensor{{name: "w", shape: []int64{int64(n)}, dt: dt, vals: vals}})
		}
		dir := t.TempDir()
		b, models := set.write(t, dir, r)
		pr := []string{"mergekit", "peft", "paper"}[r.IntN(3)]
		m := preset(pr, func(m *Method) { m.Scope, m.GlobalMajority = ScopeTensor, false })()
		weights := make([]float32, nm)
		for i := range weights {
			weights[i] = 0.5 + r.Float32()
		}
		params := uniformParams(0.1+0.6*r.Float64(), weights, 1)
		opts := Options{Base: b, Models: models, Out: filepath.Join(dir, "out"), Threads: 1 + r.IntN(3),
			BlockElems: []int{64, 1000, 4096}[r.IntN(3)], Kernels: ks}
		p, err := NewPlan(opts, m, func(string, int, int) (TensorParams, error) { return params("w"), nil })
		if err != nil {
			t.Fatal(err)
		}
		p.tuning.tensorSampled, p.tuning.tensorSampleMin, p.tuning.tensorSampleEvery, p.tuning.sampleChunk = 1, 1, 2+r.IntN(4), 16+int64(r.IntN(100))
		if r.IntN(2) == 0 {
			p.tuning.soloBytes = 0 // the tensor split across the workers
		}
		if r.IntN(3) == 0 {
			p.tuning.sideEntries = r.IntN(3) // the sample's low histograms by passes
		}
		sum, err := Run(context.Background(), p, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		onePass += sum.OnePass
		want, kept := set.expected(m, params, nil)
		_, data := readModel(t, opts.Out)
		got := decode(dt, data["w"])
		for e, w := range want["w"] {
			if !sameFloat(got[e], w) {
				t.Fatalf("trial %d (%s, %d models, %s, block %d, %d threads, %s, one pass %d): w[%d] = %v, want %v",
					trial, pr, nm, dt, opts.BlockElems, opts.Threads, opts.Kernels.Name, sum.OnePass, e, got[e], w)
			}
		}
		for i := range kept {
			if sum.Kept[i] != kept[i] {
				t.Fatalf("trial %d: model %d kept %d, reference %d", trial, i+1, sum.Kept[i], kept[i])
			}
		}
	}
	if onePass < 12 {
		t.Errorf("%d of 24 trials merged in one pass: the test no longer exercises it", onePass)
	}
}
