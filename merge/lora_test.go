package merge

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// loraModule is one adapted linear layer of a test: W [out, in] (stored
// [in, out] with fan_in_fan_out), A [r, in], B [out, r].
type loraModule struct {
	name          string // module, e.g. model.layers.0.self_attn.q_proj
	out, in, rank int
	w, a, b       []float32
	wdt, adt      kernels.DType
}

// loraSet is a base with three adapted layers and two that are not, and
// the adapter's config.
type loraSet struct {
	mods   []loraModule
	others []testTensor
	alpha  float64
	r      int
	rsLoRA bool
	fifo   bool
	// rank and alpha of the k_proj module through rank_pattern and
	// alpha_pattern (0: none).
	kRank  int
	kAlpha float64
}

func randomVals(r *rand.Rand, n int, dt kernels.DType, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = roundTo(dt, float32(r.NormFloat64()*scale))
	}
	return v
}

func newLoraSet(r *rand.Rand, rsLoRA, fifo bool) loraSet {
	dts := []kernels.DType{kernels.F32, kernels.F16, kernels.BF16}
	s := loraSet{alpha: float64(1 + r.IntN(32)), r: 1 + r.IntN(9), rsLoRA: rsLoRA, fifo: fifo}
	if r.IntN(2) == 0 {
		s.kRank, s.kAlpha = 1+r.IntN(5), 3
	}
	shapes := []struct {
		name    string
		out, in int
	}{{"model.layers.0.self_attn.q_proj", 24, 40}, {"model.layers.0.self_attn.k_proj", 8, 40}, {"model.layers.1.mlp.down_proj", 40, 67}}
	wdt, adt := dts[r.IntN(3)], dts[r.IntN(3)]
	for _, sh := range shapes {
		rank := s.r
		if strings.HasSuffix(sh.name, "k_proj") && s.kRank > 0 {
			rank = s.kRank
		}
		s.mods = append(s.mods, loraModule{name: sh.name, out: sh.out, in: sh.in, rank: rank, wdt: wdt, adt: adt,
			w: randomVals(r, sh.out*sh.in, wdt, 0.05), a: randomVals(r, rank*sh.in, adt, 0.2), b: randomVals(r, sh.out*rank, adt, 0.01)})
	}
	s.others = []testTensor{
		{name: "model.layers.0.input_layernorm.weight", shape: []int64{40}, dt: wdt, vals: randomVals(r, 40, wdt, 1)},
		{name: "model.rotary.steps", shape: []int64{3}, ints: []int64{1, -2, 1 << 40}},
	}
	return s
}

// scale is PEFT's scaling of module m, rounded to float32.
func (s loraSet) scale(m loraModule) float32 {
	alpha := s.alpha
	if strings.HasSuffix(m.name, "k_proj") && s.kAlpha > 0 {
		alpha = s.kAlpha
	}
	if s.rsLoRA {
		return float32(alpha / math.Sqrt(float64(m.rank)))
	}
	return float32(alpha / float64(m.rank))
}

// storedShape is W's shape as the base holds it.
func (s loraSet) storedShape(m loraModule) []int64 {
	if s.fifo {
		return []int64{int64(m.in), int64(m.out)}
	}
	return []int64{int64(m.out), int64(m.in)}
}

// adapted is W + s·(B·A) as stored, by plain loops: the sum over the rank
// in order from the first product, each step rounded to float32.
func (s loraSet) adapted(m loraModule) []float32 {
	sc := s.scale(m)
	res := make([]float32, len(m.w))
	for o := range m.out {
		for i := range m.in {
			var acc float32
			for k := range m.rank {
				p := float32(m.b[o*m.rank+k] * m.a[k*m.in+i])
				if k == 0 {
					acc = p
				} else {
					acc = acc + p
				}
			}
			e := o*m.in + i
			if s.fifo {
				e = i*m.out + o
			}
			res[e] = m.w[e] + float32(sc*acc)
		}
	}
	return res
}

// write writes the base and the adapter; with ref, also a model holding
// the adapted tensors as float32.
func (s loraSet) write(t testing.TB, dir string) (base, adapter, ref string) {
	var bts, rts, ats []testTensor
	for _, m := range s.mods {
		sh := s.storedShape(m)
		bts = append(bts, testTensor{name: m.name + ".weight", shape: sh, dt: m.wdt, vals: m.w})
		rts = append(rts, testTensor{name: m.name + ".weight", shape: sh, dt: kernels.F32, vals: s.adapted(m)})
		ats = append(ats,
			testTensor{name: "base_model.model." + m.name + ".lora_A.weight", shape: []int64{int64(m.rank), int64(m.in)}, dt: m.adt, vals: m.a},
			testTensor{name: "base_model.model." + m.name + ".lora_B.weight", shape: []int64{int64(m.out), int64(m.rank)}, dt: m.adt, vals: m.b})
	}
	base, ref, adapter = filepath.Join(dir, "base"), filepath.Join(dir, "ref"), filepath.Join(dir, "adapter")
	writeModel(t, base, append(bts, s.others...), 0)
	writeModel(t, ref, append(rts, s.others...), 0)
	pattern := ""
	if s.kRank > 0 {
		pattern = fmt.Sprintf(`, "rank_pattern": {"nothing": 99, "k_proj": %d}, "alpha_pattern": {"layers.0.self_attn.k_proj": %g}`, s.kRank, s.kAlpha)
	}
	cfg := fmt.Sprintf(`{"peft_type": "LORA", "r": %d, "lora_alpha": %g, "use_rslora": %v, "fan_in_fan_out": %v,
		"target_modules": ["q_proj", "k_proj", "down_proj"], "bias": "none", "modules_to_save": null%s}`, s.r, s.alpha, s.rsLoRA, s.fifo, pattern)
	writeAdapter(t, adapter, cfg, ats)
	return base, adapter, ref
}

// writeAdapter writes a PEFT adapter folder.
func writeAdapter(t testing.TB, dir, cfg string, ts []testTensor) {
	t.Helper()
	writeModel(t, dir, ts, 0)
	if err := os.Rename(filepath.Join(dir, "model.safetensors"), filepath.Join(dir, "adapter_model.safetensors")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "config.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "adapter_config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A linear merge of BASE+ADAPTER alone, with weight 1 and a float32
// output, writes W + s·(B·A) as the reference computes it, bit for bit:
// plain LoRA, rsLoRA, rank_pattern and alpha_pattern, fan_in_fan_out, on
// every kernel set, one to three workers and several block sizes.
func TestLoraMatchesReference(t *testing.T) {
	m := newMethod(t, "linear", "")
	for _, ks := range kernels.Available() {
		t.Run(ks.Name, func(t *testing.T) {
			for trial := range 6 {
				r := rand.New(rand.NewPCG(21, uint64(trial)))
				s := newLoraSet(r, trial%3 == 1, trial%3 == 2)
				dir := t.TempDir()
				base, adapter, _ := s.write(t, dir)
				opts := Options{Base: base, Models: []string{base + "+" + adapter}, Out: filepath.Join(dir, "out"), Kernels: ks,
					Threads: 1 + trial%3, BlockElems: []int{1, 7, 64, 1000, 0}[r.IntN(5)], OutDType: "F32"}
				params := uniformParams(1, ones(1), 1)
				p, err := NewPlan(opts, m, func(name string, _, _ int) (TensorParams, error) { return params(name), nil })
				if err != nil {
					t.Fatal(err)
				}
				if _, err := Run(context.Background(), p, nil, nil); err != nil {
					t.Fatal(err)
				}
				_, data := readModel(t, opts.Out)
				for _, md := range s.mods {
					got, want := decode(kernels.F32, data[md.name+".weight"]), s.adapted(md)
					for e := range want {
						if !sameFloat(got[e], want[e]) {
							t.Fatalf("trial %d (threads %d, block %d, r %d, rslora %v, fifo %v): %s[%d] = %v, want %v",
								trial, opts.Threads, opts.BlockElems, md.rank, s.rsLoRA, s.fifo, md.name, e, got[e], want[e])
						}
					}
				}
			}
		})
	}
}

// Every method merges BASE+ADAPTER as it merges a model holding W + s·B·A
// as float32: the same bytes, whatever the workers, blocks and kernels.
func TestLoraMergesAsItsModel(t *testing.T) {
	for _, name := range []string{"ties", "ties-paper", "task_arithmetic", "dare_ties", "della", "breadcrumbs", "linear", "slerp", "karcher", "multislerp", "sce", "nearswap", "arcee_fusion", "pcb", "model_stock", "nuslerp"} {
		t.Run(name, func(t *testing.T) {
			method, preset, _ := strings.Cut(name, "-")
			if strings.HasSuffix(name, "ties") || name == "della" {
				preset = "mergekit"
			}
			m := newMethod(t, method, preset)
			ks := kernels.Available()
			for trial := range 3 {
				r := rand.New(rand.NewPCG(uint64(len(name)), uint64(trial)))
				s := newLoraSet(r, trial == 1, trial == 2)
				dir := t.TempDir()
				base, adapter, ref := s.write(t, dir)
				weights := []float32{0.7}
				if name == "pcb" || name == "model_stock" || name == "nuslerp" { // two fine-tunes: the float32 model joins
					weights = append(weights, 0.4)
				}
				params := uniformParams(0.5, weights, 1)
				resolve := func(name string, _, _ int) (TensorParams, error) {
					tp := params(name)
					tp.T = 0.3
					return tp, nil
				}
				var outs [][]byte
				for i, model := range []string{base + "+" + adapter, ref} {
					models := []string{model, ref}[:len(weights)]
					opts := Options{Base: base, Models: models, Out: filepath.Join(dir, fmt.Sprint("out", i)),
						Kernels: ks[r.IntN(len(ks))], Threads: 1 + r.IntN(3), BlockElems: []int{7, 64, 1000, 0}[r.IntN(4)]}
					p, err := NewPlan(opts, m, resolve)
					if err != nil {
						t.Fatal(err)
					}
					if trial > 0 { // sample every tensor, in short runs
						p.tuning.tensorSampled, p.tuning.tensorSampleMin = 1, int64(1+trial)
						p.tuning.sampleEvery, p.tuning.sampleChunk, p.tuning.tensorSampleEvery = 2+trial, int64(50*trial), 2+trial
					}
					if _, err := Run(context.Background(), p, nil, nil); err != nil {
						t.Fatal(err)
					}
					_, data := readModel(t, opts.Out)
					var all []byte
					for _, md := range s.mods {
						all = append(all, data[md.name+".weight"]...)
					}
					outs = append(outs, all)
				}
				if !bytes.Equal(outs[0], outs[1]) {
					t.Fatalf("trial %d: BASE+ADAPTER and its float32 model merge differently", trial)
				}
			}
		})
	}
}

// Adapters that do not fit are refused before any work, naming the file,
// the tensor and the problem.
func TestLoraErrors(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	s := newLoraSet(r, false, false)
	s.kRank = 0
	for i := range s.mods {
		s.mods[i].rank = s.r
		s.mods[i].a = randomVals(r, s.r*s.mods[i].in, kernels.F32, 1)
		s.mods[i].b = randomVals(r, s.mods[i].out*s.r, kernels.F32, 1)
	}
	okCfg := fmt.Sprintf(`{"r": %d, "lora_alpha": 8, "target_modules": ["q_proj", "k_proj", "down_proj"]}`, s.r)
	q := s.mods[0]
	A := func(rank, in int) testTensor {
		return testTensor{name: "base_model.model." + q.name + ".lora_A.weight", shape: []int64{int64(rank), int64(in)}, dt: kernels.F32, vals: make([]float32, rank*in)}
	}
	B := func(out, rank int) testTensor {
		return testTensor{name: "base_model.model." + q.name + ".lora_B.weight", shape: []int64{int64(out), int64(rank)}, dt: kernels.F32, vals: make([]float32, out*rank)}
	}
	cases := []struct {
		name string
		cfg  string // "" : no adapter_config.json
		ts   []testTensor
		want []string
	}{
		{"no config", "", []testTensor{A(s.r, q.in), B(q.out, s.r)}, []string{"adapter_config.json", "not a PEFT adapter folder"}},
		{"A without B", okCfg, []testTensor{A(s.r, q.in)}, []string{"adapter_model.safetensors", q.name + ".lora_A.weight has no lora_B"}},
		{"ranks differ", okCfg, []testTensor{A(s.r, q.in), B(q.out, s.r+1)}, []string{"adapter_model.safetensors", "rank mismatch"}},
		{"rank not r", fmt.Sprintf(`{"r": %d, "lora_alpha": 8}`, s.r+1), []testTensor{A(s.r, q.in), B(q.out, s.r)}, []string{"rank mismatch", fmt.Sprintf("gives r = %d", s.r+1)}},
		{"shape", okCfg, []testTensor{A(s.r, q.in+1), B(q.out, s.r)}, []string{"adapter_model.safetensors", `tensor "` + q.name + `.weight"`, fmt.Sprintf("gives [%d %d]", q.out, q.in+1), fmt.Sprintf("has [%d %d]", q.out, q.in)}},
		{"not in base", okCfg, []testTensor{
			{name: "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight", shape: []int64{1, 4}, dt: kernels.F32, vals: make([]float32, 4)},
			{name: "base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight", shape: []int64{4, 1}, dt: kernels.F32, vals: make([]float32, 4)}},
			[]string{"model.layers.7.self_attn.q_proj.weight", "does not have"}},
		{"not targeted", `{"r": 1, "lora_alpha": 8, "target_modules": ["v_proj"]}`, []testTensor{A(1, q.in), B(q.out, 1)}, []string{"not among target_modules"}},
		{"dora", `{"r": 1, "lora_alpha": 8, "use_dora": true}`, []testTensor{A(1, q.in), B(q.out, 1)}, []string{"adapter_config.json", "use_dora"}},
		{"modules_to_save", `{"r": 1, "lora_alpha": 8, "modules_to_save": ["lm_head"]}`, []testTensor{A(1, q.in), B(q.out, 1)}, []string{"adapter_config.json", "modules_to_save"}},
		{"bias", `{"r": 1, "lora_alpha": 8, "bias": "all"}`, []testTensor{A(1, q.in), B(q.out, 1)}, []string{"adapter_config.json", `bias "all"`}},
		{"embedding", okCfg, []testTensor{{name: "base_model.model.model.embed_tokens.lora_embedding_A", shape: []int64{1, 4}, dt: kernels.F32, vals: make([]float32, 4)}}, []string{"embedding layers are not supported"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			base, _, _ := s.write(t, dir)
			bad := filepath.Join(dir, "bad")
			writeAdapter(t, bad, c.cfg, c.ts)
			if c.cfg == "" {
				os.Remove(filepath.Join(bad, "adapter_config.json"))
			}
			opts := Options{Base: base, Models: []string{base + "+" + bad}, Out: filepath.Join(dir, "out")}
			_, err := NewPlan(opts, newMethod(t, "task_arithmetic", ""), func(string, int, int) (TensorParams, error) {
				return uniformParams(1, ones(1), 1)(""), nil
			})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if _, serr := os.Stat(opts.Out); !os.IsNotExist(serr) {
				t.Errorf("output written: %v", serr)
			}
		})
	}
}

// A plain adapter folder adapts the merge's base.
func TestLoraPlainAdapter(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	s := newLoraSet(r, false, false)
	dir := t.TempDir()
	base, adapter, _ := s.write(t, dir)
	var outs [][]byte
	for i, model := range []string{adapter, base + "+" + adapter} {
		opts := Options{Base: base, Models: []string{model}, Out: filepath.Join(dir, fmt.Sprint("out", i))}
		p, err := NewPlan(opts, newMethod(t, "task_arithmetic", ""), func(string, int, int) (TensorParams, error) {
			return uniformParams(1, []float32{0.5}, 1)(""), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Adapters) != 1 || p.Adapters[0].Tensors != len(s.mods) {
			t.Fatalf("adapters %+v, want one adapting %d tensors", p.Adapters, len(s.mods))
		}
		if _, err := Run(context.Background(), p, nil, nil); err != nil {
			t.Fatal(err)
		}
		_, data := readModel(t, opts.Out)
		outs = append(outs, data[s.mods[0].name+".weight"])
	}
	if !bytes.Equal(outs[0], outs[1]) {
		t.Fatal("a plain adapter folder and BASE+ADAPTER merge differently")
	}
	// Without a merge base (linear), the folder its config names.
	cfg := filepath.Join(adapter, "adapter_config.json")
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	raw = bytes.Replace(raw, []byte(`{`), []byte(fmt.Sprintf(`{"base_model_name_or_path": %q, `, base)), 1)
	if err := os.WriteFile(cfg, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	opts := Options{Base: adapter, Models: []string{adapter}, Out: filepath.Join(dir, "linear")}
	p, err := NewPlan(opts, newMethod(t, "linear", ""), func(string, int, int) (TensorParams, error) {
		return uniformParams(1, ones(1), 1)(""), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.Base.Path != base || p.Models[0].Path != base || len(p.Adapters) != 2 {
		t.Errorf("base %s, model %s, %d adapters; want %s adapted twice", p.Base.Path, p.Models[0].Path, len(p.Adapters), base)
	}
}

// The memory bound counts the workers' materialisation scratch and the
// factors' mapped pages: a merge of BASE+ADAPTER is bounded above the same
// merge of its float32 model by at least that much.
func TestLoraMemoryBound(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	s := newLoraSet(r, false, true)
	dir := t.TempDir()
	base, adapter, ref := s.write(t, dir)
	var plans []*Plan
	for _, model := range []string{base + "+" + adapter, ref} {
		opts := Options{Base: base, Models: []string{model}, Out: filepath.Join(dir, "out"), Threads: 2, BlockElems: 1000}
		p, err := NewPlan(opts, newMethod(t, "task_arithmetic", ""), func(string, int, int) (TensorParams, error) {
			return uniformParams(1, ones(1), 1)(""), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		plans = append(plans, p)
	}
	// One block of W' (1000 floats), the widest module's factor rows and
	// columns (down_proj, stored [67, 40]: 2·r·(40 + 1000/40 + 2) floats)
	// and a tile, per worker; the largest module's A and B per worker. The
	// files' size, which caps the mapped pages counted, is left out: the
	// float32 model's is larger.
	rank := int64(s.r)
	scratch := 4 * (1000 + 2*rank*(40+1000/40+2) + tileCols)
	factors := int64(s.mods[0].adt.Size()) * rank * (67 + 40)
	var need [2]int64
	for i, p := range plans {
		p.fileBytes = 0
		need[i], _ = p.need(2, 1000, 0)
	}
	if got, want := need[0]-need[1], 2*(scratch+factors); got < want {
		t.Errorf("the adapter adds %d bytes to the bound, want at least %d", got, want)
	}
}

// An adapted output head whose rows the merge realigns (cut to another
// model's narrower head) is refused before any work.
func TestLoraRealignedRows(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	dir := t.TempDir()
	head := func(rows, cols int) testTensor {
		return testTensor{name: "lm_head.weight", shape: []int64{int64(rows), int64(cols)}, dt: kernels.F32, vals: randomVals(r, rows*cols, kernels.F32, 1)}
	}
	base, ft := filepath.Join(dir, "base"), filepath.Join(dir, "ft")
	writeModel(t, base, []testTensor{head(10, 8)}, 0)
	writeModel(t, ft, []testTensor{head(12, 6)}, 0)
	adapter := filepath.Join(dir, "adapter")
	writeAdapter(t, adapter, `{"r": 2, "lora_alpha": 4, "target_modules": ["lm_head"]}`, []testTensor{
		{name: "base_model.model.lm_head.lora_A.weight", shape: []int64{2, 8}, dt: kernels.F32, vals: randomVals(r, 16, kernels.F32, 1)},
		{name: "base_model.model.lm_head.lora_B.weight", shape: []int64{10, 2}, dt: kernels.F32, vals: randomVals(r, 20, kernels.F32, 1)},
	})
	opts := Options{Base: base, Models: []string{base + "+" + adapter, ft}, Out: filepath.Join(dir, "out")}
	_, err := NewPlan(opts, newMethod(t, "task_arithmetic", ""), func(string, int, int) (TensorParams, error) {
		return uniformParams(1, ones(2), 1)(""), nil
	})
	if err == nil || !strings.Contains(err.Error(), `tensor "lm_head.weight": adapted by this LoRA adapter, but its rows are realigned`) {
		t.Fatalf("error %v, want the realigned rows refused", err)
	}
}
