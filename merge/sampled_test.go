package merge

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// TestSampledPickMissFallsBack builds a tensor whose sampled positions
// (every fourth, from the third) hold tiny task-vector values and whose
// other positions hold large ones, so the sample places the band far below
// the true threshold: the select must notice, fall back to the radix select
// and still keep exactly the largest half. A tensor without the trap must
// take the sampled select.
func TestSampledPickMissFallsBack(t *testing.T) {
	const n = 4000
	for _, trap := range []bool{true, false} {
		tau := make([]float32, n)
		for e := range tau {
			tau[e] = float32(e%97+1) * []float32{1, -1}[e%3%2]
			if trap && e%4 == 2 {
				tau[e] *= 1e-6
			}
		}
		dir := t.TempDir()
		base := testTensor{name: "w", shape: []int64{n}, dt: kernels.F32, vals: make([]float32, n)}
		writeModel(t, filepath.Join(dir, "base"), []testTensor{base}, 0)
		ft := filepath.Join(dir, "ft1")
		writeModel(t, ft, []testTensor{{name: "w", shape: []int64{n}, dt: kernels.F32, vals: tau}}, 0)
		out := filepath.Join(dir, "out")
		m := newMethod(t, "ties", "mergekit")
		p, err := NewPlan(Options{Base: filepath.Join(dir, "base"), Models: []string{ft}, Out: out, BlockElems: 128, Threads: 2},
			m, func(string, int, int) (TensorParams, error) { return oneModel(0.5, 0), nil })
		if err != nil {
			t.Fatal(err)
		}
		p.tuning.tensorSampled, p.tuning.tensorSampleMin, p.tuning.tensorSampleEvery, p.tuning.sampleChunk = 1, 1, 4, 1
		sum, err := Run(context.Background(), p, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := sum.FellBack > 0; got != trap {
			t.Errorf("trap %v: fell back %v", trap, got)
		}
		_, data := readModel(t, out)
		got := decode(kernels.F32, data["w"])
		// The expected output: the n/2 largest |τ|, ties to the lowest index.
		order := make([]int, n)
		for e := range order {
			order[e] = e
		}
		slices.SortStableFunc(order, func(a, b int) int {
			return -cmpf(math.Abs(float64(tau[a])), math.Abs(float64(tau[b])))
		})
		want := make([]float32, n)
		for _, e := range order[:n/2] {
			want[e] = tau[e]
		}
		for e := range want {
			if math.Float32bits(got[e]) != math.Float32bits(want[e]) {
				t.Fatalf("trap %v: w[%d] = %v, want %v", trap, e, got[e], want[e])
			}
		}
		if sum.Kept[0] != n/2 {
			t.Errorf("trap %v: kept %d, want %d", trap, sum.Kept[0], n/2)
		}
	}
}

func cmpf(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestSampledPickWideBand holds a per-tensor select whose sampled band
// spans many values (distinct task-vector values) to the reference, with
// every tie rule: the values inside the band must be collected, not sent to
// the radix select.
func TestSampledPickWideBand(t *testing.T) {
	for _, pr := range []string{"mergekit", "paper"} {
		r := rand.New(rand.NewPCG(7, 8))
		const n = 20000
		base := make([]float32, n)
		set := testSet{base: []testTensor{{name: "w", shape: []int64{n}, dt: kernels.F32, vals: base}}}
		for range 2 {
			vals := make([]float32, n)
			for e := range vals {
				vals[e] = float32(r.NormFloat64())
			}
			set.models = append(set.models, []testTensor{{name: "w", shape: []int64{n}, dt: kernels.F32, vals: vals}})
		}
		m := preset(pr, func(m *Method) { m.Scope = ScopeTensor })()
		params := uniformParams(0.3, ones(2), 1)
		p, sum := runOneTensor(t, r, set, m, params, 1000, nil)
		if sum.FellBack != 0 {
			t.Fatalf("%s: the select fell back to the radix select", pr)
		}
		checkOneTensor(t, p, sum, set, m, params)
	}
}

// runOneTensor merges set's tensor "w" with m, in blocks of block elements
// on two threads, sampling every tensor (runs of 64 elements, one in 4),
// with edit's changes to the plan.
func runOneTensor(t *testing.T, r *rand.Rand, set testSet, m Method, params func(string) TensorParams, block int, edit func(*Plan)) (*Plan, *Summary) {
	t.Helper()
	dir := t.TempDir()
	b, models := set.write(t, dir, r)
	p, err := NewPlan(Options{Base: b, Models: models, Out: filepath.Join(dir, "out"), BlockElems: block, Threads: 2},
		m, func(string, int, int) (TensorParams, error) { return params("w"), nil })
	if err != nil {
		t.Fatal(err)
	}
	p.tuning.tensorSampled, p.tuning.tensorSampleMin, p.tuning.tensorSampleEvery, p.tuning.sampleChunk = 1, 1, 4, 64
	if edit != nil {
		edit(p)
	}
	var prog countProgress
	sum, err := Run(context.Background(), p, &prog, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Blocks merged again (a tie cut, a missed sample) count once.
	if prog.bytes != p.InputBytes {
		t.Errorf("progress reported %d bytes of %d", prog.bytes, p.InputBytes)
	}
	return p, sum
}

// countProgress adds up the bytes a merge reports.
type countProgress struct{ bytes int64 }

func (c *countProgress) StartPass(string, int, int, int64) {}
func (c *countProgress) Add(b int64)                       { atomic.AddInt64(&c.bytes, b) }
func (c *countProgress) EndPass()                          {}

// checkOneTensor holds the merged tensor "w" and the kept counts to the
// reference.
func checkOneTensor(t *testing.T, p *Plan, sum *Summary, set testSet, m Method, params func(string) TensorParams) {
	t.Helper()
	want, kept := set.expected(m, params, nil)
	_, data := readModel(t, p.Opts.Out)
	got := decode(set.base[0].dt, data["w"])
	for e, w := range want["w"] {
		if !sameFloat(got[e], w) {
			t.Fatalf("w[%d] = %v, want %v", e, got[e], w)
		}
	}
	for i := range kept {
		if sum.Kept[i] != kept[i] {
			t.Errorf("model %d: kept %d, reference %d", i+1, sum.Kept[i], kept[i])
		}
	}
}

// TestSampledPickEdges puts a per-tensor select's band edges on two big tie
// groups (|τ| 2 and 1) with a few distinct values strictly between them,
// and its lists room for those few only: the edges' values must be counted,
// not listed, and the threshold found at the upper edge, inside, or at the
// lower edge, with the exact-k tie cut, without the radix select.
func TestSampledPickEdges(t *testing.T) {
	const n, above, group = 40000, 8000, 4000
	for _, c := range []struct {
		name   string
		inside int // distinct values strictly between the edges (0: adjacent patterns)
		need   int
	}{
		{"upper edge", 400, above + 3500},
		{"inside", 400, above + group + 200},
		{"lower edge", 400, above + group + 400 + 500},
		{"adjacent edges, upper", 0, above + 3500},
		{"adjacent edges, lower", 0, above + group + 500},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(9, 10))
			hi := float32(2)
			if c.inside == 0 {
				hi = math.Nextafter32(1, 2)
			}
			tau := make([]float32, 0, n)
			for range above {
				tau = append(tau, 3+r.Float32())
			}
			for range group {
				tau = append(tau, hi, 1)
			}
			for k := range c.inside {
				tau = append(tau, 1+float32(k+1)/float32(c.inside+1))
			}
			for len(tau) < n {
				tau = append(tau, 0.5*r.Float32())
			}
			r.Shuffle(n, func(a, b int) { tau[a], tau[b] = tau[b], tau[a] })
			for e := range tau {
				tau[e] *= []float32{1, -1}[r.IntN(2)]
			}
			set := testSet{base: []testTensor{{name: "w", shape: []int64{n}, dt: kernels.F32, vals: make([]float32, n)}},
				models: [][]testTensor{{{name: "w", shape: []int64{n}, dt: kernels.F32, vals: tau}}}}
			m := newMethod(t, "ties", "mergekit")
			params := uniformParams((float64(c.need)+0.5)/n, ones(1), 1)
			p, sum := runOneTensor(t, r, set, m, params, 1000, func(p *Plan) {
				p.LowsBytes = 8 * 2 * 2000 // 2000 values per worker: the inside, not the edges
			})
			if sum.FellBack != 0 || sum.Crowded != 0 || sum.OnePass != 0 {
				t.Errorf("%d tensors missed, %d overflowed the lists, %d merged in one pass: want the sampled select", sum.FellBack, sum.Crowded, sum.OnePass)
			}
			checkOneTensor(t, p, sum, set, m, params)
			if sum.Kept[0] != uint64(c.need) {
				t.Errorf("kept %d, asked %d", sum.Kept[0], c.need)
			}
		})
	}
}

// TestTensorBandsWidenAfterMiss: each miss doubles the width of the next
// tensors' bands, from 4σ up to 16σ, and is counted.
func TestTensorBandsWidenAfterMiss(t *testing.T) {
	r := &run{tensorSigmas: tensorBandSigmas}
	for k, want := range []float64{8, 16, 16} {
		r.sampleMissed()
		if r.tensorSigmas != want || r.missed != k+1 {
			t.Fatalf("after %d misses: %vσ, %d counted; want %vσ, %d", k+1, r.tensorSigmas, r.missed, want, k+1)
		}
	}
}
