package config

import "testing"

func TestSlicesNormalized(t *testing.T) {
	c := mustParse(t, `
slices:
  - sources:
      - model: demo/base
        layer_range: [0, 32]
      - model: demo/ft1
        layer_range: [0, 32]
        parameters:
          density: [1, 0.5]
          weight: 0.7
      - model: demo/ft2
        layer_range: [0, 32]
    parameters:
      weight:
        - filter: mlp
          value: 0.3
merge_method: ties
base_model: demo/base
parameters:
  weight: 0.1
  lambda: 1.2
`)
	if c.LayerRange == nil || *c.LayerRange != [2]int{0, 32} {
		t.Fatalf("LayerRange = %v", c.LayerRange)
	}
	if len(c.Models) != 2 || c.Models[0].Path != "demo/ft1" || c.Models[1].Path != "demo/ft2" || c.Models[0].Line != 6 {
		t.Fatalf("models = %+v", c.Models)
	}
	// The gradient runs over the 32 layers, as in mergekit's one slice.
	if v, _, _ := c.Float(0, "density", "model.layers.31.mlp.weight", 31, 32); v != 0.5 {
		t.Errorf("density at the last layer = %v", v)
	}
	// Resolution order source > slice > top level, slice filters falling through.
	for _, tc := range []struct {
		model  int
		tensor string
		want   float64
	}{{0, "model.layers.0.mlp.up_proj.weight", 0.7}, {1, "model.layers.0.mlp.up_proj.weight", 0.3},
		{1, "model.layers.0.self_attn.q_proj.weight", 0.1}} {
		if v, _, _ := c.Float(tc.model, "weight", tc.tensor, 0, 32); v != tc.want {
			t.Errorf("model %d weight on %s = %v, want %v", tc.model, tc.tensor, v, tc.want)
		}
	}
	if v, _, _ := c.Float(-1, "lambda", "x", 0, 32); v != 1.2 {
		t.Errorf("lambda = %v", v)
	}

	// Several slices in order, same models and parameters, no gradients: one models form.
	c = mustParse(t, `
merge_method: task_arithmetic
slices:
  - sources:
      - {model: a, layer_range: [0, 10], parameters: {weight: 0.5}}
      - {model: b, layer_range: [0, 10]}
    base_model: base
  - sources:
      - {model: b, layer_range: [10, 24]}
      - {model: a, layer_range: [10, 24], parameters: {weight: 0.5}}
`)
	if c.LayerRange == nil || *c.LayerRange != [2]int{0, 24} || c.BaseModel != "base" || len(c.Models) != 2 {
		t.Fatalf("config = %+v, range %v", c, c.LayerRange)
	}
	if err := c.ValidateWith(nil); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestSlicesRefused(t *testing.T) {
	cases := []struct {
		name, src string
		want      []any
	}{
		{"spans differ", `merge_method: ties
slices:
  - sources:
      - model: a
        layer_range: [0, 32]
      - model: b
        layer_range: [0, 16]
`, []any{7, "slices[0].sources[1] (b) has layer_range [0, 16] (16 layers) but sources[0] (a) has [0, 32] (32 layers)"}},
		{"model repeated", `merge_method: linear
slices:
  - sources:
      - {model: a, layer_range: [0, 8]}
      - {model: ./a, layer_range: [8, 16]}
`, []any{5, "slices[0].sources[1]: model ./a is already sources[0] of this slice"}},
		{"bad layer_range", `merge_method: ties
slices:
  - sources:
      - {model: a, layer_range: [0, x]}
      - {model: b, layer_range: [3]}
      - {model: c, layer_range: [5, 5]}
      - {model: d}
`, []any{4, `"x" is not a layer number`, 5, "list of two layer numbers", 6, "holds no layers", 7, "layer_range is missing"}},
		{"residual_weight", `merge_method: ties
slices:
  - sources: [{model: a, layer_range: [0, 8]}]
    residual_weight: 0.5
`, []any{4, "residual_weight is not supported"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.src), "s.yml")
			if c != nil {
				t.Errorf("config returned with the error")
			}
			wantErrors(t, err, tc.want...)
		})
	}
}

// Slices that are not the models form in disguise are kept as slices, for the frankenmerge.
func TestSlicesKept(t *testing.T) {
	for _, src := range []string{`merge_method: passthrough
slices:
  - sources: [{model: a, layer_range: [0, 24]}]
  - sources: [{model: b, layer_range: [8, 32]}]
`, `merge_method: ties
slices:
  - sources: [{model: a, layer_range: [4, 32]}]
`, `merge_method: ties
slices:
  - sources: [{model: a, layer_range: [0, 8]}]
  - sources: [{model: a, layer_range: [12, 32]}]
`, `merge_method: ties
slices:
  - sources: [{model: a, layer_range: [0, 8], parameters: {weight: 1}}]
  - sources: [{model: a, layer_range: [8, 16], parameters: {weight: 2}}]
`, `merge_method: ties
slices:
  - sources: [{model: a, layer_range: [0, 8]}]
  - sources: [{model: a, layer_range: [8, 16]}]
parameters:
  weight: [0, 1]
`, `merge_method: ties
base_model: x
slices:
  - sources: [{model: a, layer_range: [0, 8]}, {model: x, layer_range: [0, 8]}]
    base_model: y
`} {
		c := mustParse(t, src)
		if c.LayerRange != nil || len(c.Slices) == 0 {
			t.Errorf("%s: LayerRange %v, %d slices", src, c.LayerRange, len(c.Slices))
		}
	}
	c := mustParse(t, `merge_method: ties
base_model: base
parameters:
  weight: 0.1
slices:
  - sources:
      - {model: a, layer_range: [0, 4], parameters: {weight: [{filter: "layers.2.", value: 0.7}]}}
      - {model: base, layer_range: [0, 4]}
    parameters:
      weight: [{filter: mlp, value: [0, 1]}]
  - sources:
      - {model: base, layer_range: [4, 6]}
      - {model: b, layer_range: [10, 12]}
    base_model: base
`)
	if err := c.ValidateWith(nil); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if b, m := c.SliceModels(1); b != 0 || len(m) != 1 || m[0] != 1 {
		t.Errorf("SliceModels(1) = %d, %v", b, m)
	}
	// The source's filter reads the input name (layer 2 of a is output layer 2 here, but
	// test it through a name that differs), the slice's and the top level's the output's.
	for _, tc := range []struct {
		k, j    int
		out, in string
		at      float64
		want    float64
	}{
		{0, 0, "model.layers.9.mlp.up_proj.weight", "model.layers.2.mlp.up_proj.weight", 0.5, 0.7},
		{0, 0, "model.layers.2.mlp.up_proj.weight", "model.layers.9.mlp.up_proj.weight", 0.5, 0.5},
		{0, 0, "model.layers.2.self_attn.q_proj.weight", "model.layers.9.self_attn.q_proj.weight", 0.5, 0.1},
		{1, 1, "model.layers.5.mlp.up_proj.weight", "model.layers.11.mlp.up_proj.weight", 1, 0.1},
	} {
		p, ok := c.ResolveSlice(tc.k, tc.j, "weight", tc.out, tc.in, tc.at)
		if !ok || p.Num != tc.want {
			t.Errorf("slice %d source %d on %s ← %s: %v %v, want %v", tc.k, tc.j, tc.out, tc.in, p.Num, ok, tc.want)
		}
	}
	if SlicePosition(0, 1) != 1 || SlicePosition(2, 5) != 0.5 {
		t.Errorf("SlicePosition")
	}
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back := mustParse(t, string(out))
	if len(back.Slices) != 2 || back.Slices[1].Sources[1].Layers != [2]int{10, 12} || back.Slices[1].BaseModel != "base" {
		t.Errorf("round trip: %+v", back.Slices)
	}
}

func TestSlicesValidate(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []any
	}{
		{"passthrough with two sources", `merge_method: passthrough
slices:
  - sources: [{model: a, layer_range: [0, 8]}]
  - sources:
      - {model: a, layer_range: [8, 16]}
      - {model: b, layer_range: [8, 16]}
`, []any{4, "slices[1] has 2 sources: passthrough takes exactly one model"}},
		{"passthrough with models and a base", `merge_method: passthrough
base_model: b
models: [{model: a}]
`, []any{3, "passthrough takes exactly one model per output tensor"}},
		{"base not among the sources", `merge_method: ties
base_model: base
slices:
  - sources: [{model: a, layer_range: [0, 8]}]
  - sources: [{model: a, layer_range: [8, 16]}, {model: base, layer_range: [0, 8]}]
`, []any{4, "slices[0]: base_model base is not among the slice's sources"}},
		{"counts differ", `merge_method: linear
slices:
  - sources: [{model: a, layer_range: [0, 8]}]
  - sources: [{model: a, layer_range: [8, 16]}, {model: b, layer_range: [0, 8]}]
`, nil},
		{"a count nearswap cannot take", `merge_method: nearswap
base_model: base
parameters: {t: 0.5}
slices:
  - sources: [{model: base, layer_range: [0, 8]}, {model: a, layer_range: [0, 8]}]
  - sources: [{model: base, layer_range: [8, 16]}, {model: a, layer_range: [8, 16]}, {model: b, layer_range: [8, 16]}]
`, []any{6, "slices[1] merges 2 model(s) besides its base: nearswap needs exactly one"}},
		{"nuslerp with one model in a slice", `merge_method: nuslerp
parameters: {weight: 1}
slices:
  - sources: [{model: a, layer_range: [0, 8]}, {model: b, layer_range: [0, 8]}]
  - sources: [{model: a, layer_range: [8, 16]}]
`, []any{5, "slices[1] merges 1 model(s) besides its base: nuslerp interpolates between exactly two"}},
		{"a slice of the base alone", `merge_method: ties
base_model: base
slices:
  - sources: [{model: base, layer_range: [0, 8]}, {model: a, layer_range: [0, 8]}]
  - sources: [{model: base, layer_range: [8, 16]}]
`, []any{5, "slices[1] merges 0 model(s) besides its base: there is nothing to merge"}},
		{"slice parameters", `merge_method: ties
base_model: base
slices:
  - sources: [{model: a, layer_range: [0, 8]}, {model: base, layer_range: [0, 8]}]
    parameters: {normalize: false, lambda: 2, density: 2}
  - sources: [{model: a, layer_range: [8, 16], parameters: {lambda: 1}}, {model: base, layer_range: [0, 8]}]
`, []any{5, "slices[0].parameters: density 2 must be in (0, 1]", 5, "normalize applies to the whole merge", 6, "lambda is a global parameter"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, tc.src)
			wantErrors(t, c.ValidateWith(nil), tc.want...)
		})
	}
}

// A source's parameter the method does not take is named by its slice and source.
func TestSlicesSourceParams(t *testing.T) {
	c := mustParse(t, `merge_method: karcher
slices:
  - sources:
      - {model: a, layer_range: [0, 2]}
      - {model: b, layer_range: [0, 2], parameters: {weight: 0.4}}
`)
	wantErrors(t, c.ValidateWith(nil), 5, "model b (slices[0].sources[1]): weight is not a parameter of karcher")
}
