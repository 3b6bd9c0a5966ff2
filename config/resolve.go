package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Position is where a tensor sits on a gradient's axis: t = layer/(layers−1), in [0, 1].
// Tensors outside the numbered layers (layer < 0: embeddings, final norm, lm_head) and
// models of a single layer get t = 0, the first anchor.
func Position(layer, layers int) float64 {
	if layer <= 0 || layers <= 1 {
		return 0
	}
	if layer >= layers-1 {
		return 1
	}
	return float64(layer) / float64(layers-1)
}

// Eval gives the value of setting p for one tensor at gradient position t (see Position):
// a scalar is itself; a gradient is interpolated linearly between anchors spread evenly
// over [0, 1] (numpy.interp; one anchor is a constant); a filter list gives the value of
// its first entry whose filter the tensor name contains ("" and "*" match every name),
// and nothing when none matches. The result is a scalar Param carrying the line of the
// setting it came from.
func (p Param) Eval(tensor string, t float64) (Param, bool) {
	switch p.Kind {
	case KindNumber, KindString, KindBool:
		return p, true
	case KindGradient:
		return Param{Line: p.Line, Kind: KindNumber, Num: interp(p.Gradient, t)}, len(p.Gradient) > 0
	case KindFilters:
		for _, f := range p.Filters {
			if f.Filter == "" || f.Filter == "*" || strings.Contains(tensor, f.Filter) {
				return f.Value.Eval(tensor, t)
			}
		}
	}
	return Param{}, false
}

// interp evaluates the gradient g at t in [0, 1], as mergekit does:
// s = t·(n−1), i = ⌊s⌋, (1−f)·g[i] + f·g[i+1] with f = s − i.
func interp(g []float64, t float64) float64 {
	n := len(g)
	if n == 0 {
		return math.NaN()
	}
	if n == 1 || t <= 0 || math.IsNaN(t) {
		return g[0]
	}
	s := t * float64(n-1)
	i := int(s)
	if i >= n-1 {
		return g[n-1]
	}
	f := s - float64(i)
	// Explicit conversions keep the compiler from fusing into an FMA on some
	// architectures: the value must not depend on the machine.
	return float64((1-f)*g[i]) + float64(f*g[i+1])
}

// Resolve gives what the YAML sets parameter key to for model (an index into Models, or
// -1 for the top level only) on tensor, which sits at layer (−1 outside the numbered
// layers; see LayerIndex) of a model with layers numbered layers. The model's own setting
// wins; when it is absent or its filters match nothing, the top-level setting is used.
// false means the YAML says nothing: the engine's default applies.
func (c *Config) Resolve(model int, key, tensor string, layer, layers int) (Param, bool) {
	t := Position(layer, layers)
	if model >= 0 && model < len(c.Models) {
		if p, ok := c.Models[model].Parameters[key]; ok {
			if v, ok := p.Eval(tensor, t); ok {
				return v, true
			}
		}
	}
	if p, ok := c.Parameters[key]; ok {
		return p.Eval(tensor, t)
	}
	return Param{}, false
}

// Float resolves key as a number. found is false when the YAML sets nothing; the error
// says where a setting of another type is.
func (c *Config) Float(model int, key, tensor string, layer, layers int) (v float64, found bool, err error) {
	p, ok := c.Resolve(model, key, tensor, layer, layers)
	if !ok {
		return 0, false, nil
	}
	if p.Kind != KindNumber {
		return 0, true, c.typeErr(p, key, tensor, "a number")
	}
	return p.Num, true, nil
}

// Str resolves key as a string.
func (c *Config) Str(model int, key, tensor string, layer, layers int) (string, bool, error) {
	p, ok := c.Resolve(model, key, tensor, layer, layers)
	if !ok {
		return "", false, nil
	}
	if p.Kind != KindString {
		return "", true, c.typeErr(p, key, tensor, "a string")
	}
	return p.Str, true, nil
}

// Bool resolves key as a bool.
func (c *Config) Bool(model int, key, tensor string, layer, layers int) (bool, bool, error) {
	p, ok := c.Resolve(model, key, tensor, layer, layers)
	if !ok {
		return false, false, nil
	}
	if p.Kind != KindBool {
		return false, true, c.typeErr(p, key, tensor, "true or false")
	}
	return p.Bool, true, nil
}

func (c *Config) typeErr(p Param, key, tensor, want string) error {
	return &Error{File: c.File, Line: p.Line, Msg: fmt.Sprintf("tensor %q: %s must be %s, not %s", tensor, key, want, p.describe())}
}

// describe names a setting in a message: `the string "x"`, `0.5`, `the list [0 1]`.
func (p Param) describe() string {
	switch p.Kind {
	case KindNumber:
		return "the number " + formatNum(p.Num)
	case KindString:
		return fmt.Sprintf("the string %q", p.Str)
	case KindBool:
		return "the bool " + strconv.FormatBool(p.Bool)
	case KindGradient:
		return "a gradient"
	case KindFilters:
		return "a filter list"
	}
	return "nothing"
}

func formatNum(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// layerContainers are the module names under which transformer blocks are numbered:
// model.layers.N (Llama, Mistral, Qwen), transformer.h.N (GPT-2, Falcon), blocks.N,
// encoder.layer.N (BERT), block.N (T5).
var layerContainers = map[string]bool{"layers": true, "h": true, "blocks": true, "layer": true, "block": true}

// LayerIndex finds the block number in a tensor name: 3 for
// "model.layers.3.mlp.up_proj.weight" (also ".h.N.", ".blocks.N.", ".layer.N.",
// ".block.N."). false for tensors outside the numbered layers.
func LayerIndex(tensor string) (int, bool) {
	_, n, _, ok := SplitLayer(tensor)
	return n, ok
}

// SplitLayer splits a tensor name at its block number, as LayerIndex finds it:
// "model.layers.", 3, ".mlp.up_proj.weight" for "model.layers.3.mlp.up_proj.weight".
func SplitLayer(tensor string) (prefix string, layer int, suffix string, ok bool) {
	segs := strings.Split(tensor, ".")
	for i := 0; i+1 < len(segs); i++ {
		if !layerContainers[segs[i]] || !allDigits(segs[i+1]) {
			continue
		}
		n, err := strconv.Atoi(segs[i+1])
		if err != nil {
			return "", 0, "", false
		}
		prefix = strings.Join(segs[:i+1], ".") + "."
		suffix = strings.TrimPrefix(tensor, prefix+segs[i+1])
		return prefix, n, suffix, true
	}
	return "", 0, "", false
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
