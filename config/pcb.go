package config

import "fmt"

// validatePCB checks the form of pcb's whole-merge settings: ratio is one
// number, clip one number (both fractions) or a list of two (lo, hi).
// Whether the clip's indices fall inside every group depends on the
// tensors' sizes: the plan checks that.
func (c *Config) validatePCB(v *errList) {
	describe := func(p Param) string {
		if p.Kind == KindGradient {
			return fmt.Sprintf("a list of %d numbers", len(p.Gradient))
		}
		return p.describe()
	}
	if p, ok := c.Parameters["ratio"]; ok && p.Kind != KindNumber {
		v.add(p.Line, "parameters: ratio must be one number (the fraction of each task vector kept), not %s", describe(p))
	}
	if p, ok := c.Parameters["clip"]; ok && p.Kind != KindNumber && !(p.Kind == KindGradient && len(p.Gradient) == 2) {
		v.add(p.Line, "parameters: clip must be one number (lo and hi alike) or a list of two, [lo, hi], not %s", describe(p))
	}
}

func init() {
	specs["ratio"] = paramSpec{scope: scopeTop, typ: typeNumber, check: func(v float64) string {
		if !(v > 0 && v <= 1) {
			return "must be in (0, 1]: the fraction of each task vector kept"
		}
		return ""
	}}
	specs["clip"] = paramSpec{scope: scopeTop, typ: typeNumber, check: func(v float64) string {
		if !(v >= 0 && v < 1) {
			return "must be in [0, 1): the fraction of smallest (lo) or largest (hi) |τ| clipped"
		}
		return ""
	}}
	specs["scope"] = paramSpec{scope: scopeTop, typ: typeEnum, enum: []string{"model", "tensor"}}
	specs["inter"] = paramSpec{scope: scopeTop, typ: typeEnum, enum: []string{"sum", "normsum", "pairwise"}}
}
