package config

import (
	"strings"
	"testing"
)

func TestValidateSphereMethods(t *testing.T) {
	for _, src := range []string{
		"merge_method: multislerp\nmodels: [{model: a, parameters: {weight: 1}}, {model: c, parameters: {weight: 2}}]\n",
		"merge_method: multislerp\nbase_model: b\nmodels: [{model: a}, {model: c}]\nparameters: {weight: 1, normalize_weights: false, eps: 0}\n",
		"merge_method: multislerp\nmodels: [{model: a, parameters: {weight: 1}}, {model: c, parameters: {weight: -1}}]\nparameters: {normalize_weights: false}\n",
		"merge_method: karcher\nmodels: [{model: a}, {model: c}]\nparameters: {max_iter: 0, tol: 1e-6}\n",
		"merge_method: karcher\nbase_model: b\nmodels: [{model: a}]\n",
	} {
		if err := validate(t, src); err != nil {
			t.Errorf("%s: %v", src, err)
		}
	}
	cases := []struct {
		name, src string
		want      []any
	}{
		{"multislerp no weight", "merge_method: multislerp\nbase_model: b\nmodels:\n  - model: a\n    parameters: {weight: 1}\n  - model: c\n",
			[]any{6, "model c (models[1]): multislerp needs a weight for each model"}},
		{"multislerp weights sum to 0", "merge_method: multislerp\nmodels:\n  - model: a\n    parameters: {weight: 1}\n  - model: c\n    parameters: {weight: -1}\n",
			[]any{2, "the weights sum to 0"}},
		{"multislerp no models", "merge_method: multislerp\nbase_model: b\nmodels: [{model: b}]\n",
			[]any{3, "no models to merge"}},
		{"multislerp eps", "merge_method: multislerp\nmodels: [{model: a, parameters: {weight: 1}}]\nparameters:\n  eps: -1\n  tol: 1\n",
			[]any{4, "eps -1 must be a finite number ≥ 0", 5, "tol is not a parameter of multislerp (it is of karcher)"}},
		{"karcher params", "merge_method: karcher\nmodels:\n  - model: a\n    parameters: {weight: 1, tol: 0.1}\nparameters:\n  max_iter: 2.5\n",
			[]any{4, "tol is a global parameter", 4, "weight is not a parameter of karcher", 6, "max_iter 2.5 must be a whole number"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantErrors(t, validate(t, tc.src), tc.want...)
		})
	}
}

// karcher averages every input: the base joins the models, last unless
// listed, where it keeps its place.
func TestKarcherJoinsBase(t *testing.T) {
	paths := func(c *Config) string {
		var ps []string
		for _, m := range c.Models {
			ps = append(ps, m.Path)
		}
		return strings.Join(ps, " ")
	}
	c := mustParse(t, "merge_method: karcher\nbase_model: b\nmodels: [{model: a}, {model: c}]\n")
	if got := paths(c); got != "a c b" {
		t.Errorf("models %s, want a c b", got)
	}
	c = mustParse(t, "merge_method: karcher\nbase_model: b\nmodels: [{model: b}, {model: a}]\n")
	if got := paths(c); got != "b a" {
		t.Errorf("models %s, want b a", got)
	}
	c = mustParse(t, "merge_method: multislerp\nbase_model: b\nmodels: [{model: b}, {model: a}]\n")
	if got := paths(c); got != "a" {
		t.Errorf("multislerp models %s, want a (the base excluded)", got)
	}
}
