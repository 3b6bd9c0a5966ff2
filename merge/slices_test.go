package merge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/kernels"
)

// llamaLike is a small model of layers layers in dtype dt: embeddings, per
// layer an attention, an MLP and a norm tensor, the final norm, and an
// output head unless tied. Its config.json lists a value per layer.
func llamaLike(t *testing.T, dir string, r *rand.Rand, layers int, dt kernels.DType, tied bool) map[string][]float32 {
	t.Helper()
	vals := func(n int) []float32 {
		v := make([]float32, n)
		for e := range v {
			v[e] = roundTo(dt, float32(r.NormFloat64()))
		}
		return v
	}
	var ts []testTensor
	add := func(name string, shape ...int64) {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		ts = append(ts, testTensor{name: name, shape: shape, dt: dt, vals: vals(int(n))})
	}
	add("model.embed_tokens.weight", 6, 4)
	for l := range layers {
		add(fmt.Sprintf("model.layers.%d.self_attn.q_proj.weight", l), 4, 4)
		add(fmt.Sprintf("model.layers.%d.mlp.up_proj.weight", l), 300, 4)
		add(fmt.Sprintf("model.layers.%d.input_layernorm.weight", l), 4)
	}
	add("model.norm.weight", 4)
	if !tied {
		add("lm_head.weight", 6, 4)
	}
	writeModel(t, dir, ts, 0)
	types := make([]string, layers)
	for l := range types {
		types[l] = fmt.Sprintf("%s-%d", filepath.Base(dir), l)
	}
	cfg, _ := json.Marshal(map[string]any{"num_hidden_layers": layers, "layer_types": types, "torch_dtype": "float32"})
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for _, tt := range ts {
		out[tt.name] = tt.vals
	}
	return out
}

// runSlices merges the config src (model paths relative to dir) with every
// kernel set, one to three workers and several block sizes, checks that the
// runs agree byte for byte, and returns the first run's output and plan.
func runSlices(t *testing.T, dir, src string) (map[string][]byte, map[string]string, *Plan) {
	t.Helper()
	c, err := config.Parse([]byte(strings.ReplaceAll(src, "DIR", dir)), "s.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	m, sl, resolve, err := SliceRecipe(c)
	if err != nil {
		t.Fatal(err)
	}
	var models []string
	for _, j := range sl[0].Models {
		models = append(models, sl[0].Sources[j].Model)
	}
	base := c.BaseModel
	if base == "" {
		base = sl[0].Sources[0].Model
	}
	runs := []struct{ threads, block int }{{1, 0}, {2, 7}, {3, 64}, {2, 1000}}
	var first map[string][]byte
	var dtypes map[string]string
	var plan *Plan
	for _, ks := range kernels.Available() {
		for ri, rc := range runs {
			out := filepath.Join(dir, fmt.Sprintf("out-%s-%d", ks.Name, ri))
			opts := Options{Base: base, Models: models, Out: out, Threads: rc.threads, BlockElems: rc.block, Kernels: ks, OutDType: c.OutputDType()}
			p, err := NewSlicePlan(opts, m, sl, resolve)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Run(context.Background(), p, nil, nil); err != nil {
				t.Fatal(err)
			}
			md, data := readModel(t, out)
			if first == nil {
				first, plan = data, p
				dtypes = map[string]string{}
				for name, tt := range md.Tensors {
					dtypes[name] = tt.DType
				}
				continue
			}
			for name, b := range first {
				if !bytes.Equal(data[name], b) {
					t.Fatalf("kernels %s, %d threads, block %d: %s differs from the first run", ks.Name, rc.threads, rc.block, name)
				}
			}
		}
	}
	return first, dtypes, plan
}

// outConfig reads the output's config.json.
func outConfig(t *testing.T, dir string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A frankenmerge of three models into a deeper one: layers 0–2 of A, 2–5 of
// B (its input layer 3 scaled by 0.5 through a filter on the input name),
// 1–2 of C. Every output tensor is its source's, byte for byte where it is
// not scaled; the embeddings are A's, the final norm C's, and C's tied head
// means no lm_head.
func TestFrankenmergePassthrough(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(1, 2))
	in := map[string]map[string][]float32{
		"A": llamaLike(t, filepath.Join(dir, "A"), r, 3, kernels.BF16, false),
		"B": llamaLike(t, filepath.Join(dir, "B"), r, 6, kernels.F32, false),
		"C": llamaLike(t, filepath.Join(dir, "C"), r, 4, kernels.F16, true),
	}
	dts := map[string]kernels.DType{"A": kernels.BF16, "B": kernels.F32, "C": kernels.F16}
	got, dtypes, plan := runSlices(t, dir, `merge_method: passthrough
slices:
  - sources: [{model: DIR/A, layer_range: [0, 3]}]
  - sources:
      - model: DIR/B
        layer_range: [2, 6]
        parameters:
          scale: [{filter: "layers.3.", value: 0.5}]
  - sources: [{model: DIR/C, layer_range: [1, 3]}]
`)
	type src struct {
		model string
		layer int
	}
	var layers []src
	for l := range 3 {
		layers = append(layers, src{"A", l})
	}
	for l := 2; l < 6; l++ {
		layers = append(layers, src{"B", l})
	}
	for l := 1; l < 3; l++ {
		layers = append(layers, src{"C", l})
	}
	want := map[string]struct {
		model, name string
		scale       float32
	}{
		"model.embed_tokens.weight": {"A", "model.embed_tokens.weight", 1},
		"model.norm.weight":         {"C", "model.norm.weight", 1},
	}
	for o, s := range layers {
		for _, suffix := range []string{"self_attn.q_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight"} {
			scale := float32(1)
			if s.model == "B" && s.layer == 3 {
				scale = 0.5
			}
			want[fmt.Sprintf("model.layers.%d.%s", o, suffix)] = struct {
				model, name string
				scale       float32
			}{s.model, fmt.Sprintf("model.layers.%d.%s", s.layer, suffix), scale}
		}
	}
	if len(got) != len(want) {
		t.Fatalf("output has %d tensors, want %d", len(got), len(want))
	}
	for name, w := range want {
		dt := dts[w.model]
		if dtypes[name] != dt.String() {
			t.Fatalf("%s: dtype %s, want %s", name, dtypes[name], dt)
		}
		x := in[w.model][w.name]
		if w.scale == 1 {
			if !bytes.Equal(got[name], encode(dt, x)) {
				t.Errorf("%s: not the bytes of %s's %s", name, w.model, w.name)
			}
			continue
		}
		vals := decode(dt, got[name])
		for e := range x {
			if v := roundTo(dt, x[e]*w.scale); !sameFloat(vals[e], v) {
				t.Fatalf("%s[%d] = %v, want %v", name, e, vals[e], v)
			}
		}
	}
	copied := 0
	for _, s := range plan.Strategies() {
		if s.Path == PathCopy {
			copied++
		}
	}
	if copied != len(want)-3 {
		t.Errorf("%d tensors copied, want every one but the 3 scaled", copied)
	}
	cfg := outConfig(t, plan.Opts.Out)
	types := cfg["layer_types"].([]any)
	if cfg["num_hidden_layers"] != float64(len(layers)) || len(types) != len(layers) {
		t.Fatalf("config.json: %v layers, layer_types %v", cfg["num_hidden_layers"], types)
	}
	for o, s := range layers {
		if w := fmt.Sprintf("%s-%d", s.model, s.layer); types[o] != w {
			t.Errorf("layer_types[%d] = %v, want %s", o, types[o], w)
		}
	}
	var map_ strings.Builder
	plan.DescribeLayers(&map_)
	for _, line := range []string{"0–2 ← " + dir + "/A 0–2\n", "3–6 ← " + dir + "/B 2–5\n", "7–8 ← " + dir + "/C 1–2\n"} {
		if !strings.Contains(map_.String(), line) {
			t.Errorf("layer map %q lacks %q", map_.String(), line)
		}
	}
}

// ties over slices of different ranges, each merging two models onto the
// base Z's layers with parameters of its own: a per-source weight gradient
// that restarts in each slice, a slice density, a per-source filter matched
// against the input name, and the top level's. Each output tensor is held to
// refMerge with the parameters worked out here; C lacks lm_head, so its
// embeddings stand in for it.
func TestSlicesTies(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(3, 4))
	in := map[string]map[string][]float32{
		"Z": llamaLike(t, filepath.Join(dir, "Z"), r, 6, kernels.F32, false),
		"A": llamaLike(t, filepath.Join(dir, "A"), r, 6, kernels.BF16, false),
		"B": llamaLike(t, filepath.Join(dir, "B"), r, 6, kernels.F32, false),
		"C": llamaLike(t, filepath.Join(dir, "C"), r, 4, kernels.F32, true),
	}
	got, dtypes, plan := runSlices(t, dir, `merge_method: ties
base_model: DIR/Z
parameters:
  density: 0.8
  weight: 0.9
slices:
  - sources:
      - {model: DIR/Z, layer_range: [0, 3]}
      - {model: DIR/A, layer_range: [0, 3], parameters: {weight: [0.5, 1]}}
      - {model: DIR/B, layer_range: [3, 6]}
    parameters:
      density: 0.5
  - sources:
      - {model: DIR/Z, layer_range: [2, 4]}
      - {model: DIR/B, layer_range: [1, 3], parameters: {density: [{filter: "layers.2.mlp", value: 0.3}]}}
      - {model: DIR/A, layer_range: [4, 6], parameters: {weight: [2, 1]}}
  - sources:
      - {model: DIR/Z, layer_range: [5, 6]}
      - {model: DIR/C, layer_range: [3, 4]}
      - {model: DIR/A, layer_range: [1, 2], parameters: {weight: [0, 4]}}
`)
	m := newMethod(t, "ties", "mergekit")
	type layer struct {
		slice, i, n int
		first       [3]int // Z's, the first model's, the second's
	}
	var layers []layer
	for i := range 3 {
		layers = append(layers, layer{0, i, 3, [3]int{i, i, 3 + i}})
	}
	for i := range 2 {
		layers = append(layers, layer{1, i, 2, [3]int{2 + i, 1 + i, 4 + i}})
	}
	layers = append(layers, layer{2, 0, 1, [3]int{5, 3, 1}})
	models := [][2]string{{"A", "B"}, {"B", "A"}, {"C", "A"}}
	// params gives the two models' weights and densities for a tensor of
	// slice k at position t, the first model reading input name in.
	params := func(k int, t float64, in string) TensorParams {
		tp := TensorParams{Density: []float64{0.8, 0.8}, Weights: []float32{0.9, 0.9}, Lambda: 1,
			Gamma: []float64{0.01, 0.01}, Epsilon: []float64{0.15, 0.15}, Weights64: []float64{0.9, 0.9}}
		switch k {
		case 0:
			tp.Density = []float64{0.5, 0.5}
			tp.Weights64[0] = 0.5 + 0.5*t
		case 1:
			if strings.Contains(in, "layers.2.mlp") {
				tp.Density[0] = 0.3
			}
			tp.Weights64[1] = 2 - t
		case 2:
			tp.Weights64[1] = 4 * t
		}
		tp.Weights = []float32{float32(tp.Weights64[0]), float32(tp.Weights64[1])}
		return tp
	}
	want := map[string]refTensor{}
	ref := func(out string, k int, t float64, names [3]string, srcs [3]string) {
		rt := refTensor{name: out, base: in[srcs[0]][names[0]], params: params(k, t, names[1]), outDT: kernels.F32}
		for _, j := range []int{1, 2} {
			rt.models = append(rt.models, in[srcs[j]][names[j]])
		}
		want[out] = rt
	}
	same := func(name string) [3]string { return [3]string{name, name, name} }
	ref("model.embed_tokens.weight", 0, 0, same("model.embed_tokens.weight"), [3]string{"Z", "A", "B"})
	ref("model.norm.weight", 2, 0, same("model.norm.weight"), [3]string{"Z", "C", "A"})
	ref("lm_head.weight", 2, 0, [3]string{"lm_head.weight", "model.embed_tokens.weight", "lm_head.weight"}, [3]string{"Z", "C", "A"})
	for o, l := range layers {
		t := config.SlicePosition(l.i, l.n)
		for _, suffix := range []string{"self_attn.q_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight"} {
			var names [3]string
			for j, f := range l.first {
				names[j] = fmt.Sprintf("model.layers.%d.%s", f, suffix)
			}
			ref(fmt.Sprintf("model.layers.%d.%s", o, suffix), l.slice, t, names, [3]string{"Z", models[l.slice][0], models[l.slice][1]})
		}
	}
	if len(got) != len(want) {
		t.Fatalf("output has %d tensors, want %d", len(got), len(want))
	}
	for name, rt := range want {
		if dtypes[name] != "F32" {
			t.Fatalf("%s: dtype %s, want Z's F32", name, dtypes[name])
		}
		out, _ := refMerge(m, []refTensor{rt})
		vals := decode(kernels.F32, got[name])
		for e := range out[0] {
			if w := refFinish(rt.base[e], out[0][e], rt.params.Lambda, kernels.F32); !sameFloat(vals[e], w) {
				t.Fatalf("%s[%d] = %v, want %v", name, e, vals[e], w)
			}
		}
	}
	// A's weight 4·t is 0 at the final norm and head (t = 0): the warning
	// names A, not the first slice's second model, and counts A's tensors.
	found := false
	for _, w := range plan.Warnings {
		if w.Code == WarnContributesNone {
			found = true
			if w.Model != filepath.Join(dir, "A") || !strings.Contains(w.Message, "weight 0 on 2 of 21 merged tensors") {
				t.Errorf("warning %+v", w)
			}
		}
	}
	if !found {
		t.Error("no warning of A's weight 0")
	}
	cfg := outConfig(t, plan.Opts.Out)
	if cfg["num_hidden_layers"] != float64(6) || fmt.Sprint(cfg["layer_types"]) != "[Z-0 Z-1 Z-2 Z-2 Z-3 Z-5]" {
		t.Errorf("config.json: %v layers, layer_types %v", cfg["num_hidden_layers"], cfg["layer_types"])
	}
}

func TestSlicesErrors(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(5, 6))
	llamaLike(t, filepath.Join(dir, "A"), r, 3, kernels.F32, false)
	llamaLike(t, filepath.Join(dir, "B"), r, 3, kernels.F32, false)
	a, b := filepath.Join(dir, "A"), filepath.Join(dir, "B")
	m := newMethod(t, "passthrough", "")
	none := func(int, string, []string, float64) (TensorParams, error) { return TensorParams{}, nil }
	opts := Options{Base: a, Models: []string{a}, Out: filepath.Join(dir, "out")}
	_, err := NewSlicePlan(opts, m, []Slice{{Sources: []SliceSource{{a, 0, 3}}, Base: -1, Models: []int{0}},
		{Sources: []SliceSource{{b, 1, 5}}, Base: -1, Models: []int{0}}}, none)
	if err == nil || !strings.Contains(err.Error(), "slices[1].sources[0]: layer_range [1, 5] of "+b+", which has 3 layers") {
		t.Errorf("range beyond the model: %v", err)
	}
	ties := newMethod(t, "ties", "mergekit")
	_, err = NewSlicePlan(Options{Base: a, Models: []string{b}, Out: opts.Out}, ties, []Slice{{Sources: []SliceSource{{b, 0, 3}}, Base: -1, Models: []int{0}}}, none)
	if err == nil || !strings.Contains(err.Error(), "not among the slice's sources") {
		t.Errorf("no base among the sources: %v", err)
	}
	_, err = NewSlicePlan(Options{Base: a, Models: []string{b}, Out: opts.Out}, newMethod(t, "emr", ""), []Slice{{Sources: []SliceSource{{a, 0, 3}, {b, 0, 3}}, Base: 0, Models: []int{1}}}, none)
	if err == nil || !strings.Contains(err.Error(), "emr keeps each fine-tune as a task") {
		t.Errorf("emr: %v", err)
	}
	paper := newMethod(t, "ties", "paper")
	_, err = NewSlicePlan(Options{Base: a, Models: []string{b}, Out: opts.Out}, paper, []Slice{{Sources: []SliceSource{{a, 0, 3}, {b, 0, 3}}, Base: 0, Models: []int{1}}}, none)
	if err == nil || !strings.Contains(err.Error(), "trim_scope: model") {
		t.Errorf("paper preset: %v", err)
	}
}

// A slice's base_model replaces the top-level one there: task arithmetic
// onto Z's layers in the first slice and onto A's in the second, each
// checked against refMerge.
func TestSlicesOwnBase(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(7, 8))
	in := map[string]map[string][]float32{
		"Z": llamaLike(t, filepath.Join(dir, "Z"), r, 2, kernels.F32, false),
		"A": llamaLike(t, filepath.Join(dir, "A"), r, 4, kernels.F32, false),
		"B": llamaLike(t, filepath.Join(dir, "B"), r, 4, kernels.BF16, false),
	}
	got, _, _ := runSlices(t, dir, `merge_method: task_arithmetic
base_model: DIR/Z
slices:
  - sources:
      - {model: DIR/Z, layer_range: [0, 2]}
      - {model: DIR/B, layer_range: [2, 4], parameters: {weight: 0.5}}
  - sources:
      - {model: DIR/A, layer_range: [1, 4]}
      - {model: DIR/B, layer_range: [0, 3], parameters: {weight: 2}}
    base_model: DIR/A
`)
	m := newMethod(t, "task_arithmetic", "")
	check := func(out, baseModel, baseName, inName string, w float32) {
		t.Helper()
		rt := refTensor{name: out, base: in[baseModel][baseName], models: [][]float32{in["B"][inName]}, outDT: kernels.F32,
			params: TensorParams{Density: []float64{1}, Weights: []float32{w}, Lambda: 1, Gamma: []float64{0}, Epsilon: []float64{0}}}
		tm, _ := refMerge(m, []refTensor{rt})
		vals := decode(kernels.F32, got[out])
		for e := range tm[0] {
			if want := refFinish(rt.base[e], tm[0][e], 1, kernels.F32); !sameFloat(vals[e], want) {
				t.Fatalf("%s[%d] = %v, want %v", out, e, vals[e], want)
			}
		}
	}
	check("model.embed_tokens.weight", "Z", "model.embed_tokens.weight", "model.embed_tokens.weight", 0.5)
	check("lm_head.weight", "A", "lm_head.weight", "lm_head.weight", 2)
	for o := range 5 {
		name := func(l int) string { return fmt.Sprintf("model.layers.%d.mlp.up_proj.weight", l) }
		if o < 2 {
			check(name(o), "Z", name(o), name(2+o), 0.5)
		} else {
			check(name(o), "A", name(o-1), name(o-2), 2)
		}
	}
	if len(got) != 1+5*3+2 {
		t.Errorf("%d tensors, want %d", len(got), 1+5*3+2)
	}
}

// A shard truncated after the plan read its header fails a passthrough's
// copy with the file and the tensor named.
func TestFrankenmergeShardChanged(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(9, 10))
	llamaLike(t, filepath.Join(dir, "A"), r, 2, kernels.BF16, false)
	a := filepath.Join(dir, "A")
	opts := Options{Base: a, Models: []string{a}, Out: filepath.Join(dir, "out"), Threads: 2}
	sl := []Slice{{Sources: []SliceSource{{a, 0, 2}}, Base: -1, Models: []int{0}}, {Sources: []SliceSource{{a, 1, 2}}, Base: -1, Models: []int{0}}}
	one := func(int, string, []string, float64) (TensorParams, error) {
		return TensorParams{Density: []float64{1}, Weights: []float32{1}, Gamma: []float64{0}, Epsilon: []float64{0}, Lambda: 1}, nil
	}
	p, err := NewSlicePlan(opts, newMethod(t, "passthrough", ""), sl, one)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(shard(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(shard(a), st.Size()-4); err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(), p, nil, nil)
	if err == nil || !strings.Contains(err.Error(), shard(a)) || !strings.Contains(err.Error(), "changed size since its header was read") || !strings.Contains(err.Error(), `tensor "model.embed_tokens.weight"`) {
		t.Errorf("got %v", err)
	}
}

// A frankenmerge whose slices merge 3, 1 and 2 models onto the base Z's
// layers: A, B and C in the first slice (A's weight a gradient), B alone in
// the second, C and A in the third, whose C lacks lm_head (its embeddings
// stand in). Every output tensor is held to refMerge with the models and
// parameters of its own slice, for several methods; the elements each model
// kept are summed per model across the slices, whatever its place in them.
func TestSlicesCounts(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(11, 12))
	in := map[string]map[string][]float32{
		"Z": llamaLike(t, filepath.Join(dir, "Z"), r, 6, kernels.F32, false),
		"A": llamaLike(t, filepath.Join(dir, "A"), r, 6, kernels.BF16, false),
		"B": llamaLike(t, filepath.Join(dir, "B"), r, 6, kernels.F32, false),
		"C": llamaLike(t, filepath.Join(dir, "C"), r, 5, kernels.F32, true),
	}
	type source struct {
		model string
		first int
	}
	// Per slice: Z's first layer, the slice's length, its merged models.
	layout := []struct {
		base, n int
		models  []source
	}{
		{0, 3, []source{{"A", 0}, {"B", 3}, {"C", 1}}},
		{2, 2, []source{{"B", 1}}},
		{5, 1, []source{{"C", 4}, {"A", 4}}},
	}
	shape := map[string][]int64{"embed_tokens": {6, 4}, "lm_head": {6, 4}, "q_proj": {4, 4}, "up_proj": {300, 4}, "norm": {4}, "layernorm": {4}}
	shapeOf := func(name string) []int64 {
		for _, key := range []string{"embed_tokens", "lm_head", "q_proj", "up_proj", "layernorm", "norm"} {
			if strings.Contains(name, key) {
				return shape[key]
			}
		}
		t.Fatalf("no shape for %s", name)
		return nil
	}
	for _, tc := range []struct {
		method, preset string
		sparse         bool // takes density: 0.8 at the top level, 0.5 in the first slice
	}{
		{"ties", "mergekit", true},
		{"task_arithmetic", "", false},
		{"dare_ties", "mergekit", true},
		{"breadcrumbs_ties", "mergekit", true},
		{"della", "mergekit", true},
	} {
		t.Run(tc.method, func(t *testing.T) {
			top, first := "", ""
			if tc.sparse {
				top, first = "  density: 0.8\n", "    parameters: {density: 0.5}\n"
			}
			sub := t.TempDir()
			for name := range in {
				if err := os.Symlink(filepath.Join(dir, name), filepath.Join(sub, name)); err != nil {
					t.Fatal(err)
				}
			}
			src := "merge_method: " + tc.method + `
base_model: DIR/Z
parameters:
  weight: 0.9
` + top + `slices:
  - sources:
      - {model: DIR/Z, layer_range: [0, 3]}
      - {model: DIR/A, layer_range: [0, 3], parameters: {weight: [0.5, 1]}}
      - {model: DIR/B, layer_range: [3, 6]}
      - {model: DIR/C, layer_range: [1, 4]}
` + first + `  - sources:
      - {model: DIR/Z, layer_range: [2, 4]}
      - {model: DIR/B, layer_range: [1, 3], parameters: {weight: 2}}
  - sources:
      - {model: DIR/Z, layer_range: [5, 6]}
      - {model: DIR/C, layer_range: [4, 5]}
      - {model: DIR/A, layer_range: [4, 5], parameters: {weight: 1.5}}
`
			got, dtypes, plan := runSlices(t, sub, src)
			m, def, err := NewMethod(tc.method, tc.preset)
			if err != nil {
				t.Fatal(err)
			}
			// params are the parameters of slice k's models at position t.
			params := func(k int, t float64) TensorParams {
				tp := TensorParams{Lambda: float32(def.Lambda)}
				for _, s := range layout[k].models {
					d, w := def.Density, 0.9
					if tc.sparse && k == 0 {
						d = 0.5
					} else if tc.sparse {
						d = 0.8
					}
					switch {
					case k == 0 && s.model == "A":
						w = (1-t)*0.5 + t*1
					case k == 1:
						w = 2
					case k == 2 && s.model == "A":
						w = 1.5
					}
					tp.Density = append(tp.Density, d)
					tp.Weights = append(tp.Weights, float32(w))
					tp.Weights64 = append(tp.Weights64, w)
					tp.Gamma = append(tp.Gamma, def.Gamma)
					tp.Epsilon = append(tp.Epsilon, def.Epsilon)
				}
				return tp
			}
			kept := map[string]uint64{}
			check := func(out string, k int, at float64, baseName string, names []string) {
				t.Helper()
				rt := refTensor{name: out, shape: shapeOf(out), base: in["Z"][baseName], params: params(k, at), outDT: kernels.F32}
				for i, s := range layout[k].models {
					x, ok := in[s.model][names[i]]
					if !ok {
						t.Fatalf("%s: %s has no %s", out, s.model, names[i])
					}
					rt.models = append(rt.models, x)
				}
				res, ks := refMerge(m, []refTensor{rt})
				for i, s := range layout[k].models {
					if ks != nil {
						kept[s.model] += ks[i]
					}
				}
				if dtypes[out] != "F32" {
					t.Fatalf("%s: dtype %s, want Z's F32", out, dtypes[out])
				}
				vals := decode(kernels.F32, got[out])
				if len(vals) != len(res[0]) {
					t.Fatalf("%s: %d values, want %d", out, len(vals), len(res[0]))
				}
				for e := range res[0] {
					if w := refFinish(rt.base[e], res[0][e], rt.params.Lambda, kernels.F32); !sameFloat(vals[e], w) {
						t.Fatalf("%s[%d] = %v, want %v (slice %d, %d models)", out, e, vals[e], w, k, len(rt.models))
					}
				}
			}
			same := func(k int, name string) []string {
				names := make([]string, len(layout[k].models))
				for i := range names {
					names[i] = name
				}
				return names
			}
			checked := 0
			check("model.embed_tokens.weight", 0, 0, "model.embed_tokens.weight", same(0, "model.embed_tokens.weight"))
			check("model.norm.weight", 2, 0, "model.norm.weight", same(2, "model.norm.weight"))
			check("lm_head.weight", 2, 0, "lm_head.weight", []string{"model.embed_tokens.weight", "lm_head.weight"})
			checked += 3
			o := 0
			for k, s := range layout {
				for i := range s.n {
					at := config.SlicePosition(i, s.n)
					for _, suffix := range []string{"self_attn.q_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight"} {
						names := make([]string, len(s.models))
						for j, src := range s.models {
							names[j] = fmt.Sprintf("model.layers.%d.%s", src.first+i, suffix)
						}
						check(fmt.Sprintf("model.layers.%d.%s", o, suffix), k, at, fmt.Sprintf("model.layers.%d.%s", s.base+i, suffix), names)
						checked++
					}
					o++
				}
			}
			if len(got) != checked {
				t.Fatalf("output has %d tensors, want %d", len(got), checked)
			}
			// The plan's models are the three merged, each once; each job
			// merges its slice's.
			var paths []string
			for _, md := range plan.Models {
				paths = append(paths, filepath.Base(md.Path))
			}
			if fmt.Sprint(paths) != "[A B C]" {
				t.Errorf("plan models %v, want [A B C]", paths)
			}
			for _, j := range plan.Jobs {
				if strings.HasPrefix(j.Name, "model.layers.3.") && len(j.Models) != 1 {
					t.Errorf("%s merges %d models, want 1", j.Name, len(j.Models))
				}
			}
			var lm strings.Builder
			plan.DescribeLayers(&lm)
			for _, line := range []string{"0–2 ← " + sub + "/A 0–2, " + sub + "/B 3–5, " + sub + "/C 1–3 (base " + sub + "/Z 0–2)\n",
				"3–4 ← " + sub + "/B 1–2 (base " + sub + "/Z 2–3)\n", "5 ← " + sub + "/C 4, " + sub + "/A 4 (base " + sub + "/Z 5)\n"} {
				if !strings.Contains(lm.String(), line) {
					t.Errorf("layer map %q lacks %q", lm.String(), line)
				}
			}
			if !tc.sparse {
				return
			}
			// What each model kept, summed over the slices that merge it;
			// with every tensor's select sampled (the one-pass merge, or the
			// sampled select), split over the workers or each on one, the
			// output is the same.
			for ri, solo := range []bool{false, true} {
				opts := plan.Opts
				opts.Out, opts.Threads, opts.BlockElems = filepath.Join(sub, fmt.Sprint("kept", ri)), 3, 64
				p, err := NewSlicePlan(opts, plan.Method, plan.slices, sliceResolver(t, sub, src))
				if err != nil {
					t.Fatal(err)
				}
				p.tuning.tensorSampled, p.tuning.tensorSampleMin, p.tuning.sampleChunk, p.tuning.tensorSampleEvery = 1, 16, 16, 3
				if !solo {
					p.tuning.soloBytes = 0
				}
				sampled := 0
				for _, st := range p.Strategies() {
					if st.Path == PathSampled || st.Path == PathSpeculate {
						sampled++
					}
				}
				if m.Trim && sampled == 0 {
					t.Errorf("no tensor's select is sampled")
				}
				sum, err := Run(context.Background(), p, nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				for i, md := range p.Models {
					if w := kept[filepath.Base(md.Path)]; sum.Kept[i] != w {
						t.Errorf("solo %v: %s kept %d elements, want %d", solo, md.Path, sum.Kept[i], w)
					}
				}
				_, data := readModel(t, opts.Out)
				for name, b := range got {
					if !bytes.Equal(data[name], b) {
						t.Errorf("solo %v, sampled selects: %s differs", solo, name)
					}
				}
			}
		})
	}
}

// sliceResolver is the resolver of the config src (paths relative to dir).
func sliceResolver(t *testing.T, dir, src string) SliceResolver {
	t.Helper()
	c, err := config.Parse([]byte(strings.ReplaceAll(src, "DIR", dir)), "s.yml")
	if err != nil {
		t.Fatal(err)
	}
	_, _, resolve, err := SliceRecipe(c)
	if err != nil {
		t.Fatal(err)
	}
	return resolve
}

// Every method the slices take, over slices that merge different numbers
// of models, each slice's layers read from the same layers of its sources:
// slice k's output tensors are then those of a merge of whole models (the
// models form) of slice k's models, byte for byte. The embeddings are the
// first slice's merge's, the final norm and lm_head the last one's.
func TestSlicesCountsMethods(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(13, 14))
	for _, name := range []string{"Z", "A", "B", "C"} {
		dt := kernels.F32
		if name == "A" {
			dt = kernels.BF16
		}
		llamaLike(t, filepath.Join(dir, name), r, 6, dt, false)
	}
	three := [][]string{{"A", "B", "C"}, {"B"}, {"C", "A"}}
	two := [][]string{{"A", "B", "C"}, {"B", "C"}, {"C", "A"}}
	for _, tc := range []struct {
		head   string     // merge_method and the top level's settings
		models [][]string // per slice, the models merged besides Z
		params map[string]string
		noBase bool // Z is one of the models (listed last), not θ₀
	}{
		{head: "merge_method: linear\n", models: three, params: map[string]string{"A": "{weight: 0.5}", "B": "{weight: 2}"}, noBase: true},
		{head: "merge_method: karcher\n", models: three, noBase: true},
		{head: "merge_method: multislerp\nbase_model: DIR/Z\n", models: three, params: map[string]string{"A": "{weight: 0.5}", "B": "{weight: 2}", "C": "{weight: 1}"}},
		{head: "merge_method: sce\nbase_model: DIR/Z\nparameters: {select_topk: 0.5}\n", models: three},
		{head: "merge_method: model_stock\nbase_model: DIR/Z\n", models: two},
		{head: "merge_method: pcb\nbase_model: DIR/Z\nparameters: {scope: tensor}\n", models: two},
		{head: "merge_method: dare_linear\nbase_model: DIR/Z\nparameters: {density: 0.7, weight: 0.6}\n", models: three},
		{head: "merge_method: della_linear\nbase_model: DIR/Z\nparameters: {density: 0.6, weight: 0.6}\n", models: three},
		{head: "merge_method: breadcrumbs\nbase_model: DIR/Z\nparameters: {density: 0.6, gamma: 0.05}\n", models: three},
		{head: "merge_method: ties\nbase_model: DIR/Z\nparameters: {density: 0.5, weight: 0.7}\n", models: three, params: map[string]string{"B": "{weight: 2, density: 0.8}"}},
		{head: "merge_method: slerp\nbase_model: DIR/Z\nparameters: {t: 0.3}\n", models: [][]string{{"A"}, {}, {"C"}}},
	} {
		method, _, _ := strings.Cut(strings.TrimPrefix(tc.head, "merge_method: "), "\n")
		t.Run(method, func(t *testing.T) {
			sub := t.TempDir()
			for _, name := range []string{"Z", "A", "B", "C"} {
				if err := os.Symlink(filepath.Join(dir, name), filepath.Join(sub, name)); err != nil {
					t.Fatal(err)
				}
			}
			source := func(name string, lr [2]int) string {
				s := fmt.Sprintf("      - {model: DIR/%s, layer_range: [%d, %d]", name, lr[0], lr[1])
				if p, ok := tc.params[name]; ok {
					s += ", parameters: " + p
				}
				return s + "}\n"
			}
			// Z comes last: karcher's models form appends its base.
			withZ := func(k int) []string { return append(slices.Clone(tc.models[k]), "Z") }
			src := tc.head + "slices:\n"
			for k := range tc.models {
				src += "  - sources:\n"
				for _, name := range withZ(k) {
					src += source(name, [2]int{2 * k, 2*k + 2})
				}
			}
			got, _, _ := runSlices(t, sub, src)
			want := map[string][]byte{}
			for k := range tc.models {
				models := "models:\n"
				for _, name := range withZ(k) {
					if name == "Z" && !tc.noBase {
						continue
					}
					models += "  - {model: DIR/" + name
					if p, ok := tc.params[name]; ok {
						models += ", parameters: " + p
					}
					models += "}\n"
				}
				if len(tc.models[k]) == 0 {
					models = "models: []\n"
				}
				data := mergeModelsForm(t, sub, tc.head+models, fmt.Sprint("whole", k))
				for name, b := range data {
					l, layered := config.LayerIndex(name)
					switch {
					case layered && l/2 == k,
						!layered && k == 0 && strings.Contains(name, "embed"),
						!layered && k == len(tc.models)-1 && !strings.Contains(name, "embed"):
						want[name] = b
					}
				}
			}
			if len(got) != len(want) {
				t.Fatalf("%d tensors, want %d", len(got), len(want))
			}
			for name, b := range want {
				if !bytes.Equal(got[name], b) {
					t.Errorf("%s differs from the merge of whole models", name)
				}
			}
		})
	}
}

// mergeModelsForm merges the config src (the models form; paths relative to
// dir) into dir/out and returns its tensors' bytes.
func mergeModelsForm(t *testing.T, dir, src, out string) map[string][]byte {
	t.Helper()
	c, err := config.Parse([]byte(strings.ReplaceAll(src, "DIR", dir)), "m.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateWith(nil); err != nil {
		t.Fatal(err)
	}
	m, resolve, err := Recipe(c)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Base: c.BaseModel, Out: filepath.Join(dir, out), Threads: 2, OutDType: c.OutputDType()}
	for _, e := range c.Models {
		opts.Models = append(opts.Models, e.Path)
	}
	if opts.Base == "" {
		opts.Base = opts.Models[0]
	}
	p, err := NewPlan(opts, m, resolve)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), p, nil, nil); err != nil {
		t.Fatal(err)
	}
	_, data := readModel(t, opts.Out)
	return data
}
