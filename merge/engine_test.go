package merge

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// testTensor is one tensor of a test model, values already representable in dt.
type testTensor struct {
	name  string
	shape []int64
	dt    kernels.DType
	vals  []float32
	ints  []int64 // an I64 tensor instead when set
}

func encode(dt kernels.DType, vals []float32) []byte {
	b := make([]byte, len(vals)*dt.Size())
	for i, v := range vals {
		switch dt {
		case kernels.BF16:
			binary.LittleEndian.PutUint16(b[2*i:], kernels.F32ToBF16(v))
		case kernels.F16:
			binary.LittleEndian.PutUint16(b[2*i:], kernels.F32ToF16(v))
		default:
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
	}
	return b
}

func decode(dt kernels.DType, b []byte) []float32 {
	vals := make([]float32, len(b)/dt.Size())
	for i := range vals {
		switch dt {
		case kernels.BF16:
			vals[i] = kernels.BF16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
		case kernels.F16:
			vals[i] = kernels.F16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
		default:
			vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	}
	return vals
}

// roundTo makes v exactly representable in dt.
func roundTo(dt kernels.DType, v float32) float32 { return decode(dt, encode(dt, []float32{v}))[0] }

func writeModel(t testing.TB, dir string, ts []testTensor, shardBytes int64) {
	t.Helper()
	outs := make([]mmapio.OutTensor, len(ts))
	for i, tt := range ts {
		dtype := tt.dt.String()
		if tt.ints != nil {
			dtype = "I64"
		}
		outs[i] = mmapio.OutTensor{Name: tt.name, DType: dtype, Shape: tt.shape}
	}
	layout, err := mmapio.PlanLayout(outs, shardBytes)
	if err != nil {
		t.Fatal(err)
	}
	o, err := mmapio.CreateOutput(dir, false, layout)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range ts {
		var b []byte
		if tt.ints != nil {
			b = make([]byte, 8*len(tt.ints))
			for i, v := range tt.ints {
				binary.LittleEndian.PutUint64(b[8*i:], uint64(v))
			}
		} else {
			b = encode(tt.dt, tt.vals)
		}
		if err := o.WriteTensor(tt.name, 0, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.WriteFile("config.json", []byte(`{"architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16"}`)); err != nil {
		t.Fatal(err)
	}
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
}

// readModel returns every tensor's bytes.
func readModel(t testing.TB, path string) (*mmapio.Model, map[string][]byte) {
	t.Helper()
	m, err := mmapio.OpenModel(path)
	if err != nil {
		t.Fatal(err)
	}
	data := map[string][]byte{}
	for name, tt := range m.Tensors {
		f, err := os.Open(tt.File)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, tt.Size)
		if _, err := f.ReadAt(b, tt.Offset); err != nil {
			t.Fatal(err)
		}
		f.Close()
		data[name] = b
	}
	return m, data
}

// testSet is a base and fine-tunes with task vectors that look like real
// ones where it matters here: sparse large changes, shared signs, conflicts,
// exact ties, exact opposites (zero sums) and the odd special value.
type testSet struct {
	base   []testTensor
	models [][]testTensor
}

func randomSet(r *rand.Rand, nModels int, special bool) testSet {
	shapes := [][]int64{{37, 16}, {16}, {5, 7, 3}, {300}, {10}, {64, 33}}
	names := []string{"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
		"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
		"model.layers.1.scale", "lm_head.weight"}
	dts := []kernels.DType{kernels.F32, kernels.F16, kernels.BF16}
	var s testSet
	for ti, shape := range shapes {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		dt := dts[r.IntN(3)]
		scale := float32(math.Pow(10, float64(r.IntN(3)-2)))
		bv := make([]float32, n)
		for i := range bv {
			bv[i] = roundTo(dt, float32(r.NormFloat64())*scale)
		}
		s.base = append(s.base, testTensor{name: names[ti], shape: shape, dt: dt, vals: bv})
	}
	s.base = append(s.base, testTensor{name: "model.rotary.steps", shape: []int64{3}, ints: []int64{1, -2, 1 << 40}})
	shared := make([][]float32, len(s.base))
	for ti, bt := range s.base {
		shared[ti] = make([]float32, len(bt.vals))
		for i := range shared[ti] {
			shared[ti][i] = float32(r.NormFloat64()) * 0.01
		}
	}
	for mi := 0; mi < nModels; mi++ {
		var ts []testTensor
		for ti, bt := range s.base {
			if bt.ints != nil {
				ts = append(ts, testTensor{name: bt.name, shape: bt.shape, ints: []int64{9, 9, 9}})
				continue
			}
			dt := dts[r.IntN(3)]
			vals := make([]float32, len(bt.vals))
			for i, b := range bt.vals {
				tau := shared[ti][i] + float32(r.NormFloat64())*0.003
				switch r.IntN(20) {
				case 0:
					tau *= 30 // sparse large changes
				case 1:
					tau = 0
				case 2: // the opposite of model 0's change: zero sums
					if mi > 0 {
						tau = -(s.models[0][ti].vals[i] - b)
					}
				case 3: // a value shared by all models: exact ties
					tau = 0.0078125
				}
				v := b + tau
				if special && r.IntN(500) == 0 {
					v = []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 0x1p-140, -0x1p-140}[r.IntN(5)]
				}
				vals[i] = roundTo(dt, v)
			}
			ts = append(ts, testTensor{name: bt.name, shape: bt.shape, dt: dt, vals: vals})
		}
		s.models = append(s.models, ts)
	}
	return s
}

func (s testSet) write(t testing.TB, dir string, r *rand.Rand) (base string, models []string) {
	caps := []int64{0, 600, 5000}
	base = filepath.Join(dir, "base")
	writeModel(t, base, s.base, caps[r.IntN(3)])
	for i, m := range s.models {
		p := filepath.Join(dir, fmt.Sprintf("ft%d", i+1))
		writeModel(t, p, m, caps[r.IntN(3)])
		models = append(models, p)
	}
	return base, models
}

// expected runs the reference over the set.
func (s testSet) expected(m Method, params func(name string) TensorParams, outDT *kernels.DType) (map[string][]float32, []uint64) {
	var rts []refTensor
	var names []string
	var dts []kernels.DType
	for ti, bt := range s.base {
		if bt.ints != nil {
			continue
		}
		rt := refTensor{name: bt.name, shape: bt.shape, base: bt.vals, params: params(bt.name), outDT: bt.dt}
		if outDT != nil {
			rt.outDT = *outDT
		}
		for _, mt := range s.models {
			rt.models = append(rt.models, mt[ti].vals)
		}
		rts = append(rts, rt)
		names = append(names, bt.name)
		dts = append(dts, rt.outDT)
	}
	out, kept := refMerge(m, rts)
	res := map[string][]float32{}
	for i, name := range names {
		vals := make([]float32, len(out[i]))
		for e := range vals {
			base := rts[i].base[e]
			if m.NoBase {
				base = 0
			}
			vals[e] = refFinish(base, out[i][e], rts[i].params.Lambda, dts[i])
		}
		res[name] = vals
	}
	return res, kept
}

type methodCase struct {
	name   string
	method func() Method
	params func(r *rand.Rand, n int) func(string) TensorParams
}

func uniformParams(density float64, weights []float32, lambda float32) func(string) TensorParams {
	return func(string) TensorParams {
		d := make([]float64, len(weights))
		for i := range d {
			d[i] = density
		}
		g, eps := make([]float64, len(weights)), make([]float64, len(weights))
		for i := range g {
			g[i], eps[i] = 0.05, min(0.1, density/2, (1-density)/2)
		}
		return TensorParams{Density: d, Weights: weights, Gamma: g, Epsilon: eps, Lambda: lambda}
	}
}

func method(name, preset string, edit func(*Method)) func() Method {
	return func() Method {
		m, _, err := NewMethod(name, preset)
		if err != nil {
			panic(err)
		}
		m.Seed = 42
		if edit != nil {
			edit(&m)
		}
		return m
	}
}

func preset(name string, edit func(*Method)) func() Method { return method("ties", name, edit) }

func randWeights(r *rand.Rand, n int) []float32 {
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(r.IntN(8)+1) / 4
	}
	return w
}

var methodCases = []methodCase{
	{"paper", preset("paper", nil), func(r *rand.Rand, n int) func(string) TensorParams {
		return uniformParams([]float64{0.2, 0.5, 0.9}[r.IntN(3)], ones(n), float32(r.IntN(4)+1)/2)
	}},
	{"paper-count-max", preset("paper", func(m *Method) {
		m.Vote.Consensus, m.Vote.Aggregate = kernels.ConsensusCount, kernels.AggregateMax
	}), func(r *rand.Rand, n int) func(string) TensorParams { return uniformParams(0.3, ones(n), 1) }},
	{"paper-per-tensor-sum", preset("paper", func(m *Method) {
		m.Scope, m.Vote.Aggregate = ScopeTensor, kernels.AggregateSum
	}), func(r *rand.Rand, n int) func(string) TensorParams { return uniformParams(0.25, ones(n), 0.7) }},
	{"paper-per-tensor", preset("paper", func(m *Method) { m.Scope = ScopeTensor }),
		func(r *rand.Rand, n int) func(string) TensorParams { return uniformParams(0.5, ones(n), 1) }},
	{"mergekit", preset("mergekit", nil), func(r *rand.Rand, n int) func(string) TensorParams {
		w := randWeights(r, n)
		return func(name string) TensorParams {
			d := make([]float64, n)
			for i := range d {
				d[i] = []float64{0.1, 0.3, 0.5, 1}[(len(name)+i)%4] // varies by tensor and model
			}
			return TensorParams{Density: d, Weights: w, Gamma: d, Epsilon: d, Lambda: 1}
		}
	}},
	{"mergekit-model-scope", preset("mergekit", func(m *Method) { m.Scope = ScopeModel }),
		func(r *rand.Rand, n int) func(string) TensorParams { return uniformParams(0.4, randWeights(r, n), 1) }},
	{"mergekit-unnormalized", preset("mergekit", func(m *Method) { m.SetNormalize(false) }),
		func(r *rand.Rand, n int) func(string) TensorParams { return uniformParams(0.6, randWeights(r, n), 0.5) }},
	{"peft", preset("peft", nil), func(r *rand.Rand, n int) func(string) TensorParams {
		return uniformParams(0.35, randWeights(r, n), 1)
	}},
	{"peft-count", preset("peft", func(m *Method) { m.Vote.Consensus = kernels.ConsensusCount }),
		func(r *rand.Rand, n int) func(string) TensorParams { return uniformParams(0.35, randWeights(r, n), 1) }},
	{"dare_ties", method("dare_ties", "mergekit", nil), func(r *rand.Rand, n int) func(string) TensorParams {
		return uniformParams(0.3, randWeights(r, n), 1)
	}},
	{"dare_ties-inverse-normalized", method("dare_ties", "mergekit", func(m *Method) { m.Rescale = RescaleInverse; m.SetNormalize(true) }),
		func(r *rand.Rand, n int) func(string) TensorParams { return uniformParams(0.5, randWeights(r, n), 1) }},
	{"dare_linear", method("dare_linear", "", nil), func(r *rand.Rand, n int) func(string) TensorParams {
		return uniformParams(0.4, randWeights(r, n), 0.9)
	}},
	{"breadcrumbs", method("breadcrumbs", "", nil), func(r *rand.Rand, n int) func(string) TensorParams {
		return uniformParams(0.5, randWeights(r, n), 1)
	}},
	{"breadcrumbs_ties-l1", method("breadcrumbs_ties", "mergekit", func(m *Method) { m.Rescale = RescaleL1 }),
		func(r *rand.Rand, n int) func(string) TensorParams { return uniformParams(0.3, randWeights(r, n), 1) }},
	{"della", method("della", "mergekit", nil), func(r *rand.Rand, n int) func(string) TensorParams {
		return uniformParams(0.4, randWeights(r, n), 1)
	}},
	{"della_linear-inverse", method("della_linear", "", func(m *Method) { m.Rescale = RescaleInverse }),
		func(r *rand.Rand, n int) func(string) TensorParams { return uniformParams(0.6, randWeights(r, n), 1.5) }},
	{"linear", method("linear", "", nil), func(r *rand.Rand, n int) func(string) TensorParams {
		return uniformParams(1, randWeights(r, n), 1)
	}},
	{"model_stock", method("model_stock", "", nil), func(r *rand.Rand, n int) func(string) TensorParams {
		return uniformParams(1, ones(n), 1)
	}},
	{"task_arithmetic", func() Method { m, _, _ := NewMethod("task_arithmetic", ""); return m },
		func(r *rand.Rand, n int) func(string) TensorParams { return uniformParams(1, randWeights(r, n), 1) }},
	{"task_arithmetic-normalized", func() Method {
		m, _, _ := NewMethod("task_arithmetic", "")
		m.SetNormalize(true)
		return m
	}, func(r *rand.Rand, n int) func(string) TensorParams { return uniformParams(1, randWeights(r, n), 0.8) }},
}

func ones(n int) []float32 {
	w := make([]float32, n)
	for i := range w {
		w[i] = 1
	}
	return w
}

// TestMatchesReference runs every method on random sets, with random
// thread counts, block sizes and shard layouts, under every kernel set this
// CPU has, and holds the output to the in-memory reference bit for bit.
func TestMatchesReference(t *testing.T) {
	for _, ks := range kernels.Available() {
		t.Run(ks.Name, func(t *testing.T) { matchesReference(t, ks) })
	}
}

func matchesReference(t *testing.T, ks *kernels.Set) {
	for ci, mc := range methodCases {
		t.Run(mc.name, func(t *testing.T) {
			for trial := 0; trial < 3; trial++ {
				r := rand.New(rand.NewPCG(uint64(ci), uint64(trial)))
				n := 1 + r.IntN(4)
				if mc.name == "model_stock" {
					n = 2 + r.IntN(3)
				}
				set := randomSet(r, n, trial == 2)
				dir := t.TempDir()
				base, models := set.write(t, dir, r)
				m := mc.method()
				params := mc.params(r, n)
				var outDT *kernels.DType
				opts := Options{
					Base: base, Models: models, Out: filepath.Join(dir, "out"),
					Threads: 1 + r.IntN(3), BlockElems: []int{1, 7, 64, 1000, 65536}[r.IntN(5)],
					Kernels: ks, ShardBytes: []int64{0, 1000, 1 << 30}[r.IntN(3)],
				}
				if r.IntN(2) == 0 {
					dt := []kernels.DType{kernels.F32, kernels.F16, kernels.BF16}[r.IntN(3)]
					outDT, opts.OutDType = &dt, dt.String()
				}
				p, err := NewPlan(opts, m, func(name string, _, _ int) (TensorParams, error) { return params(name), nil })
				if err != nil {
					t.Fatal(err)
				}
				if r.IntN(2) == 0 { // sample every tensor, in short runs
					p.tuning.tensorSampled, p.tuning.tensorSampleMin = 1, 1+int64(r.IntN(50))
					p.tuning.sampleEvery, p.tuning.sampleChunk = 2+r.IntN(4), 1+int64(r.IntN(64))
					p.tuning.tensorSampleEvery = 2 + r.IntN(4)
				}
				if r.IntN(4) == 0 { // lists of a few values: the samples' selects and the tie lists overflow
					p.LowsBytes = 64
				}
				if r.IntN(2) == 0 { // every tensor split across the workers, none solo
					p.tuning.soloBytes = 0
				}
				if r.IntN(3) == 0 { // the samples' low histograms by passes, not from the lists
					p.tuning.sideEntries = r.IntN(3)
				}
				sum, err := Run(context.Background(), p, nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				want, kept := set.expected(m, params, outDT)
				out, data := readModel(t, opts.Out)
				for name, w := range want {
					tt := out.Tensors[name]
					dt, _ := floatDType(tt.DType)
					got := decode(dt, data[name])
					for e := range w {
						if !sameFloat(got[e], w[e]) {
							t.Fatalf("trial %d (%d models, %d threads, block %d, kernels %s): %s[%d] = %v (%#x), want %v (%#x)",
								trial, n, opts.Threads, opts.BlockElems, opts.Kernels.Name, name, e, got[e], math.Float32bits(got[e]), w[e], math.Float32bits(w[e]))
						}
					}
				}
				if ints := data["model.rotary.steps"]; binary.LittleEndian.Uint64(ints[16:]) != 1<<40 {
					t.Fatalf("integer tensor not copied from the base: % x", ints)
				}
				if m.Sparsifies() {
					for i := range kept {
						if sum.Kept[i] != kept[i] {
							t.Fatalf("model %d kept %d, reference %d", i+1, sum.Kept[i], kept[i])
						}
					}
				}
			}
		})
	}
}
