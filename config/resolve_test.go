package config

import (
	"math"
	"testing"
)

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse([]byte(src), "t.yml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-12 }

// Hand-worked gradients: t = layer/(layers−1), anchors evenly spread over [0, 1].
func TestResolveGradients(t *testing.T) {
	c := mustParse(t, `
merge_method: ties
base_model: b
models:
  - model: m
    parameters:
      two: [0, 1]
      three: [0, 1, 0.5]
      one: [0.7]
      ties: [1, 0.7, 0.1]
`)
	cases := []struct {
		key    string
		layers int
		want   []float64 // per layer 0..layers-1
	}{
		{"two", 5, []float64{0, 0.25, 0.5, 0.75, 1}},
		// s = t·2 = 0, .5, 1, 1.5, 2 → 0, .5, 1, (1+.5)/2, .5
		{"three", 5, []float64{0, 0.5, 1, 0.75, 0.5}},
		{"one", 3, []float64{0.7, 0.7, 0.7}},
		// 4 layers: s = 0, 2/3, 4/3, 2 → 1, 1/3·1 + 2/3·0.7, 2/3·0.7 + 1/3·0.1, 0.1
		{"ties", 4, []float64{1, 0.8, 0.5, 0.1}},
		// a single layer sits at t = 0
		{"two", 1, []float64{0}},
		// two layers: the ends
		{"three", 2, []float64{0, 0.5}},
	}
	for _, tc := range cases {
		for layer, want := range tc.want {
			got, ok, err := c.Float(0, tc.key, "model.layers.x.mlp.weight", layer, tc.layers)
			if err != nil || !ok || !near(got, want) {
				t.Errorf("%s layer %d/%d = %v, %v, %v; want %v", tc.key, layer, tc.layers, got, ok, err, want)
			}
		}
	}
	// Outside the numbered layers: the first anchor.
	for _, key := range []string{"two", "three", "ties"} {
		got, _, _ := c.Float(0, key, "model.embed_tokens.weight", -1, 32)
		want := map[string]float64{"two": 0, "three": 0, "ties": 1}[key]
		if got != want {
			t.Errorf("%s at layer -1 = %v, want %v", key, got, want)
		}
	}
	// Exactly at the anchors the anchor values come back bit for bit.
	if got, _, _ := c.Float(0, "ties", "x", 1, 3); got != 0.7 {
		t.Errorf("middle anchor = %v, want exactly 0.7", got)
	}
}

func TestResolvePrecedence(t *testing.T) {
	c := mustParse(t, `
merge_method: ties
base_model: b
models:
  - model: m0
    parameters:
      weight:
        - filter: mlp
          value: 0.5
        - filter: mlp.up_proj   # never reached: the first match wins
          value: 0.9
        - value: 0
      density:
        - filter: self_attn
          value: [0.2, 0.4]
  - model: m1
    parameters:
      weight: 2
  - model: m2
parameters:
  weight: 1
  density: 0.8
  lambda:
    - filter: "*"
      value: 1.5
    - value: 9
`)
	const up, attn, emb = "model.layers.1.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.weight", "model.embed_tokens.weight"
	cases := []struct {
		model       int
		key, tensor string
		layer       int
		want        float64
		found       bool
	}{
		{0, "weight", up, 1, 0.5, true},
		{0, "weight", attn, 1, 0, true},    // catch-all entry
		{0, "density", attn, 1, 0.3, true}, // filter value is a gradient: layer 1 of 3 → t = .5
		{0, "density", attn, -1, 0.2, true},
		{0, "density", up, 1, 0.8, true}, // no filter matches: falls back to the top level
		{1, "weight", up, 1, 2, true},    // per model over top level
		{2, "weight", up, 1, 1, true},    // top level
		{-1, "weight", up, 1, 1, true},   // top level only
		{-1, "density", attn, 1, 0.8, true},
		{0, "lambda", up, 1, 1.5, true}, // "*" matches every tensor
		{1, "gamma", up, 1, 0, false},   // set nowhere
		{7, "weight", up, 1, 1, true},   // out-of-range model index: top level
	}
	for _, tc := range cases {
		got, ok, err := c.Float(tc.model, tc.key, tc.tensor, tc.layer, 3)
		if err != nil || ok != tc.found || (ok && !near(got, tc.want)) {
			t.Errorf("model %d %s on %s = %v, %v, %v; want %v, %v", tc.model, tc.key, tc.tensor, got, ok, err, tc.want, tc.found)
		}
	}
	// Filter matching needs a tensor name: none matches "" but the catch-all.
	if v, ok := c.Models[0].Parameters["weight"].Eval("", 0); !ok || v.Num != 0 {
		t.Errorf("Eval(\"\") = %v, %v", v, ok)
	}
}

func TestResolveTypes(t *testing.T) {
	c := mustParse(t, `
merge_method: dare_ties
base_model: b
models: [{model: m}]
parameters:
  normalize: yes      # YAML 1.1, as PyYAML reads it
  rescale: l1
  preset: "paper"
  int8_mask: 'off'    # quoted: stays a string
  density: "0.5"
`)
	if b, ok, err := c.Bool(0, "normalize", "x", 0, 1); !b || !ok || err != nil {
		t.Errorf("normalize = %v %v %v", b, ok, err)
	}
	if s, ok, err := c.Str(-1, "rescale", "x", 0, 1); s != "l1" || !ok || err != nil {
		t.Errorf("rescale = %q %v %v", s, ok, err)
	}
	if s, _, _ := c.Str(-1, "int8_mask", "x", 0, 1); s != "off" {
		t.Errorf("quoted 'off' = %q, want the string", s)
	}
	_, ok, err := c.Float(0, "density", "model.layers.0.mlp.weight", 0, 1)
	var e *Error
	if !ok || err == nil || !asError(err, &e) || e.Line != 10 {
		t.Errorf("density as float: %v %v, want a located error on line 10", ok, err)
	}
	if _, _, err := c.Bool(0, "rescale", "x", 0, 1); err == nil {
		t.Errorf("rescale l1 as bool: no error")
	}
}

func TestLayerIndex(t *testing.T) {
	cases := map[string]int{
		"model.layers.3.mlp.up_proj.weight":       3,
		"model.layers.31.self_attn.q_proj.weight": 31,
		"transformer.h.11.attn.c_attn.weight":     11,
		"blocks.0.norm.weight":                    0,
		"encoder.layer.7.output.dense.weight":     7,
		"layers.12.attention.wq.weight":           12,
	}
	for name, want := range cases {
		if got, ok := LayerIndex(name); !ok || got != want {
			t.Errorf("LayerIndex(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
	for _, name := range []string{"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
		"model.layers.x.weight", "model.h1.2.weight", "layers", "model.layers.99999999999999999999999.w", ""} {
		if got, ok := LayerIndex(name); ok {
			t.Errorf("LayerIndex(%q) = %d, want none", name, got)
		}
	}
}

func TestPosition(t *testing.T) {
	for _, tc := range []struct {
		layer, layers int
		want          float64
	}{{0, 5, 0}, {1, 5, 0.25}, {4, 5, 1}, {9, 5, 1}, {-1, 5, 0}, {0, 1, 0}, {0, 0, 0}, {3, 7, 0.5}} {
		if got := Position(tc.layer, tc.layers); got != tc.want {
			t.Errorf("Position(%d, %d) = %v, want %v", tc.layer, tc.layers, got, tc.want)
		}
	}
}

// interp against a direct numpy.interp-style reference on random gradients.
func TestInterpReference(t *testing.T) {
	ref := func(g []float64, x float64) float64 {
		n := len(g)
		if n == 1 {
			return g[0]
		}
		for j := 0; j < n-1; j++ {
			x0, x1 := float64(j)/float64(n-1), float64(j+1)/float64(n-1)
			if x >= x0 && x <= x1 {
				return g[j] + (g[j+1]-g[j])*(x-x0)/(x1-x0)
			}
		}
		return g[n-1]
	}
	seed := uint64(1)
	rnd := func() float64 {
		seed = seed*6364136223846793005 + 1442695040888963407
		return float64(seed>>11) / (1 << 53)
	}
	for it := 0; it < 2000; it++ {
		g := make([]float64, 1+int(rnd()*7))
		for i := range g {
			g[i] = rnd()*4 - 2
		}
		layers := 1 + int(rnd()*80)
		for layer := 0; layer < layers; layer++ {
			x := Position(layer, layers)
			if got, want := interp(g, x), ref(g, x); math.Abs(got-want) > 1e-12 {
				t.Fatalf("interp(%v, %v) = %v, want %v", g, x, got, want)
			}
		}
	}
}
