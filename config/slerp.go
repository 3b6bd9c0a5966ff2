package config

// validateSlerp checks slerp's and nuslerp's models and required
// parameters: slerp interpolates from the base to one other model by the
// global t (with none, the base passes through, as in mergekit); nuslerp between exactly two models (besides the base,
// if any) by their weights.
func (c *Config) validateSlerp(v *errList) {
	n := len(c.Models)
	if c.Method == "slerp" {
		if n > 1 {
			v.add(c.lines.models, "slerp needs one model besides the base model (it interpolates from the base, t = 0, to that model, t = 1), got %d", n)
		}
		if _, ok := c.Parameters["t"]; !ok {
			v.add(c.lines.method, "slerp needs the parameter t under the top-level parameters: (0: the base, 1: the model)")
		}
		return
	}
	if n != 2 {
		what := "besides the base model"
		if c.BaseModel == "" {
			what = "(no base_model given)"
		}
		v.add(c.lines.models, "nuslerp needs exactly two models %s, got %d", what, n)
	}
	if _, ok := c.Parameters["weight"]; ok {
		return
	}
	for i, m := range c.Models {
		if _, ok := m.Parameters["weight"]; !ok {
			v.add(m.Line, "model %s (models[%d]): nuslerp needs a weight for every model (t = w1/(w0+w1))", m.Path, i)
		}
	}
}

func init() {
	specs["t"] = paramSpec{scope: scopeGlobal, typ: typeNumber, check: finiteCheck}
	specs["nuslerp_flatten"] = paramSpec{scope: scopeGlobal, typ: typeBool}
	specs["nuslerp_row_wise"] = paramSpec{scope: scopeGlobal, typ: typeBool}
}
