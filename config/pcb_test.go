package config

import (
	"strings"
	"testing"
)

// pcb: its parameters and their forms, the model count, and the clip list
// in --explain's header.
func TestValidatePCB(t *testing.T) {
	for _, src := range []string{
		"merge_method: pcb\nbase_model: b\nmodels: [{model: a}, {model: c}]\n",
		"merge_method: pcb\nbase_model: b\nmodels: [{model: a}, {model: c}]\nparameters: {ratio: 0.2, clip: [0.01, 0.001], lambda: 1.5, scope: tensor, inter: pairwise}\n",
		"merge_method: pcb\nbase_model: b\nmodels:\n  - model: a\n    parameters: {weight: 1.2}\n  - model: c\nparameters: {clip: 0, ratio: 1, inter: normsum, scope: model}\n",
	} {
		if err := validate(t, src); err != nil {
			t.Errorf("%s: %v", src, err)
		}
	}
	head := "merge_method: pcb\nbase_model: b\nmodels: [{model: a}, {model: c}]\nparameters:\n"
	cases := []struct {
		name, src string
		want      []any
	}{
		{"one model", "merge_method: pcb\nbase_model: b\nmodels: [{model: a}]\n",
			[]any{3, "pcb needs at least two models besides the base model"}},
		{"ratio 0", head + "  ratio: 0\n", []any{5, "ratio 0 must be in (0, 1]"}},
		{"ratio above 1", head + "  ratio: 1.5\n", []any{5, "ratio 1.5 must be in (0, 1]"}},
		{"ratio gradient", head + "  ratio: [0.1, 0.2]\n", []any{5, "ratio must be one number"}},
		{"ratio per model", "merge_method: pcb\nbase_model: b\nmodels:\n  - model: a\n    parameters: {ratio: 0.1}\n  - model: c\n",
			[]any{5, "ratio is a tiesmm setting for the whole merge"}},
		{"clip three", head + "  clip: [0.1, 0.2, 0.3]\n", []any{5, "clip must be one number (lo and hi alike) or a list of two, [lo, hi], not a list of 3 numbers"}},
		{"clip negative", head + "  clip: [-0.1, 0.2]\n", []any{5, "clip[0] -0.1 must be in [0, 1)"}},
		{"clip one", head + "  clip: 1\n", []any{5, "clip 1 must be in [0, 1)"}},
		{"scope", head + "  scope: layer\n", []any{5, "scope must be one of model, tensor"}},
		{"inter", head + "  inter: max\n", []any{5, "inter must be one of sum, normsum, pairwise"}},
		{"density", head + "  density: 0.5\n", []any{5, "density is not a parameter of pcb"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { wantErrors(t, validate(t, c.src), c.want...) })
	}
	c, err := Parse([]byte(head+"  clip: [0.01, 0.02]\n  ratio: 0.2\n"), "pcb.yml")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := c.Explain(&b, []string{"w"}, 1); err != nil {
		t.Fatal(err)
	}
	if first, _, _ := strings.Cut(b.String(), "\n"); !strings.Contains(first, "clip: [0.01 0.02]") || !strings.Contains(first, "ratio: 0.2") {
		t.Errorf("explain's header %q lacks the clip list or the ratio", first)
	}
}
