package config

import "testing"

// nearswap, sce and arcee_fusion: their parameters, model counts and nearswap's
// required t.
func TestValidateOwnMethods(t *testing.T) {
	for _, src := range []string{
		"merge_method: nearswap\nbase_model: b\nmodels: [{model: a}]\nparameters: {t: 0.001}\n",
		"merge_method: nearswap\nbase_model: b\nmodels: [{model: b}, {model: a}]\nparameters:\n  t: [0.001, 0.01]\n",
		"merge_method: sce\nbase_model: b\nmodels: [{model: a}, {model: c}]\nparameters: {select_topk: 0.1}\n",
		"merge_method: sce\nbase_model: b\nmodels: [{model: a}]\n",
		"merge_method: arcee_fusion\nbase_model: b\nmodels: [{model: b}, {model: a}]\n",
	} {
		if err := validate(t, src); err != nil {
			t.Errorf("%s: %v", src, err)
		}
	}
	cases := []struct {
		name, src string
		want      []any
	}{
		{"nearswap without t", "merge_method: nearswap\nbase_model: b\nmodels: [{model: a}]\n",
			[]any{1, "nearswap needs t under the top-level parameters"}},
		{"nearswap two models", "merge_method: nearswap\nbase_model: b\nmodels: [{model: a}, {model: c}]\nparameters: {t: 0.5}\n",
			[]any{3, "nearswap needs exactly one model besides the base model, not 2"}},
		{"nearswap t per model", "merge_method: nearswap\nbase_model: b\nmodels:\n  - model: a\n    parameters: {t: 0.5}\nparameters: {t: 0.5}\n",
			[]any{5, "t is a global parameter"}},
		{"nearswap t not finite", "merge_method: nearswap\nbase_model: b\nmodels: [{model: a}]\nparameters:\n  t: .inf\n",
			[]any{5, "t +Inf must be a finite number"}},
		{"arcee_fusion only the base", "merge_method: arcee_fusion\nbase_model: b\nmodels: [{model: b}]\n",
			[]any{3, "arcee_fusion needs at least one model besides the base model"}},
		{"arcee_fusion three", "merge_method: arcee_fusion\nbase_model: b\nmodels: [{model: a}, {model: c}, {model: b}]\n",
			[]any{3, "arcee_fusion needs exactly one model besides the base model, not 2"}},
		{"arcee_fusion no base", "merge_method: arcee_fusion\nmodels: [{model: a}, {model: c}]\n",
			[]any{1, "arcee_fusion needs base_model", 2, "not 2"}},
		{"sce weight", "merge_method: sce\nbase_model: b\nmodels:\n  - model: a\n    parameters: {weight: 1}\n",
			[]any{5, "weight is not a parameter of sce"}},
		{"sce select_topk per model", "merge_method: sce\nbase_model: b\nmodels:\n  - model: a\n    parameters: {select_topk: 0.5}\n",
			[]any{5, "select_topk is a global parameter"}},
		{"sce only the base", "merge_method: sce\nbase_model: b\nmodels: [{model: b}]\n",
			[]any{3, "sce needs at least one model besides the base model"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { wantErrors(t, validate(t, c.src), c.want...) })
	}
}
