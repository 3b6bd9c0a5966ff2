package config

import (
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// mergekit's slices form lists, per output slice, the layer range each model contributes.
// tiesmm merges whole models layer for layer, so it accepts the slices form only when it
// says exactly that: every source of a slice spans the same layers, the slices cover the
// layers in order from 0 without gaps, and (with more than one slice) they all merge the
// same models with the same parameters and no gradients (mergekit restarts a gradient at
// every slice). Such a config is normalised into the models form, and LayerRange records
// the layers covered.

type rawSource struct {
	path   string
	line   int
	lr     [2]int
	lrLine int
	params Params
}

type rawSlice struct {
	line     int
	sources  []rawSource
	base     string
	baseLine int
	params   Params
}

func (p *parser) slices(n *yaml.Node, c *Config) {
	if n = p.deref(n); n == nil {
		return
	}
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.add(n.Line, "slices must be a non-empty list (- sources: [...])")
		return
	}
	before := len(p.errs)
	var slices []rawSlice
	for i, e := range n.Content {
		if e = p.deref(e); e == nil {
			return
		}
		what := fmt.Sprintf("slices[%d]", i)
		if e.Kind != yaml.MappingNode {
			p.add(e.Line, "%s must be a map (- sources: [...]), not a %s", what, kindName(e))
			continue
		}
		s := rawSlice{line: e.Line}
		hasSources := false
		for _, f := range p.fields(e, what, sliceKeys) {
			switch f.key {
			case "sources":
				hasSources = true
				s.sources = p.sources(f.val, what+".sources")
			case "base_model":
				s.baseLine = f.line
				if b := p.deref(f.val); b != nil && !isNull(b) {
					s.base, _ = p.modelRef(b, what+".base_model")
				}
			case "parameters":
				s.params = p.params(f.val, what+".parameters")
			case "residual_weight":
				p.add(f.line, "%s: %s", what, unsupportedKeys[f.key])
			}
		}
		if !hasSources {
			p.add(e.Line, "%s: sources is missing", what)
		}
		slices = append(slices, s)
	}
	if len(p.errs) > before {
		return
	}
	p.normalizeSlices(slices, c)
}

func (p *parser) sources(n *yaml.Node, what string) []rawSource {
	if n = p.deref(n); n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.add(n.Line, "%s must be a non-empty list (- model: PATH\\n  layer_range: [A, B])", what)
		return nil
	}
	var out []rawSource
	for j, e := range n.Content {
		if e = p.deref(e); e == nil {
			return out
		}
		w := fmt.Sprintf("%s[%d]", what, j)
		if e.Kind != yaml.MappingNode {
			p.add(e.Line, "%s must be a map (- model: PATH), not a %s", w, kindName(e))
			continue
		}
		src := rawSource{line: e.Line}
		hasModel, hasRange := false, false
		for _, f := range p.fields(e, w, sourceKeys) {
			switch f.key {
			case "model":
				hasModel = true
				src.path, _ = p.modelRef(f.val, w+".model")
			case "layer_range":
				hasRange = true
				src.lrLine = f.line
				src.lr, _ = p.layerRange(f.val, w+".layer_range")
			case "parameters":
				src.params = p.params(f.val, w+".parameters")
			}
		}
		if !hasModel {
			p.add(e.Line, "%s: model is missing", w)
		}
		if !hasRange {
			p.add(e.Line, "%s: layer_range is missing", w)
		}
		out = append(out, src)
	}
	return out
}

func (p *parser) layerRange(n *yaml.Node, what string) ([2]int, bool) {
	var lr [2]int
	if n = p.deref(n); n == nil {
		return lr, false
	}
	if n.Kind != yaml.SequenceNode || len(n.Content) != 2 {
		p.add(n.Line, "%s must be a list of two layer numbers [first, end)", what)
		return lr, false
	}
	for i, e := range n.Content {
		if e = p.deref(e); e == nil {
			return lr, false
		}
		if e.Kind != yaml.ScalarNode || e.ShortTag() != "!!int" || e.Decode(&lr[i]) != nil || lr[i] < 0 || lr[i] > 1<<24 {
			p.add(e.Line, "%s: %q is not a layer number", what, e.Value)
			return lr, false
		}
	}
	if lr[0] >= lr[1] {
		p.add(n.Line, "%s [%d, %d] holds no layers (the end is excluded)", what, lr[0], lr[1])
		return lr, false
	}
	return lr, true
}

func (p *parser) normalizeSlices(slices []rawSlice, c *Config) {
	before := len(p.errs)
	for k, s := range slices {
		if s.base == "" {
			continue
		}
		if c.BaseModel == "" {
			c.BaseModel, c.lines.base = s.base, s.baseLine
		} else if !samePath(s.base, c.BaseModel) {
			p.add(s.baseLine, "slices[%d]: base_model %s differs from base_model %s (line %d): tiesmm merges onto one base model",
				k, s.base, c.BaseModel, c.lines.base)
		}
	}
	many := len(slices) > 1
	if many && hasGradient(c.Parameters) {
		p.add(c.lines.params, "parameters: gradients with more than one slice are not supported (mergekit restarts a gradient at every slice): use one slice covering every layer")
	}
	end := 0
	first := slices[0]
	for k, s := range slices {
		lr := s.sources[0].lr
		for j, src := range s.sources[1:] {
			if src.lr != lr {
				p.add(src.lrLine, "slices[%d].sources[%d] (%s) has layer_range [%d, %d] but sources[0] (%s) has [%d, %d]: tiesmm merges layer i of every model with layer i of the others, so all sources of a slice must span the same layers",
					k, j+1, src.path, src.lr[0], src.lr[1], s.sources[0].path, lr[0], lr[1])
			}
		}
		if lr[0] != end {
			if k == 0 {
				p.add(s.sources[0].lrLine, "slices[0] starts at layer %d: tiesmm merges whole models, so the slices must start at layer 0 and cover the layers in order", lr[0])
			} else {
				p.add(s.sources[0].lrLine, "slices[%d] starts at layer %d but slices[%d] ends at layer %d: tiesmm merges whole models, so the slices must cover the layers in order, without gaps or overlaps",
					k, lr[0], k-1, end)
			}
		}
		end = lr[1]
		if many {
			p.sameAsFirst(k, s, first)
		}
	}
	if len(p.errs) > before {
		return
	}
	for key, v := range first.params {
		if lo, ok := c.Parameters[key]; ok {
			v = overlay(v, lo)
		}
		if c.Parameters == nil {
			c.Parameters = Params{}
		}
		c.Parameters[key] = v
	}
	for _, src := range first.sources {
		c.Models = append(c.Models, ModelEntry{Path: src.path, Parameters: src.params, Line: src.line})
	}
	c.LayerRange = &[2]int{0, end}
}

// sameAsFirst checks that slice k merges the same models with the same parameters as the
// first slice, and uses no gradient, so that one parameter set per model describes it.
func (p *parser) sameAsFirst(k int, s, first rawSlice) {
	const why = "tiesmm applies one parameter set per model over all layers: use one slice covering every layer, with gradients or filters for what varies"
	if hasGradient(s.params) {
		p.add(s.line, "slices[%d].parameters: gradients with more than one slice are not supported (mergekit restarts a gradient at every slice): %s", k, why)
	} else if k > 0 && !equalParams(s.params, first.params) {
		p.add(s.line, "slices[%d].parameters differ from slices[0]'s: %s", k, why)
	}
	want := map[string]Params{}
	for _, src := range first.sources {
		want[filepath.Clean(src.path)] = src.params
	}
	got := map[string]bool{}
	for j, src := range s.sources {
		key := filepath.Clean(src.path)
		got[key] = true
		wp, ok := want[key]
		if hasGradient(src.params) {
			p.add(src.line, "slices[%d].sources[%d] (%s): gradients with more than one slice are not supported (mergekit restarts a gradient at every slice): %s", k, j, src.path, why)
			continue
		}
		if k == 0 {
			continue
		}
		if !ok {
			p.add(src.line, "slices[%d] merges %s, which slices[0] does not: tiesmm merges the same models in every layer", k, src.path)
		} else if !equalParams(src.params, wp) {
			p.add(src.line, "slices[%d].sources[%d] (%s): parameters differ from those in slices[0]: %s", k, j, src.path, why)
		}
	}
	if k == 0 {
		return
	}
	var missing []string
	for _, src := range first.sources {
		if !got[filepath.Clean(src.path)] {
			missing = append(missing, src.path)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		p.add(s.line, "slices[%d] does not merge %s, which slices[0] does: tiesmm merges the same models in every layer", k, strings.Join(missing, ", "))
	}
}

// overlay puts setting hi (a slice's) over lo (the top level's). A filter list that
// matches nothing falls through to lo in mergekit, so lo becomes its last entries.
func overlay(hi, lo Param) Param {
	if hi.Kind != KindFilters {
		return hi
	}
	out := hi
	out.Filters = append([]FilterValue(nil), hi.Filters...)
	if lo.Kind == KindFilters {
		out.Filters = append(out.Filters, lo.Filters...)
	} else {
		out.Filters = append(out.Filters, FilterValue{Value: lo})
	}
	return out
}

func hasGradient(ps Params) bool {
	for _, v := range ps {
		if v.Kind == KindGradient {
			return true
		}
		for _, f := range v.Filters {
			if f.Value.Kind == KindGradient {
				return true
			}
		}
	}
	return false
}

func sameFloat(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }

// equalParam compares two settings, ignoring lines.
func equalParam(a, b Param) bool {
	if a.Kind != b.Kind {
		return false
	}
	switch a.Kind {
	case KindNumber:
		return sameFloat(a.Num, b.Num)
	case KindString:
		return a.Str == b.Str
	case KindBool:
		return a.Bool == b.Bool
	case KindGradient:
		if len(a.Gradient) != len(b.Gradient) {
			return false
		}
		for i := range a.Gradient {
			if !sameFloat(a.Gradient[i], b.Gradient[i]) {
				return false
			}
		}
		return true
	case KindFilters:
		if len(a.Filters) != len(b.Filters) {
			return false
		}
		for i := range a.Filters {
			if a.Filters[i].Filter != b.Filters[i].Filter || !equalParam(a.Filters[i].Value, b.Filters[i].Value) {
				return false
			}
		}
		return true
	}
	return true
}

func equalParams(a, b Params) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !equalParam(v, w) {
			return false
		}
	}
	return true
}
