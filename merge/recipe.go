package merge

import (
	"fmt"
	"math"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/kernels"
)

// Recipe turns a config into the method and a per-tensor parameter resolver.
// For the methods that vote, the preset comes from the top-level `preset`
// parameter and defaults to mergekit (a mergekit config gives mergekit's
// result); each detail parameter then overrides the preset.
func Recipe(c *config.Config) (Method, Resolver, error) {
	m, params, err := recipe(c)
	if err != nil {
		return Method{}, nil, err
	}
	n := len(c.Models)
	resolve := func(tensor string, layer, layers int) (TensorParams, error) {
		return params(n, func(model int, key string) (config.Param, bool) {
			return c.Resolve(model, key, tensor, layer, layers)
		})
	}
	return m, resolve, nil
}

// SliceRecipe is Recipe for the slices form: the method, the slices, and
// the resolver of an output tensor of a slice, whose merged models read the
// input tensors named in.
func SliceRecipe(c *config.Config) (Method, []Slice, SliceResolver, error) {
	m, params, err := recipe(c)
	if err != nil {
		return Method{}, nil, nil, err
	}
	sl := make([]Slice, len(c.Slices))
	for k, s := range c.Slices {
		sl[k].Base, sl[k].Models = c.SliceModels(k)
		for _, src := range s.Sources {
			sl[k].Sources = append(sl[k].Sources, SliceSource{Model: src.Path, First: src.Layers[0], End: src.Layers[1]})
		}
	}
	resolve := func(k int, out string, in []string, t float64) (TensorParams, error) {
		_, merged := c.SliceModels(k)
		return params(len(merged), func(model int, key string) (config.Param, bool) {
			if model < 0 {
				return c.ResolveSlice(k, -1, key, out, "", t)
			}
			return c.ResolveSlice(k, merged[model], key, out, in[model], t)
		})
	}
	return m, sl, resolve, nil
}

// paramsOf resolves a tensor's parameters for n models from lookup, which
// gives what the YAML sets a key to for a model (−1: the global setting).
type paramsOf func(n int, lookup func(model int, key string) (config.Param, bool)) (TensorParams, error)

// recipe reads the method from a config, and how a tensor's parameters
// follow from what the YAML sets.
func recipe(c *config.Config) (Method, paramsOf, error) {
	top := func(key string) (config.Param, bool) { return c.Resolve(-1, key, "", -1, 0) }
	str := func(key, def string) (string, error) {
		p, ok := top(key)
		if !ok {
			return def, nil
		}
		if p.Kind != config.KindString {
			return "", fmt.Errorf("%s: parameter %s: want a word, got a %s", c.File, key, p.Kind)
		}
		return p.Str, nil
	}
	preset, err := str("preset", "mergekit")
	if err != nil {
		return Method{}, nil, err
	}
	m, def, err := NewMethod(c.Method, preset)
	if err != nil {
		return Method{}, nil, err
	}
	if err := readTopLevel(c, &m, top, str); err != nil {
		return Method{}, nil, err
	}
	if err := m.readSphere(c, top); err != nil {
		return Method{}, nil, err
	}

	if m.Compute, err = computeDType(c); err != nil {
		return Method{}, nil, err
	}

	if err := slerpRecipe(c, &m, top); err != nil {
		return Method{}, nil, err
	}
	if err := pcbRecipe(c, &m); err != nil {
		return Method{}, nil, err
	}
	weightKey := "weight"
	if m.Name == "passthrough" {
		weightKey = "scale"
	}
	params := func(n int, lookup func(model int, key string) (config.Param, bool)) (TensorParams, error) {
		tp := TensorParams{Density: make([]float64, n), Weights: make([]float32, n), Weights64: make([]float64, n),
			Gamma: make([]float64, n), Epsilon: make([]float64, n)}
		num := func(model int, key string, def float64) (float64, error) {
			p, ok := lookup(model, key)
			if !ok {
				return def, nil
			}
			if p.Kind != config.KindNumber {
				return 0, fmt.Errorf("parameter %s: want a number, got a %s", key, p.Kind)
			}
			if math.IsNaN(p.Num) || math.IsInf(p.Num, 0) {
				return 0, fmt.Errorf("parameter %s: %v is not finite", key, p.Num)
			}
			return p.Num, nil
		}
		for i := range n {
			d, err := num(i, "density", def.Density)
			if err != nil {
				return tp, fmt.Errorf("model %d: %w", i+1, err)
			}
			w, err := num(i, weightKey, def.Weight)
			if err != nil {
				return tp, fmt.Errorf("model %d: %w", i+1, err)
			}
			g, err := num(i, "gamma", def.Gamma)
			if err != nil {
				return tp, fmt.Errorf("model %d: %w", i+1, err)
			}
			e, err := num(i, "epsilon", def.Epsilon)
			if err != nil {
				return tp, fmt.Errorf("model %d: %w", i+1, err)
			}
			tp.Density[i], tp.Weights[i], tp.Gamma[i], tp.Epsilon[i] = d, float32(w), g, e
			tp.Weights64[i] = w
		}
		t, err := slerpT(c.Method, num)
		if err != nil {
			return tp, err
		}
		tp.T = t
		l, err := num(-1, "lambda", def.Lambda)
		tp.Lambda = float32(l)
		if err == nil && m.OwnPath != PathCopy {
			err = ownParams(&tp, num)
		}
		return tp, err
	}
	return m, params, nil
}

// readTopLevel applies the top-level parameters that shape the method:
// normalize, trim_scope, consensus, aggregate and rescale.
func readTopLevel(c *config.Config, m *Method, top func(string) (config.Param, bool), str func(key, def string) (string, error)) error {
	var err error
	if p, ok := top("normalize"); ok {
		if p.Kind != config.KindBool {
			return fmt.Errorf("%s: normalize: want true or false", c.File)
		}
		m.SetNormalize(p.Bool)
	}
	if s, err := str("trim_scope", ""); err != nil {
		return err
	} else if s != "" {
		if m.Scope, err = ParseScope(s); err != nil {
			return err
		}
	}
	if s, err := str("consensus", ""); err != nil {
		return err
	} else if s != "" {
		if m.Vote.Consensus, err = ParseConsensus(s); err != nil {
			return err
		}
	}
	if s, err := str("aggregate", ""); err != nil {
		return err
	} else if s != "" {
		if m.Vote.Aggregate, err = ParseAggregate(s); err != nil {
			return err
		}
	}
	if p, ok := top("rescale"); ok && m.OwnPath == PathEMR {
		if m.Rescale, err = parseEMRRescale(p); err != nil {
			return fmt.Errorf("%s: %w", c.File, err)
		}
	} else if ok {
		word := p.Str
		if p.Kind == config.KindBool {
			word = fmt.Sprint(p.Bool)
		}
		if m.Rescale, err = ParseRescale(word); err != nil {
			return err
		}
	}
	return nil
}

// computeDType reads compute_dtype, and refuses bfloat16 for a method its
// path does not cover.
func computeDType(c *config.Config) (kernels.DType, error) {
	switch c.ComputeDType {
	case "", "float32":
		return kernels.F32, nil
	case "bfloat16":
	default:
		return 0, fmt.Errorf("%s: compute_dtype %s: want float32 or bfloat16", c.File, c.ComputeDType)
	}
	m, _, err := NewMethod(c.Method, "mergekit")
	if err != nil {
		return 0, err
	}
	m.Compute = kernels.BF16
	if err := m.CheckCompute(); err != nil {
		return 0, fmt.Errorf("%s: %w", c.File, err)
	}
	return kernels.BF16, nil
}
