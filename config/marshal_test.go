package config

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// equalConfig compares configs, lines and file aside.
func equalConfig(a, b *Config) bool {
	if a.Method != b.Method || a.BaseModel != b.BaseModel || a.DType != b.DType || a.OutDType != b.OutDType ||
		a.TokenizerSource != b.TokenizerSource || len(a.Models) != len(b.Models) || !equalParams(a.Parameters, b.Parameters) {
		return false
	}
	if !equalTokens(a.Tokens, b.Tokens) {
		return false
	}
	if (a.LayerRange == nil) != (b.LayerRange == nil) || (a.LayerRange != nil && *a.LayerRange != *b.LayerRange) {
		return false
	}
	for i := range a.Models {
		if a.Models[i].Path != b.Models[i].Path || !equalParams(a.Models[i].Parameters, b.Models[i].Parameters) {
			return false
		}
	}
	return true
}

// equalTokens compares token overrides, lines aside.
func equalTokens(a, b []TokenOverride) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		x.Line, y.Line = 0, 0
		if x != y {
			return false
		}
	}
	return true
}

func roundTrip(t *testing.T, c *Config) []byte {
	t.Helper()
	out, err := c.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	c2, err := Parse(out, "marshalled.yml")
	if err != nil {
		t.Fatalf("Parse(Marshal): %v\n%s", err, out)
	}
	if !equalConfig(c, c2) {
		t.Fatalf("round trip differs:\n%+v\n%+v\n%s", c, c2, out)
	}
	out2, err := c2.Marshal()
	if err != nil || !bytes.Equal(out, out2) {
		t.Fatalf("Marshal not stable: %v\n%s\n---\n%s", err, out, out2)
	}
	return out
}

func demoStat(name string) (fs.FileInfo, error) {
	switch name {
	case "demo/base", "demo/ft1", "demo/ft2", "demo/ft3", "demo/lora1":
		return fakeInfo{name}, nil
	}
	return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
}

func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../examples/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	methods := map[string]bool{}
	for _, f := range files {
		c, err := Load(f)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if err := c.ValidateWith(demoStat); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		methods[c.Method] = true
		// A file is named after its method, a variant with a suffix after a dash;
		// tokenizer_*.yml show a tokenizer_source with any method.
		name := strings.TrimSuffix(filepath.Base(f), ".yml")
		if want, _, _ := strings.Cut(name, "-"); want != c.Method && !strings.HasPrefix(name, "tokenizer_") {
			t.Errorf("%s holds merge_method %s", f, c.Method)
		}
		roundTrip(t, c)
		var buf bytes.Buffer
		if err := c.Explain(&buf, []string{"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"}, 4); err != nil {
			t.Errorf("%s: Explain: %v", f, err)
		}
	}
	for _, m := range KnownMethods() {
		if !methods[m] {
			t.Errorf("no example for %s", m)
		}
	}
	c, err := Load("../examples/ties-paper.yml")
	if err != nil {
		t.Fatal(err)
	}
	if s, _, _ := c.Str(-1, "preset", "", -1, 1); s != "paper" {
		t.Errorf("ties-paper preset = %q", s)
	}
	if _, err := Load("../examples/nope.yml"); err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("Load of a missing file: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestMarshal(t *testing.T) {
	c := mustParse(t, `
merge_method: ties
base_model: "base model"
models:
  - model: "true"
    parameters:
      weight: [0, 0.1, 1e-07, -3]
      density:
        - filter: "*"
          value: 0.5
  - model: "1.5"
    parameters:
      label: "yes"
      flag: no
      big: 1e300
parameters:
  weight:
    - filter: mlp
      value: [1, 2]
    - value: 0.5
  lambda: .nan
  preset: paper
dtype: float32
tokenizer_source: base
`)
	out := roundTrip(t, c)
	want := `merge_method: ties
base_model: base model
models:
  - model: "true"
    parameters:
      weight: [0, 0.1, 1e-07, -3]
      density:
        - filter: '*'
          value: 0.5
  - model: "1.5"
    parameters:
      big: 1e+300
      flag: false
      label: "yes"
parameters:
  weight:
    - filter: mlp
      value: [1, 2]
    - value: 0.5
  lambda: .nan
  preset: paper
dtype: float32
tokenizer_source: base
`
	if string(out) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", out, want)
	}

	// A slices config comes back as written.
	c = mustParse(t, `
merge_method: ties
base_model: b
slices:
  - sources: [{model: a, layer_range: [0, 4], parameters: {weight: 1}}]
  - sources: [{model: a, layer_range: [4, 8], parameters: {weight: 1}}]
`)
	out = roundTrip(t, c)
	if !strings.Contains(string(out), "slices:\n  - sources:\n      - model: a\n        layer_range: [0, 4]\n        parameters:\n          weight: 1\n  - sources:\n      - model: a\n        layer_range: [4, 8]\n") {
		t.Errorf("slices Marshal:\n%s", out)
	}
	// Hand-built configs with unset values refuse to marshal.
	if _, err := (&Config{Method: "ties", Parameters: Params{"weight": {}}}).Marshal(); err == nil {
		t.Errorf("Marshal of an unset parameter: no error")
	}
}

func TestExplain(t *testing.T) {
	c := mustParse(t, `
merge_method: ties
base_model: demo/base
models:
  - model: demo/ft1
    parameters:
      density: [1, 0.5]
      weight:
        - filter: mlp
          value: 2
  - model: demo/ft2
parameters:
  weight: 1
  preset: paper
`)
	var buf bytes.Buffer
	if err := c.Explain(&buf, []string{"model.embed_tokens.weight", "model.layers.2.mlp.up_proj.weight"}, 3); err != nil {
		t.Fatal(err)
	}
	want := `merge_method: ties  base_model: demo/base  preset: paper
tensor                             layer  model     weight  density
model.embed_tokens.weight          -      demo/ft1  1       1
                                   -      demo/ft2  1       -
model.layers.2.mlp.up_proj.weight  2      demo/ft1  2       0.5
                                   2      demo/ft2  1       -
`
	if buf.String() != want {
		t.Errorf("Explain =\n%s\nwant\n%s", buf.String(), want)
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../examples/*.yml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("merge_method: ties\nslices:\n  - sources: [{model: a, layer_range: [0, 2], parameters: {w: [{filter: x, value: 1}]}}]\n    parameters: {w: [{value: [1, 2]}]}\nparameters: {w: 3}\n"))
	f.Add([]byte("a: &a {model: m}\nmerge_method: x\nmodels: [*a, {<<: *a, parameters: {q: yes}}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yml")
		if err != nil {
			located(t, err)
			return
		}
		_ = c.ValidateWith(nil)
		var buf bytes.Buffer
		_ = c.Explain(&buf, []string{"model.layers.1.mlp.weight", "lm_head.weight"}, 3)
		roundTrip(t, c)
	})
}
