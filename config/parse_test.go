package config

import (
	"strings"
	"testing"
)

func TestParseForms(t *testing.T) {
	c := mustParse(t, `
merge_method: ties
base_model: {model: demo/base}
models:
  - model: demo/base          # the base among the models: dropped for ties
  - model: {model: demo/ft1}
    parameters: {weight: 1}
  - model: {model: {path: demo/ft2}}
  - demo/ft3
parameters:
dtype: bf16
out_dtype: torch.float16
tokenizer_source: base
`)
	if c.BaseModel != "demo/base" || c.DType != "bfloat16" || c.OutDType != "float16" || c.TokenizerSource != "base" || c.File != "t.yml" {
		t.Errorf("config = %+v", c)
	}
	var paths []string
	for _, m := range c.Models {
		paths = append(paths, m.Path)
	}
	if strings.Join(paths, " ") != "demo/ft1 demo/ft2 demo/ft3" {
		t.Errorf("models = %v", paths)
	}
	if c.Models[0].Line != 6 || c.Models[0].Parameters["weight"].Line != 7 {
		t.Errorf("lines: model %d, weight %d", c.Models[0].Line, c.Models[0].Parameters["weight"].Line)
	}
	if c.Parameters != nil || c.LayerRange != nil {
		t.Errorf("parameters %v, layer range %v", c.Parameters, c.LayerRange)
	}
	if c.OutputDType() != "float16" {
		t.Errorf("OutputDType = %q", c.OutputDType())
	}

	// linear keeps the base as an ordinary model.
	c = mustParse(t, "merge_method: linear\nbase_model: a\nmodels: [{model: a}, {model: ./b}]\n")
	if len(c.Models) != 2 {
		t.Errorf("linear models = %v", c.Models)
	}
	// ... and ./a is a, for the others.
	c = mustParse(t, "merge_method: ties\nbase_model: a\nmodels: [{model: ./a}, {model: b}]\n")
	if len(c.Models) != 1 || c.Models[0].Path != "b" {
		t.Errorf("ties models = %v", c.Models)
	}
}

func TestParseAnchorsMerge(t *testing.T) {
	c := mustParse(t, `
merge_method: ties
base_model: b
models:
  - model: m1
    parameters: &p
      density: 0.5
      weight: 0.25
  - model: m2
    parameters:
      <<: *p
      weight: 0.75
  - model: m3
    parameters: *p
`)
	w := func(i int, k string) float64 { v, _, _ := c.Float(i, k, "x", 0, 1); return v }
	if w(0, "weight") != 0.25 || w(1, "weight") != 0.75 || w(1, "density") != 0.5 || w(2, "density") != 0.5 {
		t.Errorf("anchors: %v %v %v %v", w(0, "weight"), w(1, "weight"), w(1, "density"), w(2, "density"))
	}
}

func TestParseErrorsLocated(t *testing.T) {
	cases := []struct {
		name, src string
		want      []any
	}{
		{"typo top", "merge_methd: ties\nbase_model: b\nmodels: [{model: m}]\n",
			[]any{0, "merge_method is missing", 1, "did you mean merge_method?"}},
		{"typo entry", "merge_method: ties\nmodels:\n  - model: m\n    paramters: {weight: 1}\n",
			[]any{4, "models[0]: unknown key paramters; did you mean parameters?"}},
		{"typo filter", "merge_method: ties\nmodels:\n  - model: m\n    parameters:\n      weight:\n        - filtr: mlp\n          value: 1\n",
			[]any{6, "did you mean filter?"}},
		{"pattern", "merge_method: slerp\nmodels: [{model: m}]\nparameters:\n  t:\n    - pattern: mlp\n      value: 1\n",
			[]any{5, "did you mean filter?"}},
		{"models not a list", "merge_method: ties\nmodels: demo/ft1\n",
			[]any{2, "models must be a list"}},
		{"weight is a map", "merge_method: ties\nmodels:\n  - model: m\n    parameters:\n      weight: {filter: mlp, value: 1}\n",
			[]any{5, "must be in a list"}},
		{"gradient of strings", "merge_method: ties\nmodels:\n  - model: m\n    parameters:\n      weight: [1, two, 3]\n",
			[]any{5, "element 1 is a string"}},
		{"mixed list", "merge_method: ties\nmodels:\n  - model: m\n    parameters:\n      weight: [1, {value: 2}]\n",
			[]any{5, "all numbers (a gradient) or all {filter, value} maps"}},
		{"nested filters", "merge_method: ties\nmodels:\n  - model: m\n    parameters:\n      weight:\n        - value: [{value: 1}]\n",
			[]any{6, "scalar or a list of numbers"}},
		{"missing value", "merge_method: ties\nmodels:\n  - model: m\n    parameters:\n      weight:\n        - filter: mlp\n",
			[]any{6, "value is missing"}},
		{"null param", "merge_method: ties\nmodels:\n  - model: m\n    parameters:\n      weight:\n",
			[]any{5, "weight has no value"}},
		{"model number", "merge_method: ties\nmodels:\n  - model: 2024\n",
			[]any{3, "must be a string, not the number 2024"}},
		{"duplicate key", "merge_method: ties\nmodels: [{model: m}]\nparameters:\n  density: 0.5\n  density: 0.6\n",
			[]any{5, "duplicate key density (first at line 4)"}},
		{"duplicate model", "merge_method: ties\nmodels:\n  - model: m\n  - model: ./m\n",
			[]any{4, "listed twice (first at line 3)"}},
		{"both forms", "merge_method: ties\nmodels: [{model: m}]\nslices: [{sources: [{model: m, layer_range: [0, 2]}]}]\n",
			[]any{3, "either models: (line 2) or slices:"}},
		{"no models", "merge_method: ties\nbase_model: b\n",
			[]any{0, "models: is missing"}},
		{"lora revision", "merge_method: ties\nmodels:\n  - model: {model: m, lora: {path: l, revision: main}}\n",
			[]any{3, "revision is for Hugging Face Hub models"}},
		{"modules", "merge_method: ties\nmodels: [{model: m}]\nmodules: {}\n",
			[]any{3, "modules: is not supported"}},
		{"syntax", "merge_method: ties\nmodels:\n  - model: m\n   bad: [\n",
			[]any{2, "expected '-' indicator"}},
		{"empty", "", []any{0, "empty config"}},
		{"comment only", "# nothing\n", []any{0, "empty config"}},
		{"scalar root", "ties\n", []any{1, "must be a map"}},
		{"two docs", "merge_method: ties\nmodels: [{model: m}]\n---\nx: 1\n", []any{3, "second YAML document"}},
		{"tokenizer tokens", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens: {x: {}}\n",
			[]any{5, "tokens: (per-token embedding overrides) is not supported"}},
		{"tokenizer twice", "merge_method: ties\nmodels: [{model: m}]\ntokenizer_source: base\ntokenizer: {source: union}\n",
			[]any{4, "use either tokenizer_source (line 3) or the tokenizer: block (line 4)"}},
		{"tokenizer padding", "merge_method: ties\nmodels: [{model: m}]\ntokenizer: {source: union, pad_to_multiple_of: 0.5}\n",
			[]any{3, "pad_to_multiple_of must be a whole number"}},
		{"tokenizer no source", "merge_method: ties\nmodels: [{model: m}]\ntokenizer: {pad_to_multiple_of: 8}\n",
			[]any{3, "tokenizer: source is missing"}},
		{"tokenizer empty model", "merge_method: ties\nmodels: [{model: m}]\ntokenizer_source: 'model:'\n",
			[]any{3, "names no model"}},
		{"many at once", "merge_method: ties\nbase_modle: b\nmodels:\n  - model: m\n    parameters:\n      weight: [a]\n  - modl: n\n",
			[]any{2, "did you mean base_model?", 6, "element 0 is a string", 7, "did you mean model?", 7, "model is missing"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.src), "t.yml")
			if c != nil {
				t.Errorf("config returned with the error")
			}
			wantErrors(t, err, tc.want...)
			if err != nil && tc.want[0].(int) > 0 && !strings.HasPrefix(err.Error(), "t.yml:") {
				t.Errorf("message %q does not start with file:line", err)
			}
		})
	}
}

func TestAliasBomb(t *testing.T) {
	src := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	prev := "a"
	for i := 0; i < 9; i++ {
		name := string(rune('b' + i))
		src += name + ": &" + name + " [" + strings.Repeat("*"+prev+", ", 9) + "*" + prev + "]\n"
		prev = name
	}
	src += "merge_method: ties\nmodels: [{model: m, parameters: {weight: *" + prev + "}}]\n"
	_, err := Parse([]byte(src), "bomb.yml")
	if err == nil {
		t.Fatal("alias bomb parsed")
	}
}

// dtype and out_dtype take every spelling kernels.ParseDType reads and keep
// mergekit's name for it.
func TestParseDTypeSpellings(t *testing.T) {
	for in, want := range map[string]string{
		"float32": "float32", "fp32": "float32", "f32": "float32", "F32": "float32", "torch.float32": "float32",
		"float16": "float16", "fp16": "float16", "half": "float16", "F16": "float16", "torch.float16": "float16",
		"bfloat16": "bfloat16", "bf16": "bfloat16", "BF16": "bfloat16", "torch.bfloat16": "bfloat16",
	} {
		c := mustParse(t, "merge_method: ties\nbase_model: b\nmodels: [{model: a}]\ndtype: "+in+"\nout_dtype: "+in+"\n")
		if c.DType != want || c.OutDType != want {
			t.Errorf("%s: dtype %q, out_dtype %q; want %q", in, c.DType, c.OutDType, want)
		}
	}
}

// compute_dtype is read like dtype (every spelling, canonical name kept) and
// written back by Marshal.
func TestParseComputeDType(t *testing.T) {
	for in, want := range map[string]string{"bf16": "bfloat16", "torch.bfloat16": "bfloat16", "float32": "float32", "FP32": "float32"} {
		c := mustParse(t, "merge_method: task_arithmetic\nbase_model: b\nmodels: [{model: a}]\ncompute_dtype: "+in+"\n")
		if c.ComputeDType != want {
			t.Errorf("%s: compute_dtype %q, want %q", in, c.ComputeDType, want)
		}
		if err := c.ValidateWith(nil); err != nil {
			t.Errorf("%s: %v", in, err)
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "compute_dtype: "+want+"\n") {
			t.Errorf("%s: marshalled without compute_dtype: %s", in, out)
		}
	}
}

// Every spelling of a tokenizer source reads the same way.
func TestParseTokenizerSource(t *testing.T) {
	for _, tc := range []struct {
		src, want string
		pad       int
		block     bool
	}{
		{"tokenizer_source: union\n", "union", 0, false},
		{"tokenizer_source: base\n", "base", 0, false},
		{"tokenizer_source: model:some/ft\n", "some/ft", 0, false},
		{"tokenizer_source: {model: some/ft}\n", "some/ft", 0, false},
		{"tokenizer_source: some/ft\n", "some/ft", 0, false},
		{"tokenizer: {source: union, pad_to_multiple_of: 64}\n", "union", 64, true},
		{"tokenizer:\n  source: model:x\n", "x", 0, true},
	} {
		c := mustParse(t, "merge_method: ties\nbase_model: b\nmodels: [{model: a}]\n"+tc.src)
		if c.TokenizerSource != tc.want || c.PadToMultipleOf != tc.pad || c.TokenizerBlock != tc.block {
			t.Errorf("%q: source %q, pad %d, block %v; want %q, %d, %v", tc.src, c.TokenizerSource, c.PadToMultipleOf, c.TokenizerBlock, tc.want, tc.pad, tc.block)
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back := mustParse(t, string(out))
		if back.TokenizerSource != c.TokenizerSource || back.PadToMultipleOf != c.PadToMultipleOf || back.TokenizerBlock != c.TokenizerBlock {
			t.Errorf("%q: marshalled as\n%s\nreads back as %q, %d, %v", tc.src, out, back.TokenizerSource, back.PadToMultipleOf, back.TokenizerBlock)
		}
	}
}
