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
		{"ranges differ", `merge_method: ties
slices:
  - sources:
      - model: a
        layer_range: [0, 32]
      - model: b
        layer_range: [0, 16]
`, []any{7, "slices[0].sources[1] (b) has layer_range [0, 16] but sources[0] (a) has [0, 32]"}},
		{"not from 0", `merge_method: ties
slices:
  - sources:
      - {model: a, layer_range: [4, 32]}
`, []any{4, "slices[0] starts at layer 4"}},
		{"gap", `merge_method: ties
slices:
  - sources: [{model: a, layer_range: [0, 8]}]
  - sources: [{model: a, layer_range: [12, 32]}]
`, []any{4, "slices[1] starts at layer 12 but slices[0] ends at layer 8"}},
		{"overlap (frankenmerge)", `merge_method: passthrough
slices:
  - sources: [{model: a, layer_range: [0, 24]}]
  - sources: [{model: a, layer_range: [8, 32]}]
`, []any{4, "slices[1] starts at layer 8"}},
		{"other models", `merge_method: ties
slices:
  - sources: [{model: a, layer_range: [0, 8]}, {model: b, layer_range: [0, 8]}]
  - sources: [{model: a, layer_range: [8, 16]}, {model: c, layer_range: [8, 16]}]
`, []any{4, "slices[1] merges c, which slices[0] does not", 4, "slices[1] does not merge b"}},
		{"parameters differ", `merge_method: ties
slices:
  - sources: [{model: a, layer_range: [0, 8], parameters: {weight: 1}}]
  - sources: [{model: a, layer_range: [8, 16], parameters: {weight: 2}}]
`, []any{4, "slices[1].sources[0] (a): parameters differ"}},
		{"gradient", `merge_method: ties
slices:
  - sources: [{model: a, layer_range: [0, 8], parameters: {weight: [0, 1]}}]
  - sources: [{model: a, layer_range: [8, 16], parameters: {weight: [0, 1]}}]
`, []any{3, "gradients with more than one slice", 4, "gradients with more than one slice"}},
		{"top-level gradient", `merge_method: ties
slices:
  - sources: [{model: a, layer_range: [0, 8]}]
  - sources: [{model: a, layer_range: [8, 16]}]
parameters:
  weight: [0, 1]
`, []any{5, "gradients with more than one slice"}},
		{"slice base differs", `merge_method: ties
base_model: x
slices:
  - sources: [{model: a, layer_range: [0, 8]}]
    base_model: y
`, []any{5, "base_model y differs from base_model x (line 2)"}},
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
