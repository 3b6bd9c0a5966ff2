package inspect

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/synth"
)

// TestGolden checks figures worked out by hand on two 8-element task
// vectors (a zero base, so τ = θ).
func TestGolden(t *testing.T) {
	dir := t.TempDir()
	name := "model.layers.0.mlp.up_proj.weight"
	zero := make([]float32, 8)
	t1 := []float32{0.5, -0.25, 0, 1, -2, 0.125, 0.5, -0.5}
	t2 := []float32{-0.5, -0.25, 0.75, 0, 1, 0.125, -0.25, 0.5}
	base := writeModel(t, filepath.Join(dir, "base"), []testTensor{{name, []int64{2, 4}, kernels.F32, zero}})
	m1 := writeModel(t, filepath.Join(dir, "a"), []testTensor{{name, []int64{2, 4}, kernels.F32, t1}})
	m2 := writeModel(t, filepath.Join(dir, "b"), []testTensor{{name, []int64{2, 4}, kernels.F32, t2}})
	r := run(t, Options{Base: base, Models: []string{m1, m2}, Densities: []float64{0.5, 0.25, 1, 0}})
	if len(r.Tensors) != 1 {
		t.Fatalf("%d tensors", len(r.Tensors))
	}
	f := r.Tensors[0].Figures
	// k = 4: K1 = {4, 3, 0, 6} (ties at 0.5 by lowest index: 0 and 6 of 0, 6, 7),
	// K2 = {4, 2, 0, 7}.
	want := map[string]any{
		"n": 8, "nonzero": []int64{7, 7}, "sign_conflict": 4, "sign_conflict_frac": 0.5,
		"l1": []float64{4.875, 3.375}, "l2": []float64{math.Sqrt(5.828125), math.Sqrt(2.203125)},
		"kept": []int64{4, 4}, "overlap": 2, "topk_conflict": 2, "topk_conflict_frac": 0.25,
		"removed_l1": []float64{0.875, 0.625}, "removed_frac": []float64{0.875 / 4.875, 0.625 / 3.375},
	}
	got, _ := json.Marshal(f)
	var gm map[string]any
	json.Unmarshal(got, &gm)
	for k, v := range want {
		w, _ := json.Marshal(v)
		g, _ := json.Marshal(gm[k])
		if string(w) != string(g) {
			t.Errorf("%s = %s, want %s", k, g, w)
		}
	}
	cos := -2.546875 / (math.Sqrt(5.828125) * math.Sqrt(2.203125))
	if math.Abs(float64(f.Cos[0][1])-cos) > 1e-15 || f.Cos[1][0] != f.Cos[0][1] || f.Cos[0][0] != 1 {
		t.Errorf("cos = %v, want %v off the diagonal", f.Cos, cos)
	}
	if po := f.PairOverlap; po[0][1] != 2 || po[0][0] != 4 {
		t.Errorf("pair_overlap = %v", po)
	}
	// k = 2: K1 = {4, 3}, K2 = {4, 2}.
	if tr := f.Trims[1]; tr.Overlap != 1 || tr.TopkConflict != 1 || tr.Kept[0] != 2 || tr.RemovedL1[0] != 4.875-3 {
		t.Errorf("density 0.25: %+v", tr)
	}
	// density 1: every nonzero; overlap {0, 1, 4, 5, 6, 7}, conflicts {0, 4, 6, 7}.
	if tr := f.Trims[2]; tr.Overlap != 6 || tr.TopkConflict != 4 || tr.Kept[1] != 7 || tr.RemovedL1[0] != 0 {
		t.Errorf("density 1: %+v", tr)
	}
	// density 0: nothing kept, everything removed.
	if tr := f.Trims[3]; tr.Overlap != 0 || tr.Kept[0] != 0 || tr.RemovedL1[1] != 3.375 || tr.RemovedFrac[0] != 1 {
		t.Errorf("density 0: %+v", tr)
	}
	if len(r.Layers) != 1 || r.Layers[0].Layer == nil || *r.Layers[0].Layer != 0 || r.Model.SignConflict != 4 {
		t.Errorf("rows: layers %+v, model %+v", r.Layers, r.Model)
	}
	if r.Tensors[0].Module != "up_proj" || r.Models[0] != "a" {
		t.Errorf("module %q, names %v", r.Tensors[0].Module, r.Models)
	}
}

// handMade writes a base and m models with a few tensors of every dtype:
// layers, tensors outside them, zeros, exact ties (bf16), a task vector
// that is all zero, and sizes that are not a multiple of a block.
func handMade(t testing.TB, dir string, m int, seed uint64) (string, []string) {
	rng := rand.New(rand.NewPCG(seed, 1))
	type spec struct {
		name  string
		shape []int64
		dt    kernels.DType
	}
	specs := []spec{
		{"model.embed_tokens.weight", []int64{97, 40}, kernels.BF16},
		{"model.layers.0.self_attn.q_proj.weight", []int64{40, 40}, kernels.F32},
		{"model.layers.0.mlp.down_proj.weight", []int64{40, 123}, kernels.F16},
		{"model.layers.0.input_layernorm.weight", []int64{40}, kernels.BF16},
		{"model.layers.1.self_attn.q_proj.weight", []int64{40, 40}, kernels.BF16},
		{"model.layers.1.mlp.up_proj.weight", []int64{123, 40}, kernels.BF16},
		{"model.layers.1.mlp.down_proj.weight", []int64{40, 123}, kernels.F32},
		{"model.norm.weight", []int64{40}, kernels.F32},
		{"lm_head.weight", []int64{97, 40}, kernels.BF16},
		{"model.tiny", []int64{3}, kernels.F32},
	}
	var base []testTensor
	models := make([][]testTensor, m)
	for si, s := range specs {
		n := int64(1)
		for _, d := range s.shape {
			n *= d
		}
		b := make([]float32, n)
		for i := range b {
			b[i] = float32(rng.NormFloat64() * 0.02)
		}
		base = append(base, testTensor{s.name, s.shape, s.dt, b})
		for k := range m {
			v := make([]float32, n)
			scale := 0.001 * math.Pow(10, float64((si+k)%3))
			for i := range v {
				switch {
				case si == 3 && k == 0:
					v[i] = b[i] // an all-zero task vector
				case rng.IntN(7) == 0:
					v[i] = b[i] // τ = 0
				case rng.IntN(5) == 0:
					v[i] = b[i] + float32(scale)*float32(1-2*rng.IntN(2)) // ties
				default:
					v[i] = b[i] + float32(rng.NormFloat64()*scale)
				}
			}
			models[k] = append(models[k], testTensor{s.name, s.shape, s.dt, v})
		}
	}
	bp := writeModel(t, filepath.Join(dir, "base"), base)
	var mp []string
	for k := range m {
		mp = append(mp, writeModel(t, filepath.Join(dir, "ft"+string(rune('1'+k))), models[k]))
	}
	return bp, mp
}

// checkReference compares every row of r with the plain reference.
func checkReference(t *testing.T, r *Report, base string, models []string, densities []float64) {
	t.Helper()
	ref := loadTaus(t, base, models)
	if len(ref) != len(r.Tensors) {
		t.Fatalf("%d tensors, reference %d", len(r.Tensors), len(ref))
	}
	m, d := len(models), len(densities)
	model := newRefSums(m, d)
	layers := map[string]*refSums{}
	mods := map[string]*refSums{}
	for i, rt := range ref {
		row := r.Tensors[i]
		if row.Name != rt.name {
			t.Fatalf("tensor %d is %s, reference %s", i, row.Name, rt.name)
		}
		s := newRefSums(m, d)
		s.addTensor(rt.taus, densities)
		s.check(t, rt.name, row.Figures, densities)
		lk := "null"
		if l := LayerOf(rt.name); l >= 0 {
			lk = string(rune('0' + l))
		}
		for _, agg := range []struct {
			rows map[string]*refSums
			key  string
		}{{layers, lk}, {mods, ModuleOf(rt.name)}} {
			if agg.rows[agg.key] == nil {
				agg.rows[agg.key] = newRefSums(m, d)
			}
			agg.rows[agg.key].addTensor(rt.taus, densities)
		}
		model.addTensor(rt.taus, densities)
	}
	model.check(t, "model", r.Model, densities)
	for _, l := range r.Layers {
		k := "null"
		if l.Layer != nil {
			k = string(rune('0' + *l.Layer))
		}
		layers[k].check(t, "layer "+k, l.Figures, densities)
	}
	for _, mr := range r.Modules {
		mods[mr.Module].check(t, "module "+mr.Module, mr.Figures, densities)
	}
	if len(r.Layers) != len(layers) || len(r.Modules) != len(mods) {
		t.Errorf("%d layer rows, %d module rows; reference %d, %d", len(r.Layers), len(r.Modules), len(layers), len(mods))
	}
}

func TestReferenceHandMade(t *testing.T) {
	dir := t.TempDir()
	base, models := handMade(t, dir, 3, 7)
	densities := []float64{0.2, 0.05, 0.5, 1, 0, 0.999}
	r := run(t, Options{Base: base, Models: models, Densities: densities, BlockElems: 1024, Threads: 2})
	checkReference(t, r, base, models, densities)
}

func TestReferenceSynth(t *testing.T) {
	dir := t.TempDir()
	if _, err := synth.Generate(dir, synth.Options{Params: 2_000_000, Models: 3, Seed: 3, DType: "bf16"}); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "base")
	models := []string{filepath.Join(dir, "ft1"), filepath.Join(dir, "ft2"), filepath.Join(dir, "ft3")}
	densities := []float64{0.2, 0.1, 0.5}
	r := run(t, Options{Base: base, Models: models, Densities: densities, Threads: 2})
	checkReference(t, r, base, models, densities)
	if r.Model.SignConflict == 0 || r.Model.TopkConflict == 0 || r.Model.Overlap == 0 {
		t.Errorf("synthetic fine-tunes without conflicts: %+v", r.Model)
	}
}

// TestThreadsAndBlocks: the JSON is byte for byte the same whatever the
// workers, the block size and the kernel set.
func TestThreadsAndBlocks(t *testing.T) {
	dir := t.TempDir()
	if _, err := synth.Generate(dir, synth.Options{Params: 1_000_000, Models: 3, Seed: 5, DType: "bf16", FineTuneDTypes: []string{"bf16", "f32", "f16"}}); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "base")
	models := []string{filepath.Join(dir, "ft1"), filepath.Join(dir, "ft2"), filepath.Join(dir, "ft3")}
	var first []byte
	for _, c := range []struct {
		threads, block int
		kernel         string
	}{{1, 0, ""}, {2, 0, ""}, {2, 1024, ""}, {1, 5000, ""}, {2, 1 << 20, "go"}} {
		o := Options{Base: base, Models: models, Densities: []float64{0.2, 0.1, 0.5}, Threads: c.threads, BlockElems: c.block}
		if c.kernel != "" {
			ks, err := kernels.Lookup(c.kernel)
			if err != nil {
				t.Fatal(err)
			}
			o.Kernels = ks
		}
		var b bytes.Buffer
		if err := run(t, o).WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = b.Bytes()
			continue
		}
		if !bytes.Equal(first, b.Bytes()) {
			t.Errorf("threads %d, block %d, kernel %q: the JSON differs from threads 1's", c.threads, c.block, c.kernel)
		}
	}
}

func TestJSONParses(t *testing.T) {
	dir := t.TempDir()
	base, models := handMade(t, dir, 2, 1)
	var b bytes.Buffer
	if err := run(t, Options{Base: base, Models: models}).WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var v struct {
		Format  string           `json:"format"`
		Version int              `json:"version"`
		Density float64          `json:"density"`
		Models  []string         `json:"models"`
		Tensors []map[string]any `json:"tensors"`
		Layers  []map[string]any `json:"layers"`
		Model   map[string]any   `json:"model"`
	}
	dec := json.NewDecoder(&b)
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	if v.Format != "tiesmm-inspect" || v.Version != 1 || v.Density != 0.2 || len(v.Models) != 2 || len(v.Tensors) != 10 {
		t.Fatalf("header: %+v", v)
	}
	for _, f := range []string{"n", "nonzero", "kept", "overlap", "topk_conflict", "topk_conflict_frac", "sign_conflict",
		"sign_conflict_frac", "l1", "l2", "removed_l1", "removed_frac", "cos"} {
		if _, ok := v.Tensors[0][f]; !ok {
			t.Errorf("tensor rows lack %q", f)
		}
		if _, ok := v.Model[f]; !ok {
			t.Errorf("the model row lacks %q", f)
		}
	}
	if l, ok := v.Layers[len(v.Layers)-1]["layer"]; !ok || l != nil {
		t.Errorf("the last layer row is %v, want null", l)
	}
	// The all-zero task vector: removed_frac null, cos null off the diagonal.
	norm := v.Tensors[3]
	if rf := norm["removed_frac"].([]any); rf[0] != nil {
		t.Errorf("removed_frac of a zero τ = %v, want null", rf[0])
	}
	if c := norm["cos"].([]any)[0].([]any); c[0] != json.Number("1") || c[1] != nil {
		t.Errorf("cos of a zero τ = %v", c)
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	name := "w"
	base := writeModel(t, filepath.Join(dir, "base"), []testTensor{{name, []int64{4}, kernels.F32, []float32{0, 0, 0, 0}}})
	inf := writeModel(t, filepath.Join(dir, "inf"), []testTensor{{name, []int64{4}, kernels.F32, []float32{0, float32(math.Inf(1)), 0, 0}}})
	ok := writeModel(t, filepath.Join(dir, "ok"), []testTensor{{name, []int64{4}, kernels.F32, []float32{1, 0, 0, 0}}})
	shape := writeModel(t, filepath.Join(dir, "shape"), []testTensor{{name, []int64{2, 2}, kernels.F32, []float32{1, 0, 0, 0}}})
	other := writeModel(t, filepath.Join(dir, "other"), []testTensor{{"v", []int64{4}, kernels.F32, []float32{1, 0, 0, 0}}})
	for _, c := range []struct {
		models []string
		want   string
	}{
		{[]string{ok, inf}, "not finite"},
		{[]string{ok, shape}, "shape"},
		{[]string{ok, other}, "has no tensor"},
		{[]string{ok}, "at least two"},
	} {
		_, err := Run(context.Background(), Options{Base: base, Models: c.models})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one saying %q", c.models, err, c.want)
		}
	}
	_, err := Run(context.Background(), Options{Base: base, Models: []string{ok, ok}, MaxMemory: 1 << 20})
	if err == nil || !strings.Contains(err.Error(), "max-memory") {
		t.Errorf("1 MiB: %v", err)
	}
}

func TestAcc(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	vals := []float64{math.MaxFloat64 / 4, -math.MaxFloat64 / 4, 5e-324, -5e-324, 1e-310, 1, -1}
	for range 1000 {
		vals = append(vals, rng.NormFloat64()*math.Pow(2, float64(rng.IntN(200)-100)))
	}
	var a Acc
	for _, v := range vals {
		a.Add(v)
	}
	// Reversed, and split in two accumulators: the same bits.
	var b, c Acc
	for i := len(vals) - 1; i >= 0; i-- {
		if i%2 == 0 {
			b.Add(vals[i])
		} else {
			c.Add(vals[i])
		}
	}
	b.AddAcc(&c)
	if a.Float64() != b.Float64() {
		t.Errorf("order changed the sum: %v, %v", a.Float64(), b.Float64())
	}
	var x Acc
	x.Add(0.1)
	x.Add(0.2)
	x.Add(-0.3)
	// 0.1 + 0.2 − 0.3 exactly, in binary: 2^-56 − ... not 0 but tiny.
	if got, want := x.Float64(), 0.1+0.2-0.3; got == 0 || math.Abs(got) > 1e-16 || got == want {
		t.Errorf("0.1+0.2−0.3 = %v (float64 arithmetic: %v)", got, want)
	}
	var y Acc
	y.Add(1e300)
	y.Add(1)
	y.Add(-1e300)
	if y.Float64() != 1 {
		t.Errorf("1e300 + 1 − 1e300 = %v", y.Float64())
	}
	var z Acc
	for range 3 * normLimit / (1 << 20) {
		z.Add(-math.SmallestNonzeroFloat64)
	}
	if z.Float64() >= 0 {
		t.Errorf("negative sum: %v", z.Float64())
	}
}

func TestNames(t *testing.T) {
	for name, want := range map[string]string{
		"model.layers.3.self_attn.q_proj.weight":              "q_proj",
		"model.layers.3.self_attn.o_proj.weight":              "o_proj",
		"model.layers.3.mlp.gate_proj.weight":                 "gate_proj",
		"model.layers.3.post_attention_layernorm.weight":      "norm",
		"model.embed_tokens.weight":                           "embed",
		"lm_head.weight":                                      "lm_head",
		"transformer.h.0.attn.c_attn.weight":                  "qkv_proj",
		"transformer.h.0.attn.c_proj.weight":                  "o_proj",
		"transformer.h.0.mlp.c_proj.weight":                   "down_proj",
		"transformer.h.0.ln_1.weight":                         "norm",
		"model.layers.0.block_sparse_moe.experts.1.w2.weight": "down_proj",
		"something.else":                                      "other",
	} {
		if got := ModuleOf(name); got != want {
			t.Errorf("ModuleOf(%q) = %q, want %q", name, got, want)
		}
	}
	if LayerOf("model.layers.12.mlp.up_proj.weight") != 12 || LayerOf("lm_head.weight") != -1 {
		t.Error("LayerOf")
	}
}
