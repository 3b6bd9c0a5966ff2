package config

import "math"

// nonNegative checks a tolerance (eps, tol).
func nonNegative(v float64) string {
	if !finite(v) || v < 0 {
		return "must be a finite number ≥ 0"
	}
	return ""
}

// wholeCount checks an iteration count.
func wholeCount(v float64) string {
	if !(v >= 0 && v <= 1e6 && v == math.Trunc(v)) {
		return "must be a whole number from 0 to 1000000"
	}
	return ""
}

// validateMultislerp checks that every model has a weight (mergekit requires
// one), and that plain-number weights do not sum to 0 when normalised.
func (c *Config) validateMultislerp(v *errList) {
	_, top := c.Parameters["weight"]
	var sum float32
	numbers := true
	for i, m := range c.Models {
		p, own := m.Parameters["weight"]
		if !own && !top {
			v.add(m.Line, "model %s (models[%d]): multislerp needs a weight for each model", m.Path, i)
			numbers = false
			continue
		}
		if !own {
			p = c.Parameters["weight"]
		}
		if p.Kind != KindNumber {
			numbers = false
			continue
		}
		sum += float32(p.Num)
	}
	norm, set := c.Parameters["normalize_weights"]
	if numbers && len(c.Models) > 1 && sum == 0 && (!set || norm.Kind == KindBool && norm.Bool) {
		v.add(c.lines.models, "multislerp: the weights sum to 0, so they cannot be normalised (set normalize_weights: false, or change the weights)")
	}
}
