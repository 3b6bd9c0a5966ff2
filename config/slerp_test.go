package config

import "testing"

func TestValidateSlerp(t *testing.T) {
	for _, src := range []string{
		"merge_method: slerp\nbase_model: b\nmodels: [{model: b}, {model: a}]\nparameters: {t: [0, 0.5, 1]}\n",
		"merge_method: slerp\nbase_model: b\nmodels: [{model: b}]\nparameters: {t: 0.5}\n",
		"merge_method: slerp\nbase_model: b\nmodels: [{model: a}]\nparameters:\n  t:\n    - filter: mlp\n      value: 0.3\n    - value: 1.2\n",
		"merge_method: nuslerp\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1}}, {model: c, parameters: {weight: 2}}]\n",
		"merge_method: nuslerp\nmodels: [{model: a}, {model: c}]\nparameters: {weight: 1, nuslerp_flatten: false, nuslerp_row_wise: true}\n",
	} {
		if err := validate(t, src); err != nil {
			t.Errorf("%s: %v", src, err)
		}
	}
	cases := []struct {
		name, src string
		want      []any
	}{
		{"slerp without t", "merge_method: slerp\nbase_model: b\nmodels: [{model: a}]\n",
			[]any{1, "slerp needs the parameter t"}},
		{"slerp two models", "merge_method: slerp\nbase_model: b\nmodels: [{model: a}, {model: c}]\nparameters: {t: 0.5}\n",
			[]any{3, "slerp needs one model besides the base model (it interpolates from the base, t = 0, to that model, t = 1), got 2"}},
		{"slerp no base", "merge_method: slerp\nmodels: [{model: a}]\nparameters: {t: 0.5}\n",
			[]any{1, "slerp needs base_model"}},
		{"t per model", "merge_method: slerp\nbase_model: b\nmodels:\n  - model: a\n    parameters: {t: 0.5}\nparameters: {t: 0.5}\n",
			[]any{5, "t is a global parameter"}},
		{"t not finite", "merge_method: slerp\nbase_model: b\nmodels: [{model: a}]\nparameters:\n  t: .nan\n",
			[]any{5, "t NaN must be a finite number"}},
		{"nuslerp three", "merge_method: nuslerp\nbase_model: b\nmodels: [{model: a}, {model: c}, {model: d}]\nparameters: {weight: 1}\n",
			[]any{3, "nuslerp needs exactly two models besides the base model, got 3"}},
		{"nuslerp one without base", "merge_method: nuslerp\nmodels: [{model: a}]\nparameters: {weight: 1}\n",
			[]any{2, "nuslerp needs exactly two models (no base_model given), got 1"}},
		{"nuslerp weight missing", "merge_method: nuslerp\nbase_model: b\nmodels:\n  - model: a\n    parameters: {weight: 1}\n  - model: c\n",
			[]any{6, "model c (models[1]): nuslerp needs a weight for every model"}},
		{"nuslerp switch type", "merge_method: nuslerp\nbase_model: b\nmodels: [{model: a}, {model: c}]\nparameters:\n  weight: 1\n  nuslerp_flatten: 0\n",
			[]any{6, "nuslerp_flatten must be true or false"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantErrors(t, validate(t, tc.src), tc.want...)
		})
	}
}
