package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func validate(t *testing.T, src string) error {
	t.Helper()
	return mustParse(t, src).ValidateWith(nil)
}

func TestValidateOK(t *testing.T) {
	for _, src := range []string{
		"merge_method: linear\nmodels: [{model: a}, {model: b}]\n", // no weights: the engine's 1
		"merge_method: ties\nbase_model: b\nmodels: [{model: a}]\nparameters: {density: 1, int8_mask: whatever}\n",
		"merge_method: dare_ties\nbase_model: b\nmodels: [{model: a, parameters: {int8_mask: true}}]\nparameters: {rescale: inverse}\n",
		"merge_method: dare_linear\nbase_model: b\nmodels: [{model: a}]\nparameters: {rescale: false}\n",
		"merge_method: model_stock\nbase_model: b\nmodels: [{model: a}, {model: c}]\nparameters: {filter_wise: false}\n",
		"merge_method: della\nbase_model: b\nmodels: [{model: a, parameters: {density: [0.3, 0.8]}}]\nparameters: {epsilon: [0.2, 0.1]}\n",
		"merge_method: della\nbase_model: b\nmodels: [{model: a, parameters: {density: 1}}]\nparameters: {epsilon: 0.5}\n",
		"merge_method: breadcrumbs\nbase_model: b\nmodels: [{model: a}]\nparameters: {gamma: 0, density: 0.9}\n",
		"merge_method: ties\nbase_model: b\nmodels: [{model: a}]\nparameters: {preset: peft, trim_scope: tensor, consensus: count, aggregate: max, weight: -0.5}\n",
	} {
		if err := validate(t, src); err != nil {
			t.Errorf("%s: %v", src, err)
		}
	}
}

func TestValidateErrors(t *testing.T) {
	cases := []struct {
		name, src string
		want      []any
	}{
		{"param typo", "merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters:\n      dentsity: 0.5\n",
			[]any{6, "unknown parameter dentsity; did you mean density?"}},
		{"param of another method", "merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.5}\n",
			[]any{4, "density is not a parameter of linear (it is of ties, dare_ties"}},
		{"unknown param", "merge_method: linear\nmodels: [{model: a}]\nparameters:\n  zeta: 0.5\n",
			[]any{4, "unknown parameter zeta (linear takes weight, normalize, int8_mask)"}},
		{"density range", "merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters:\n      density: 1.5\n      weight: [1, .nan]\n",
			[]any{6, "density 1.5 must be in (0, 1]", 7, "weight[1] NaN must be a finite number"}},
		{"density zero in filter", "merge_method: ties\nbase_model: b\nmodels: [{model: a}]\nparameters:\n  density:\n    - filter: mlp\n      value: [0.5, 0]\n",
			[]any{7, "density[0][1] 0 must be in (0, 1]"}},
		{"gamma", "merge_method: breadcrumbs_ties\nbase_model: b\nmodels: [{model: a}]\nparameters: {gamma: 1}\n",
			[]any{4, "gamma 1 must be in [0, 1)"}},
		{"della epsilon", "merge_method: della\nbase_model: b\nmodels:\n  - model: a\n    parameters:\n      density: [0.5, 0.9]\nparameters:\n  epsilon: 0.15\n",
			[]any{6, "density 0.9 and epsilon 0.15 (line 8) give [0.75, 1.05]"}},
		{"della epsilon low", "merge_method: della_linear\nbase_model: b\nmodels: [{model: a}]\nparameters:\n  density: 0.1\n  epsilon: 0.1\n",
			[]any{5, "give [0, 0.2]"}},
		{"lambda per model", "merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters: {lambda: 2}\n",
			[]any{5, "lambda is a global parameter (mergekit ignores it per model)"}},
		{"preset per model", "merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters: {preset: paper}\n",
			[]any{5, "preset is a tiesmm setting for the whole merge"}},
		{"bad enums", "merge_method: ties\nbase_model: b\nmodels: [{model: a}]\nparameters:\n  preset: papr\n  trim_scope: [0]\n  consensus: 1\n",
			[]any{5, "preset must be one of paper, mergekit, peft, not the string \"papr\"", 6, "trim_scope must be one of model, tensor, not a gradient",
				7, "consensus must be one of sum, count, not the number 1"}},
		{"trim_scope for dare", "merge_method: dare_ties\nbase_model: b\nmodels: [{model: a}]\nparameters: {trim_scope: model}\n",
			[]any{4, "trim_scope is not a parameter of dare_ties (it is of ties)"}},
		{"types", "merge_method: dare_ties\nbase_model: b\nmodels:\n  - model: a\n    parameters: {weight: \"1\"}\nparameters:\n  normalize: 1\n  rescale: l2\n",
			[]any{5, "weight must be a number or a gradient (list of numbers), not the string \"1\"", 7, "normalize must be true or false, not the number 1",
				8, "rescale must be true, false, l1 or inverse, not the string \"l2\""}},
		{"bool gradient", "merge_method: ties\nbase_model: b\nmodels: [{model: a}]\nparameters:\n  normalize: [1, 0]\n",
			[]any{5, "normalize must be true or false, not a gradient"}},
		{"filter_wise", "merge_method: model_stock\nbase_model: b\nmodels: [{model: a}, {model: c}]\nparameters: {filter_wise: true}\n",
			[]any{4, "filter_wise: true is not supported"}},
		{"no base", "merge_method: task_arithmetic\nmodels: [{model: a}]\n",
			[]any{1, "task_arithmetic needs base_model"}},
		{"only the base", "merge_method: ties\nbase_model: b\nmodels: [{model: b}]\n",
			[]any{3, "ties needs at least one model besides the base model"}},
		{"model_stock one", "merge_method: model_stock\nbase_model: b\nmodels: [{model: b}, {model: a}]\n",
			[]any{3, "model_stock needs at least two models"}},
		{"mergekit method", "merge_method: ranked_ties\nbase_model: b\nmodels: [{model: a}]\n",
			[]any{1, "ranked_ties is a mergekit method tiesmm does not implement"}},
		{"method typo", "merge_method: dare-ties\nbase_model: b\nmodels: [{model: a}]\n",
			[]any{1, "unknown merge_method dare-ties; did you mean dare_ties?"}},
		{"dtype", "merge_method: ties\nbase_model: b\nmodels: [{model: a}]\ndtype: int8\nout_dtype: float8\n",
			[]any{4, "dtype int8 is not supported", 5, "out_dtype float8 is not supported"}},
		{"compute_dtype", "merge_method: task_arithmetic\nbase_model: b\nmodels: [{model: a}]\ncompute_dtype: float16\n",
			[]any{4, "compute_dtype float16 is not supported (float32, or bfloat16"}},
		// Everything at once, sorted by line.
		{"all together", "merge_method: ties\nmodels:\n  - model: a\n    parameters:\n      density: 0\n      wieght: 1\nparameters:\n  lambda: .inf\ndtype: fp8\n",
			[]any{1, "needs base_model", 5, "density 0 must be in (0, 1]", 6, "did you mean weight?", 8, "lambda +Inf must be a finite number", 9, "dtype fp8"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantErrors(t, validate(t, tc.src), tc.want...)
		})
	}
}

// A config built by hand (the flag form) has no lines: messages carry none.
func TestValidateHandBuilt(t *testing.T) {
	c := &Config{Method: "ties", BaseModel: "b", Models: []ModelEntry{{Path: "a", Parameters: Params{"density": NumberParam(2)}}},
		Parameters: Params{"preset": StringParam("paper"), "normalize": BoolParam(true), "weight": GradientParam(1, 0.5)}}
	err := c.ValidateWith(nil)
	if err == nil || err.Error() != "model a (models[0]): density 2 must be in (0, 1]: the fraction of each task vector kept" {
		t.Errorf("err = %v", err)
	}
}

type fakeInfo struct{ name string }

func (f fakeInfo) Name() string       { return f.name }
func (f fakeInfo) Size() int64        { return 0 }
func (f fakeInfo) Mode() fs.FileMode  { return fs.ModeDir }
func (f fakeInfo) ModTime() time.Time { return time.Time{} }
func (f fakeInfo) IsDir() bool        { return true }
func (f fakeInfo) Sys() any           { return nil }

func TestValidatePaths(t *testing.T) {
	src := "merge_method: ties\nbase_model: meta-llama/Llama-3.1-8B\nmodels:\n  - model: ./ft1\n  - model: /data/ft2\n  - model: here\n  - model: org/ft3@v2\n  - model: locked\n"
	c := mustParse(t, src)
	stat := func(name string) (fs.FileInfo, error) {
		switch name {
		case "here":
			return fakeInfo{name}, nil
		case "locked":
			return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrPermission}
		}
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
	}
	wantErrors(t, c.ValidateWith(stat),
		2, "base_model meta-llama/Llama-3.1-8B: no such file or directory; it looks like a Hugging Face Hub name; tiesmm reads local paths only: download it first (huggingface-cli download meta-llama/Llama-3.1-8B --local-dir DIR) and use DIR",
		4, "model ./ft1: no such file or directory (relative paths are from the current directory",
		5, "model /data/ft2: no such file or directory",
		7, "huggingface-cli download org/ft3 --local-dir DIR",
		8, "permission denied")

	// The real file system, relative to the working directory.
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "ft"), 0o755); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	t.Cleanup(func() { os.Chdir(wd) })
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	c = mustParse(t, "merge_method: ties\nbase_model: ft\nmodels: [{model: ft}, {model: nope/x}]\n")
	err := c.Validate()
	es := located(t, err)
	if len(es) != 1 || !strings.Contains(es[0].Msg, "looks like a Hugging Face Hub name") {
		t.Errorf("Validate = %v", err)
	}
	if !errors.As(err, new(*Error)) {
		t.Errorf("not an *Error")
	}
}

func TestKnown(t *testing.T) {
	if got := strings.Join(KnownMethods(), " "); got != "task_arithmetic ties dare_ties dare_linear breadcrumbs breadcrumbs_ties della della_linear linear model_stock multislerp karcher nearswap sce arcee_fusion slerp nuslerp passthrough emr pcb" {
		t.Errorf("KnownMethods = %s", got)
	}
	for _, m := range KnownMethods() {
		ps := KnownParams(m)
		if !contains(ps, "int8_mask") && m != "slerp" && m != "nuslerp" && m != "passthrough" && m != "pcb" {
			t.Errorf("%s does not accept int8_mask", m)
		}
		for _, p := range ps {
			if _, ok := specs[p]; !ok {
				t.Errorf("%s: parameter %s has no spec", m, p)
			}
		}
		if NeedsBase(m) != (m != "linear" && m != "multislerp" && m != "karcher" && m != "nuslerp" && m != "passthrough") {
			t.Errorf("NeedsBase(%s)", m)
		}
	}
	if KnownParams("ranked_ties") != nil || !TopLevelOnly("lambda") || !TopLevelOnly("preset") || TopLevelOnly("weight") {
		t.Errorf("KnownParams / TopLevelOnly")
	}
}
