package config

import (
	"fmt"
	"math"
	"path/filepath"

	yaml "go.yaml.in/yaml/v3"
)

// mergekit's slices form lists, per output slice, the layer range each model contributes:
// Config.Slices keeps it as written. A config whose slices merge whole models layer for
// layer (every source of a slice spans the same layers, the slices cover the layers in
// order from 0, and with more than one slice they all merge the same models with the same
// parameters and no gradients) is also put in the models form, with LayerRange recording
// the layers covered; the merge takes that form when the range covers the models.

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
		p.checkSlice(k, s)
	}
	if len(p.errs) > before {
		return
	}
	for _, s := range slices {
		out := Slice{BaseModel: s.base, BaseLine: s.baseLine, Parameters: s.params, Line: s.line}
		for _, src := range s.sources {
			out.Sources = append(out.Sources, Source{Path: src.path, Layers: src.lr, Parameters: src.params, Line: src.line})
		}
		c.Slices = append(c.Slices, out)
	}
	if c.BaseModel == "" {
		// The first slice's base lays out the output and gives config.json.
		for _, s := range slices {
			if s.base != "" {
				c.BaseModel, c.lines.base = s.base, s.baseLine
				break
			}
		}
	}
	first := slices[0]
	for _, src := range first.sources {
		c.Models = append(c.Models, ModelEntry{Path: src.path, Parameters: src.params, Line: src.line})
	}
	if !wholeModels(slices, c.BaseModel, c.Parameters) {
		return
	}
	// The slices say what the models form says: merge it as that form.
	c.topParams = c.Parameters
	c.Parameters = Params{}
	for key, v := range c.topParams {
		c.Parameters[key] = v
	}
	for key, v := range first.params {
		if lo, ok := c.Parameters[key]; ok {
			v = overlay(v, lo)
		}
		c.Parameters[key] = v
	}
	c.LayerRange = &[2]int{0, slices[len(slices)-1].sources[0].lr[1]}
}

// checkSlice reports what makes slice k unusable: sources of different spans, a model
// twice among its sources.
func (p *parser) checkSlice(k int, s rawSlice) {
	lr := s.sources[0].lr
	seen := map[string]int{}
	for j, src := range s.sources {
		if j > 0 && src.lr[1]-src.lr[0] != lr[1]-lr[0] {
			p.add(src.lrLine, "slices[%d].sources[%d] (%s) has layer_range [%d, %d] (%d layers) but sources[0] (%s) has [%d, %d] (%d layers): the sources of a slice are merged layer for layer, so they must span as many layers",
				k, j, src.path, src.lr[0], src.lr[1], src.lr[1]-src.lr[0], s.sources[0].path, lr[0], lr[1], lr[1]-lr[0])
		}
		key := filepath.Clean(src.path)
		if first, dup := seen[key]; dup {
			p.add(src.line, "slices[%d].sources[%d]: model %s is already sources[%d] of this slice (mergekit would keep one of them silently)", k, j, src.path, first)
			continue
		}
		seen[key] = j
	}
}

// wholeModels reports whether the slices merge whole models layer for layer as the models
// form does: every source of a slice spans the same layers, the slices cover the layers in
// order from 0, and they all merge the same models with the same parameters, without
// gradients (mergekit restarts a gradient at every slice) unless there is one slice.
func wholeModels(slices []rawSlice, base string, top Params) bool {
	many := len(slices) > 1
	if many && hasGradient(top) {
		return false
	}
	end := 0
	first := slices[0]
	for _, s := range slices {
		if s.base != "" && !samePath(s.base, base) {
			return false
		}
		lr := s.sources[0].lr
		for _, src := range s.sources {
			if src.lr != lr {
				return false
			}
		}
		if lr[0] != end {
			return false
		}
		end = lr[1]
		if many && !sameAsFirst(s, first) {
			return false
		}
	}
	return true
}

// sameAsFirst reports whether slice s merges the same models with the same parameters as
// the first slice, and uses no gradient, so that one parameter set per model describes it.
func sameAsFirst(s, first rawSlice) bool {
	if hasGradient(s.params) || !equalParams(s.params, first.params) || len(s.sources) != len(first.sources) {
		return false
	}
	want := map[string]Params{}
	for _, src := range first.sources {
		want[filepath.Clean(src.path)] = src.params
	}
	for _, src := range s.sources {
		wp, ok := want[filepath.Clean(src.path)]
		if !ok || hasGradient(src.params) || !equalParams(src.params, wp) {
			return false
		}
	}
	return true
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

// Slice is one output slice: its layers are, in order, the layers of each source's range,
// merged layer for layer.
type Slice struct {
	Sources    []Source
	BaseModel  string // the slice's own base_model, "" to use the top-level one
	BaseLine   int
	Parameters Params // the slice's parameters: over the top level's, under the sources'
	Line       int
}

// Source is one model of a slice and the layers [first, end) it contributes.
type Source struct {
	Path       string
	Layers     [2]int
	Parameters Params
	Line       int
}

// Len is the number of output layers of the slice.
func (s Slice) Len() int { return s.Sources[0].Layers[1] - s.Sources[0].Layers[0] }

// SliceBase is the base model of slice k: its own, else the top-level one ("" for none).
func (c *Config) SliceBase(k int) string {
	if b := c.Slices[k].BaseModel; b != "" {
		return b
	}
	return c.BaseModel
}

// SliceModels splits slice k's sources into its base (an index into Sources, −1 when the
// slice has no base or the base is not among them) and the models merged, in config order.
// As in the models form, the base is one of the models merged for linear and karcher only;
// for the others it is θ₀.
func (c *Config) SliceModels(k int) (base int, merged []int) {
	base = -1
	b := c.SliceBase(k)
	for j, src := range c.Slices[k].Sources {
		if samePath(src.Path, b) {
			base = j
			if c.Method != "linear" && c.Method != "karcher" {
				continue
			}
		}
		merged = append(merged, j)
	}
	return base, merged
}

// ResolveSlice gives what the YAML sets key to for source j of slice k (−1: the slice and
// the top level only), on output tensor out, read from the source's tensor in, at gradient
// position t of the slice. The source's parameters are matched against the input name, the
// slice's and the top level's against the output name; a level that sets nothing, or whose
// filters match nothing, falls through to the next.
func (c *Config) ResolveSlice(k, j int, key, out, in string, t float64) (Param, bool) {
	s := c.Slices[k]
	if j >= 0 {
		if p, ok := s.Sources[j].Parameters[key]; ok {
			if v, ok := p.Eval(in, t); ok {
				return v, true
			}
		}
	}
	if p, ok := s.Parameters[key]; ok {
		if v, ok := p.Eval(out, t); ok {
			return v, true
		}
	}
	if p, ok := c.Parameters[key]; ok {
		return p.Eval(out, t)
	}
	return Param{}, false
}

// SlicePosition is the gradient position of layer i of a slice of n layers: i/(n−1), and 1
// for a slice of one layer, as mergekit has it.
func SlicePosition(i, n int) float64 {
	if n <= 1 {
		return 1
	}
	return float64(i) / float64(n-1)
}

// sliceParamKeys are the parameters a slice's parameters may set besides the per-model
// ones: those the merge resolves per tensor. The method's switches stay top-level.
var sliceParamKeys = []string{"lambda", "t", "select_topk"}

// countProblem says why method cannot merge n models besides the base in one slice, or
// "" if it can. Each slice merges its own models, as many as it lists.
func countProblem(method string, n int) string {
	switch {
	case method == "slerp" && n > 1:
		return "slerp interpolates from the base to one model"
	case method == "nuslerp" && n != 2:
		return "nuslerp interpolates between exactly two models"
	case (method == "model_stock" || method == "pcb") && n < 2:
		return method + " needs at least two (it compares their task vectors)"
	case (method == "nearswap" || method == "arcee_fusion") && n != 1:
		return method + " needs exactly one (it compares it with the base)"
	case n == 0 && method != "slerp":
		return "there is nothing to merge"
	}
	return ""
}

// validateSlices checks what the models form's checks (done on the first slice) do not
// cover: every slice merges a number of models its method takes, has the base it needs
// among its sources, and sets parameters the method knows where they may be set.
func (c *Config) validateSlices(v *errList) {
	allowed := methodParams[c.Method]
	for k, s := range c.Slices {
		what := fmt.Sprintf("slices[%d]", k)
		base, merged := c.SliceModels(k)
		switch b := c.SliceBase(k); {
		case c.Method == "passthrough" && len(s.Sources) != 1:
			v.add(s.Line, "%s has %d sources: passthrough takes exactly one model per output layer", what, len(s.Sources))
		case c.Method == "passthrough" && b != "":
			v.add(s.Line, "%s: passthrough has no base_model (it copies one model's layers)", what)
		case b != "" && base < 0 && c.Method != "linear" && c.Method != "karcher" && c.LayerRange == nil:
			v.add(s.Line, "%s: base_model %s is not among the slice's sources, so its layers are unknown: add it with the layer_range to use", what, b)
		case k > 0 && c.Method != "passthrough":
			if why := countProblem(c.Method, len(merged)); why != "" {
				v.add(s.Line, "%s merges %d model(s) besides its base: %s", what, len(merged), why)
			}
		}
		if (c.SliceBase(k) == "") != (c.SliceBase(0) == "") {
			v.add(s.Line, "%s and slices[0] differ in having a base_model", what)
		}
		for _, name := range sortedKeys(s.Parameters) {
			p := s.Parameters[name]
			if p.Line == 0 {
				p.Line = s.Line
			}
			if spec, ok := specs[name]; ok && spec.scope != scopeTensor && !contains(sliceParamKeys, name) {
				v.add(p.Line, "%s.parameters: %s applies to the whole merge: set it under the top-level parameters:", what, name)
				continue
			}
			c.validateParam(v, allowed, name, p, what+".parameters")
		}
		for j, src := range s.Sources {
			for _, name := range sortedKeys(src.Parameters) {
				p := src.Parameters[name]
				if p.Line == 0 {
					p.Line = src.Line
				}
				c.validateParam(v, allowed, name, p, fmt.Sprintf("model %s (%s.sources[%d])", src.Path, what, j))
			}
		}
	}
}
