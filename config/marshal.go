package config

import (
	"bytes"
	"fmt"
	"sort"

	yaml "go.yaml.in/yaml/v3"
)

// paramOrder is the order parameters are written in; others follow, sorted.
var paramOrder = []string{"weight", "density", "gamma", "epsilon", "lambda", "normalize", "rescale",
	"int8_mask", "filter_wise", "preset", "trim_scope", "consensus", "aggregate"}

// Marshal writes the config as mergekit-format YAML (tiesmm_config.yml /
// mergekit_config.yml in the output directory): the models form, or the slices as
// written. Parse(Marshal(c)) gives c back, lines aside.
func (c *Config) Marshal() ([]byte, error) {
	root := &yaml.Node{Kind: yaml.MappingNode}
	put := func(m *yaml.Node, key string, v *yaml.Node) {
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	}
	putStr := func(m *yaml.Node, key, v string) error {
		n, err := scalar(v)
		if err != nil {
			return err
		}
		put(m, key, n)
		return nil
	}
	if err := putStr(root, "merge_method", c.Method); err != nil {
		return nil, err
	}
	if c.BaseModel != "" {
		if err := putStr(root, "base_model", c.BaseModel); err != nil {
			return nil, err
		}
	}
	entry := func(path string, ps Params, lr *[2]int) (*yaml.Node, error) {
		e := &yaml.Node{Kind: yaml.MappingNode}
		if err := putStr(e, "model", path); err != nil {
			return nil, err
		}
		if lr != nil {
			r := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
			for _, x := range lr {
				n, err := scalar(x)
				if err != nil {
					return nil, err
				}
				r.Content = append(r.Content, n)
			}
			put(e, "layer_range", r)
		}
		if len(ps) > 0 {
			n, err := paramsNode(ps)
			if err != nil {
				return nil, fmt.Errorf("model %s: %w", path, err)
			}
			put(e, "parameters", n)
		}
		return e, nil
	}
	if c.Slices != nil {
		n, err := c.slicesNode(entry, putStr)
		if err != nil {
			return nil, err
		}
		put(root, "slices", n)
	} else {
		list := &yaml.Node{Kind: yaml.SequenceNode}
		for _, m := range c.Models {
			e, err := entry(m.Path, m.Parameters, nil)
			if err != nil {
				return nil, err
			}
			list.Content = append(list.Content, e)
		}
		put(root, "models", list)
	}
	top := c.Parameters
	if c.Slices != nil && c.LayerRange != nil {
		top = c.topParams
	}
	if len(top) > 0 {
		n, err := paramsNode(top)
		if err != nil {
			return nil, err
		}
		put(root, "parameters", n)
	}
	for _, kv := range [][2]string{{"dtype", c.DType}, {"out_dtype", c.OutDType}, {"compute_dtype", c.ComputeDType}, {"tokenizer_source", c.tokenizerSourceKey()}} {
		if kv[1] != "" {
			if err := putStr(root, kv[0], kv[1]); err != nil {
				return nil, err
			}
		}
	}
	if c.TokenizerBlock {
		block := &yaml.Node{Kind: yaml.MappingNode}
		if err := putStr(block, "source", c.TokenizerSource); err != nil {
			return nil, err
		}
		if c.PadToMultipleOf > 0 {
			put(block, "pad_to_multiple_of", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: fmt.Sprint(c.PadToMultipleOf)})
		}
		if len(c.Tokens) > 0 {
			n, err := tokensNode(c.Tokens)
			if err != nil {
				return nil, err
			}
			put(block, "tokens", n)
		}
		put(root, "tokenizer", block)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("config: marshal: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: marshal: %w", err)
	}
	return buf.Bytes(), nil
}

// tokensNode writes the tokenizer: block's tokens: map, in its order.
func tokensNode(tokens []TokenOverride) (*yaml.Node, error) {
	m := &yaml.Node{Kind: yaml.MappingNode}
	for _, o := range tokens {
		var pairs []any // key, value, ...
		switch o.Source {
		case TokenFromModel:
			pairs = []any{"source", o.Model}
		case TokenZero:
			pairs = []any{"source", []any{"kind", "zero"}}
		case TokenModelToken:
			src := []any{"kind", "model_token", "model", o.Model, "token", o.FromToken}
			if o.ByID {
				src[4], src[5] = "token_id", o.FromID
			}
			pairs = []any{"source", src}
		}
		if o.Force {
			pairs = append(pairs, "force", true)
		}
		key, err := scalar(o.Token)
		if err != nil {
			return nil, err
		}
		entry, err := mapNode(pairs)
		if err != nil {
			return nil, fmt.Errorf("tokens: %q: %w", o.Token, err)
		}
		m.Content = append(m.Content, key, entry)
	}
	return m, nil
}

// mapNode is a YAML map of the key, value pairs kv, in order; a value that
// is itself a []any is a map of its own (written in flow style).
func mapNode(kv []any) (*yaml.Node, error) {
	m := &yaml.Node{Kind: yaml.MappingNode}
	for i := 0; i+1 < len(kv); i += 2 {
		k, err := scalar(kv[i])
		if err != nil {
			return nil, err
		}
		var v *yaml.Node
		if sub, ok := kv[i+1].([]any); ok {
			if v, err = mapNode(sub); err == nil {
				v.Style = yaml.FlowStyle
			}
		} else {
			v, err = scalar(kv[i+1])
		}
		if err != nil {
			return nil, err
		}
		m.Content = append(m.Content, k, v)
	}
	return m, nil
}

func scalar(v any) (*yaml.Node, error) {
	n := &yaml.Node{}
	if err := n.Encode(v); err != nil {
		return nil, fmt.Errorf("config: marshal %v: %w", v, err)
	}
	return n, nil
}

func paramsNode(ps Params) (*yaml.Node, error) {
	keys := make([]string, 0, len(ps))
	for k := range ps {
		keys = append(keys, k)
	}
	rank := func(k string) int {
		for i, o := range paramOrder {
			if o == k {
				return i
			}
		}
		return len(paramOrder)
	}
	sort.Slice(keys, func(i, j int) bool {
		ri, rj := rank(keys[i]), rank(keys[j])
		if ri != rj {
			return ri < rj
		}
		return keys[i] < keys[j]
	})
	m := &yaml.Node{Kind: yaml.MappingNode}
	for _, k := range keys {
		v, err := paramNode(ps[k], true)
		if err != nil {
			return nil, fmt.Errorf("parameter %s: %w", k, err)
		}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k}, v)
	}
	return m, nil
}

func paramNode(p Param, filters bool) (*yaml.Node, error) {
	switch p.Kind {
	case KindNumber:
		return scalar(p.Num)
	case KindString:
		return scalar(p.Str)
	case KindBool:
		return scalar(p.Bool)
	case KindGradient:
		if len(p.Gradient) == 0 {
			return nil, fmt.Errorf("empty gradient")
		}
		s := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, x := range p.Gradient {
			n, err := scalar(x)
			if err != nil {
				return nil, err
			}
			s.Content = append(s.Content, n)
		}
		return s, nil
	case KindFilters:
		if !filters {
			return nil, fmt.Errorf("a filter's value cannot be a filter list")
		}
		if len(p.Filters) == 0 {
			return nil, fmt.Errorf("empty filter list")
		}
		s := &yaml.Node{Kind: yaml.SequenceNode}
		for _, f := range p.Filters {
			e := &yaml.Node{Kind: yaml.MappingNode}
			if f.Filter != "" {
				n, err := scalar(f.Filter)
				if err != nil {
					return nil, err
				}
				e.Content = append(e.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "filter"}, n)
			}
			v, err := paramNode(f.Value, false)
			if err != nil {
				return nil, err
			}
			e.Content = append(e.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "value"}, v)
			s.Content = append(s.Content, e)
		}
		return s, nil
	}
	return nil, fmt.Errorf("no value")
}

// slicesNode writes the slices as written.
func (c *Config) slicesNode(entry func(string, Params, *[2]int) (*yaml.Node, error), putStr func(*yaml.Node, string, string) error) (*yaml.Node, error) {
	out := &yaml.Node{Kind: yaml.SequenceNode}
	for _, s := range c.Slices {
		n := &yaml.Node{Kind: yaml.MappingNode}
		srcs := &yaml.Node{Kind: yaml.SequenceNode}
		for _, src := range s.Sources {
			e, err := entry(src.Path, src.Parameters, &src.Layers)
			if err != nil {
				return nil, err
			}
			srcs.Content = append(srcs.Content, e)
		}
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "sources"}, srcs)
		if s.BaseModel != "" {
			if err := putStr(n, "base_model", s.BaseModel); err != nil {
				return nil, err
			}
		}
		if len(s.Parameters) > 0 {
			ps, err := paramsNode(s.Parameters)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "parameters"}, ps)
		}
		out.Content = append(out.Content, n)
	}
	return out, nil
}

// tokenizerSourceKey is the tokenizer_source to write: none when the tokenizer: block
// holds it.
func (c *Config) tokenizerSourceKey() string {
	if c.TokenizerBlock {
		return ""
	}
	return c.TokenizerSource
}
