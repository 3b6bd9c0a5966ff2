package config

import (
	"encoding/json"
	"fmt"
	"slices"
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
		{"tokens no source", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens:\n    x: {}\n",
			[]any{6, `tokenizer.tokens["x"] has no source (source: MODEL, source: {kind: zero}`}},
		{"tokens null entry", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens:\n    x:\n",
			[]any{6, `tokenizer.tokens["x"] has no source`}},
		{"tokens null source", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens:\n    x: {source: null, force: true}\n",
			[]any{6, `tokenizer.tokens["x"].source has no value`}},
		{"tokens entry not a map", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens:\n    x: m\n",
			[]any{6, `tokenizer.tokens["x"] must be a map ({source: ..., force: ...}), not a string`}},
		{"tokens not a map", "merge_method: ties\nmodels: [{model: m}]\ntokenizer: {source: union, tokens: [x]}\n",
			[]any{3, "tokenizer.tokens must be a map of token to {source: ..., force: ...}, not a list"}},
		{"tokens typo", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens:\n    x: {source: m, forse: true}\n",
			[]any{6, `tokenizer.tokens["x"]: unknown key forse; did you mean force?`}},
		{"tokens force", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens:\n    x: {source: m, force: 1}\n",
			[]any{6, `tokenizer.tokens["x"].force must be true or false, not the number 1`}},
		{"tokens unknown kind", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens:\n    x: {source: {kind: mean}}\n",
			[]any{6, `tokenizer.tokens["x"].source: unknown kind mean (zero or model_token)`}},
		{"tokens zero with model", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens:\n    x: {source: {kind: zero, model: m}}\n",
			[]any{6, `tokenizer.tokens["x"].source: {kind: zero} takes no model`}},
		{"tokens model_token no token", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens:\n    x: {source: {kind: model_token, model: m}}\n",
			[]any{6, `{kind: model_token} needs token: TOKEN or token_id: ID`}},
		{"tokens model_token no model", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens:\n    x: {source: {kind: model_token, token: y}}\n",
			[]any{6, `{kind: model_token} needs model: (a model of the merge)`}},
		{"tokens model_token both", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens:\n    x:\n      source:\n        kind: model_token\n        model: m\n        token: y\n        token_id: 2\n",
			[]any{11, `tokenizer.tokens["x"].source: give token or token_id, not both`}},
		{"tokens negative id", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens:\n    x:\n      source: {kind: model_token, model: m,\n        token_id: -1}\n",
			[]any{8, `tokenizer.tokens["x"].source.token_id must be a whole number from 0`}},
		{"tokens fractional id", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens:\n    x: {source: {kind: model_token, model: m, token_id: 1.5}}\n",
			[]any{6, `token_id must be a whole number from 0 (a row of the model's embedding), not 1.5`}},
		{"tokens empty token", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens:\n    \"\": {source: m}\n",
			[]any{6, `tokenizer.tokens[""]: the token is empty`}},
		{"tokens twice", "merge_method: ties\nmodels: [{model: m}]\ntokenizer:\n  source: union\n  tokens:\n    x: {source: m}\n    x: {source: {kind: zero}}\n",
			[]any{7, "duplicate key x (first at line 6)"}},
		{"tokens in tokenizer_source", "merge_method: ties\nmodels: [{model: m}]\ntokenizer_source: {model: m, tokens: {x: {source: m}}}\n",
			[]any{3, "tokens: (per-token embedding overrides) belongs in the tokenizer: block"}},
		{"tokens at the top", "merge_method: ties\nmodels: [{model: m}]\ntokenizer_source: union\ntokens: {x: {source: m}}\n",
			[]any{4, "tokens: (per-token embedding overrides) belongs in the tokenizer: block"}},
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

// Every form of a tokens: entry reads as written, in order, and Marshal
// writes it back; the legacy tokenizer_source takes no tokens.
func TestParseTokens(t *testing.T) {
	c := mustParse(t, `merge_method: ties
base_model: demo/base
models: [{model: demo/ft1}, {model: demo/ft2}]
tokenizer:
  source: union
  tokens:
    <|im_start|>:
      source: demo/ft1
    <|im_end|>:
      source: {kind: model_token, model: demo/ft2, token: "</s>"}
      force: true
    <|unused|>:
      source: {kind: zero}
      force: no
    by_id:
      source:
        kind: model_token
        model: {model: demo/base}
        token_id: 2
    "yes":
      source: {model: demo/ft2}
      force: yes
`)
	want := []TokenOverride{
		{Token: "<|im_start|>", Source: TokenFromModel, Model: "demo/ft1", Line: 7},
		{Token: "<|im_end|>", Source: TokenModelToken, Model: "demo/ft2", FromToken: "</s>", Force: true, Line: 9},
		{Token: "<|unused|>", Source: TokenZero, Line: 12},
		{Token: "by_id", Source: TokenModelToken, Model: "demo/base", FromID: 2, ByID: true, Line: 15},
		{Token: "yes", Source: TokenFromModel, Model: "demo/ft2", Force: true, Line: 20},
	}
	if !slices.Equal(c.Tokens, want) {
		t.Errorf("tokens\n%+v\nwant\n%+v", c.Tokens, want)
	}
	if err := c.ValidateWith(nil); err != nil {
		t.Error(err)
	}
	out := roundTrip(t, c)
	if !strings.Contains(string(out), "tokens:") {
		t.Errorf("marshalled without tokens:\n%s", out)
	}

	// Tokens YAML would read otherwise survive the round trip.
	var odd strings.Builder
	odd.WriteString("merge_method: ties\nbase_model: b\nmodels: [{model: a}]\ntokenizer:\n  source: base\n  tokens:\n")
	for i, tok := range []string{"<<", "yes", "null", "~", "1", "0x10", " a", "a: b", "#x", "\t", "\u0120the", "[x]", "{y}", "- z", "'q'", "\"r\""} {
		quoted, _ := json.Marshal(tok)
		fmt.Fprintf(&odd, "    %s: {source: {kind: model_token, model: a, token: %s}, force: %v}\n", quoted, quoted, i%2 == 0)
	}
	c = mustParse(t, odd.String())
	if len(c.Tokens) != 16 || c.Tokens[0].Token != "<<" || c.Tokens[0].FromToken != "<<" || c.Tokens[10].Token != "\u0120the" {
		t.Errorf("odd tokens read as %+v", c.Tokens)
	}
	roundTrip(t, c)
}

// A model tokens: names must be a model of the merge, matched by path.
func TestValidateTokens(t *testing.T) {
	for _, tc := range []struct {
		model string
		ok    bool
	}{
		{"b", true}, {"./b", true}, {"a", true}, {"a/", true}, {"c", false},
	} {
		for _, src := range []string{tc.model, "{kind: model_token, model: " + tc.model + ", token_id: 0}"} {
			c := mustParse(t, "merge_method: ties\nbase_model: b\nmodels: [{model: a}]\ntokenizer:\n  source: union\n  tokens:\n    x: {source: "+src+"}\n    z: {source: {kind: zero}}\n")
			err := c.ValidateWith(nil)
			if tc.ok {
				if err != nil {
					t.Errorf("%s: %v", src, err)
				}
				continue
			}
			wantErrors(t, err, 7, `tokenizer.tokens["x"]: c is not a model of the merge`)
		}
	}
	c := mustParse(t, "merge_method: passthrough\nslices:\n  - sources: [{model: s1, layer_range: [0, 2]}]\n  - sources: [{model: s2, layer_range: [2, 4]}]\ntokenizer: {source: base, tokens: {x: {source: s2}}}\n")
	if err := c.ValidateWith(nil); err != nil {
		t.Errorf("a slice's model: %v", err)
	}
}
