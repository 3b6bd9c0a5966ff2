package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/tiesmm/tiesmm/kernels"
)

// Where a parameter may be set.
type scope int

const (
	scopeTensor scope = iota // per model or top level; may vary by tensor and layer
	scopeGlobal              // top level only (mergekit ignores it per model); may vary by tensor
	scopeTop                 // top level only, one plain value (tiesmm's own switches)
)

type valueType int

const (
	typeNumber  valueType = iota
	typeBool              // true / false
	typeRescale           // true / false / l1 / inverse
	typeEnum              // one of enum
	typeAny               // accepted and ignored
)

type paramSpec struct {
	scope scope
	typ   valueType
	enum  []string
	// check returns what is wrong with one number of the setting, "" if nothing.
	check func(v float64) string
}

func finiteCheck(v float64) string {
	if !finite(v) {
		return "must be a finite number"
	}
	return ""
}

var specs = map[string]paramSpec{
	"weight": {scope: scopeTensor, typ: typeNumber, check: finiteCheck},
	"density": {scope: scopeTensor, typ: typeNumber, check: func(v float64) string {
		if !(v > 0 && v <= 1) {
			return "must be in (0, 1]: the fraction of each task vector kept"
		}
		return ""
	}},
	"gamma": {scope: scopeTensor, typ: typeNumber, check: func(v float64) string {
		if !(v >= 0 && v < 1) {
			return "must be in [0, 1): the fraction of largest values dropped"
		}
		return ""
	}},
	"epsilon": {scope: scopeTensor, typ: typeNumber, check: func(v float64) string {
		if !(v >= 0 && v < 1) {
			return "must be in [0, 1)"
		}
		return ""
	}},
	"lambda":      {scope: scopeGlobal, typ: typeNumber, check: finiteCheck},
	"normalize":   {scope: scopeGlobal, typ: typeBool},
	"rescale":     {scope: scopeGlobal, typ: typeRescale},
	"int8_mask":   {scope: scopeTensor, typ: typeAny},
	"filter_wise": {scope: scopeGlobal, typ: typeBool},
	"preset":      {scope: scopeTop, typ: typeEnum, enum: []string{"paper", "mergekit", "peft"}},
	"trim_scope":  {scope: scopeTop, typ: typeEnum, enum: []string{"model", "tensor"}},
	"consensus":   {scope: scopeTop, typ: typeEnum, enum: []string{"sum", "count"}},
	"aggregate":   {scope: scopeTop, typ: typeEnum, enum: []string{"mean", "sum", "max"}},
	// multislerp and karcher
	"normalize_weights": {scope: scopeGlobal, typ: typeBool},
	"eps":               {scope: scopeGlobal, typ: typeNumber, check: nonNegative},
	"max_iter":          {scope: scopeGlobal, typ: typeNumber, check: wholeCount},
	"tol":               {scope: scopeGlobal, typ: typeNumber, check: nonNegative},
	"t":                 {scope: scopeGlobal, typ: typeNumber, check: finiteCheck},
	"select_topk":       {scope: scopeGlobal, typ: typeNumber, check: finiteCheck},
	"scale":             {scope: scopeTensor, typ: typeNumber, check: finiteCheck},
}

// The methods tiesmm implements, in the order they are listed, with their parameters
// (mergekit's, plus tiesmm's TIES switches for the methods that elect signs).
var (
	methodOrder = []string{"task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
		"breadcrumbs_ties", "della", "della_linear", "linear", "model_stock", "multislerp", "karcher",
		"nearswap", "sce", "arcee_fusion", "slerp", "nuslerp", "passthrough", "emr", "pcb"}
	tiesSwitches = []string{"preset", "consensus", "aggregate"}
	methodParams = map[string][]string{
		"task_arithmetic":  {"weight", "lambda", "normalize", "int8_mask"},
		"ties":             append([]string{"weight", "density", "lambda", "normalize", "int8_mask", "rescale", "trim_scope"}, tiesSwitches...),
		"dare_ties":        append([]string{"weight", "density", "lambda", "normalize", "int8_mask", "rescale"}, tiesSwitches...),
		"dare_linear":      {"weight", "density", "lambda", "normalize", "int8_mask", "rescale"},
		"breadcrumbs":      {"weight", "density", "gamma", "lambda", "normalize", "int8_mask", "rescale"},
		"breadcrumbs_ties": append([]string{"weight", "density", "gamma", "lambda", "normalize", "int8_mask", "rescale"}, tiesSwitches...),
		"della":            append([]string{"weight", "density", "epsilon", "lambda", "normalize", "int8_mask", "rescale"}, tiesSwitches...),
		"della_linear":     {"weight", "density", "epsilon", "lambda", "normalize", "int8_mask", "rescale"},
		"linear":           {"weight", "normalize", "int8_mask"},
		"model_stock":      {"filter_wise", "int8_mask"},
		"multislerp":       {"weight", "normalize_weights", "eps", "int8_mask"},
		"karcher":          {"max_iter", "tol", "int8_mask"},
		"nearswap":         {"t", "int8_mask"},
		"sce":              {"select_topk", "int8_mask"},
		"arcee_fusion":     {"int8_mask"},
		"slerp":            {"t"},
		"nuslerp":          {"weight", "nuslerp_flatten", "nuslerp_row_wise"},
		"passthrough":      {"scale"},
		"emr":              {"rescale", "int8_mask"},
		"pcb":              {"weight", "ratio", "clip", "lambda", "scope", "inter"},
	}
	// mergekit methods tiesmm does not implement, to say so instead of "unknown".
	mergekitOnly = []string{"ranked_ties", "core_space", "ram", "cabs", "lrp"}
)

// KnownMethods lists the merge methods tiesmm implements.
func KnownMethods() []string { return append([]string(nil), methodOrder...) }

// KnownParams lists the parameter names method accepts (nil for an unknown method).
func KnownParams(method string) []string {
	ps, ok := methodParams[method]
	if !ok {
		return nil
	}
	return append([]string(nil), ps...)
}

// TopLevelOnly reports whether parameter name may only be set under the top-level
// parameters: (mergekit's global parameters and tiesmm's switches), not per model.
func TopLevelOnly(name string) bool {
	s, ok := specs[name]
	return ok && s.scope != scopeTensor
}

// NeedsBase reports whether method needs base_model (all but linear,
// multislerp, karcher, nuslerp and passthrough).
func NeedsBase(method string) bool {
	return method != "linear" && method != "multislerp" && method != "karcher" && method != "nuslerp" && method != "passthrough"
}

// Validate checks the config against method and parameter rules and the file system, and
// reports every problem at once (errors.Join of *Error, sorted by line). Model paths are
// local; relative ones resolve against the current working directory, like mergekit's.
func (c *Config) Validate() error { return c.ValidateWith(os.Stat) }

// ValidateWith is Validate with stat in place of os.Stat; a nil stat skips the checks
// that model paths exist (for tests and for configs checked away from their models).
func (c *Config) ValidateWith(stat func(name string) (fs.FileInfo, error)) error {
	v := &errList{file: c.File}
	known := c.validateMethod(v)
	if known {
		c.validateParams(v)
		if c.Method == "della" || c.Method == "della_linear" {
			c.validateDella(v)
		}
		if c.Method == "multislerp" {
			c.validateMultislerp(v)
		}
		if c.Slices != nil {
			c.validateSlices(v)
		}
		if c.Method == "pcb" {
			c.validatePCB(v)
		}
	}
	for _, d := range []struct {
		key, val string
		line     int
	}{{"dtype", c.DType, c.lines.dtype}, {"out_dtype", c.OutDType, c.lines.outDType}} {
		if _, err := kernels.ParseDType(d.val); d.val != "" && err != nil {
			v.add(d.line, "%s %s is not supported (float32, float16 or bfloat16)", d.key, d.val)
		}
	}
	switch c.ComputeDType {
	case "", "float32", "bfloat16":
	default:
		v.add(c.lines.computeDType, "compute_dtype %s is not supported (float32, or bfloat16 to round every step as mergekit does with dtype: bfloat16)", c.ComputeDType)
	}
	if src := c.TokenizerSource; stat != nil && src != "" && src != "base" && src != "union" {
		checkPath(v, stat, "tokenizer source", src, c.lines.tokenizer)
	}
	c.validateTokens(v)
	if r := c.LayerRange; r != nil && (r[0] != 0 || r[1] <= 0) {
		v.add(c.lines.models, "layer range [%d, %d]: tiesmm merges whole models, from layer 0", r[0], r[1])
	}
	if stat != nil {
		if c.BaseModel != "" {
			checkPath(v, stat, "base_model", c.BaseModel, c.lines.base)
		}
		for _, m := range c.Models {
			checkPath(v, stat, "model", m.Path, m.Line)
		}
		for _, s := range c.Slices[min(1, len(c.Slices)):] { // slices[0]'s are c.Models
			for _, src := range s.Sources {
				checkPath(v, stat, "model", src.Path, src.Line)
			}
		}
	}
	return v.err()
}

func (c *Config) validateMethod(v *errList) bool {
	line := c.lines.method
	if c.Method == "" {
		v.add(line, "merge_method is missing (one of %s)", strings.Join(methodOrder, ", "))
		return false
	}
	if _, ok := methodParams[c.Method]; !ok {
		switch {
		case contains(mergekitOnly, c.Method):
			v.add(line, "merge_method %s is a mergekit method tiesmm does not implement (tiesmm implements %s)", c.Method, strings.Join(methodOrder, ", "))
		case suggest(c.Method, methodOrder) != "":
			v.add(line, "unknown merge_method %s; did you mean %s?", c.Method, suggest(c.Method, methodOrder))
		default:
			v.add(line, "unknown merge_method %s (one of %s)", c.Method, strings.Join(methodOrder, ", "))
		}
		return false
	}
	if NeedsBase(c.Method) && c.BaseModel == "" {
		v.add(line, "merge_method %s needs base_model: the model the others were fine-tuned from", c.Method)
	}
	n := len(c.Models)
	switch {
	case c.Method == "passthrough" && c.Slices == nil && (n != 1 || c.BaseModel != ""):
		v.add(c.lines.models, "passthrough takes exactly one model per output tensor: with models:, one model and no base_model (use slices: to stack layers of several)")
	case c.Method == "passthrough":
	case c.Method == "slerp" || c.Method == "nuslerp":
		c.validateSlerp(v)
	case n == 0 && !NeedsBase(c.Method):
		v.add(c.lines.models, "no models to merge")
	case n == 0:
		v.add(c.lines.models, "%s needs at least one model besides the base model", c.Method)
	case c.Method == "model_stock" && n < 2:
		v.add(c.lines.models, "model_stock needs at least two models besides the base model (it measures the angle between their task vectors)")
	case c.Method == "pcb" && n < 2:
		v.add(c.lines.models, "pcb needs at least two models besides the base model (it balances each task against the others), got %d", n)
	case (c.Method == "nearswap" || c.Method == "arcee_fusion") && n != 1:
		v.add(c.lines.models, "%s needs exactly one model besides the base model, not %d (it compares the two)", c.Method, n)
	}
	if _, ok := c.Parameters["t"]; c.Method == "nearswap" && !ok {
		v.add(line, "nearswap needs t under the top-level parameters: (values within t of the base are taken from the model)")
	}
	return true
}

func (c *Config) validateParams(v *errList) {
	allowed := methodParams[c.Method]
	for _, name := range sortedKeys(c.Parameters) {
		c.validateParam(v, allowed, name, c.Parameters[name], "parameters")
	}
	if c.Slices != nil {
		return // the sources' parameters: validateSlices
	}
	for i, m := range c.Models {
		for _, name := range sortedKeys(m.Parameters) {
			p := m.Parameters[name]
			if p.Line == 0 {
				p.Line = m.Line
			}
			c.validateParam(v, allowed, name, p, fmt.Sprintf("model %s (models[%d])", m.Path, i))
		}
	}
}

func (c *Config) validateParam(v *errList, allowed []string, name string, p Param, where string) {
	spec, isKnown := specs[name]
	if !contains(allowed, name) {
		var takers []string
		for _, m := range methodOrder {
			if contains(methodParams[m], name) {
				takers = append(takers, m)
			}
		}
		switch {
		case isKnown && len(takers) > 0:
			v.add(p.Line, "%s: %s is not a parameter of %s (it is of %s)", where, name, c.Method, strings.Join(takers, ", "))
		case suggest(name, allowed) != "":
			v.add(p.Line, "%s: unknown parameter %s; did you mean %s?", where, name, suggest(name, allowed))
		default:
			v.add(p.Line, "%s: unknown parameter %s (%s takes %s)", where, name, c.Method, strings.Join(allowed, ", "))
		}
		return
	}
	perModel := !strings.HasSuffix(where, "parameters") // not the top level's or a slice's
	if perModel && spec.scope == scopeGlobal {
		v.add(p.Line, "%s: %s is a global parameter (mergekit ignores it per model): set it under the top-level parameters:", where, name)
		return
	}
	if perModel && spec.scope == scopeTop {
		v.add(p.Line, "%s: %s is a tiesmm setting for the whole merge: set it under the top-level parameters:", where, name)
		return
	}
	if name == "rescale" && c.Method == "emr" {
		if p.Kind != KindString || p.Str != "mean" && p.Str != "l1" {
			v.add(p.Line, "%s: rescale of emr must be mean or l1, not %s", where, p.describe())
		}
		return
	}
	switch spec.typ {
	case typeAny:
		return
	case typeEnum:
		if p.Kind != KindString || !contains(spec.enum, p.Str) {
			v.add(p.Line, "%s: %s must be one of %s, not %s", where, name, strings.Join(spec.enum, ", "), p.describe())
		}
		return
	}
	if p.Kind == KindFilters {
		for i, f := range p.Filters {
			fp := f.Value
			if fp.Line == 0 {
				fp.Line = p.Line
			}
			checkValue(v, spec, fmt.Sprintf("%s[%d]", name, i), fp, where)
		}
		return
	}
	checkValue(v, spec, name, p, where)
	if name == "filter_wise" && p.Kind == KindBool && p.Bool {
		v.add(p.Line, "%s: filter_wise: true is not supported (model_stock merges whole tensors)", where)
	}
}

// checkValue checks one scalar or gradient against its parameter's type and range.
func checkValue(v *errList, spec paramSpec, name string, p Param, where string) {
	switch spec.typ {
	case typeNumber:
		switch p.Kind {
		case KindNumber:
			if msg := spec.check(p.Num); msg != "" {
				v.add(p.Line, "%s: %s %s %s", where, name, formatNum(p.Num), msg)
			}
		case KindGradient:
			for i, x := range p.Gradient {
				if msg := spec.check(x); msg != "" {
					v.add(p.Line, "%s: %s[%d] %s %s", where, name, i, formatNum(x), msg)
				}
			}
		default:
			v.add(p.Line, "%s: %s must be a number or a gradient (list of numbers), not %s", where, name, p.describe())
		}
	case typeBool:
		if p.Kind != KindBool {
			v.add(p.Line, "%s: %s must be true or false, not %s", where, name, p.describe())
		}
	case typeRescale:
		if p.Kind != KindBool && !(p.Kind == KindString && (p.Str == "l1" || p.Str == "inverse")) {
			v.add(p.Line, "%s: %s must be true, false, l1 or inverse, not %s", where, name, p.describe())
		}
	}
}

// validateDella checks 0 < density − ε and density + ε < 1 wherever density < 1, for every
// model, on every pair of settings that may meet (a conservative check: filters on density
// and epsilon are assumed to match the same tensors). Between anchors both gradients are
// linear, so checking at every anchor position of either is exact.
func (c *Config) validateDella(v *errList) {
	seen := map[string]bool{}
	n := len(c.Models)
	for i := -1; i < n; i++ {
		if i == -1 && n > 0 {
			continue // the models inherit the top level: checked through them
		}
		ds, es := c.branches(i, "density"), c.branches(i, "epsilon")
		for _, d := range ds {
			for _, e := range es {
				for _, t := range breakpoints(d.Gradient, e.Gradient) {
					dv, ev := interp(d.Gradient, t), interp(e.Gradient, t)
					if dv >= 1 || (dv-ev > 0 && dv+ev < 1) {
						continue
					}
					msg := fmt.Sprintf("della needs 0 < density ± epsilon < 1, but density %s and epsilon %s (line %d) give [%s, %s]: choose epsilon below min(density, 1 − density)",
						formatNum(dv), formatNum(ev), e.Line, formatNum(dv-ev), formatNum(dv+ev))
					if !seen[msg] {
						seen[msg] = true
						v.add(d.Line, "%s", msg)
					}
					break
				}
			}
		}
	}
}

// branches lists the gradients (scalars as one anchor) that key may take for model i:
// its own setting's, then the top level's where its own may fall through to it.
func (c *Config) branches(i int, key string) []Param {
	var out []Param
	falls := true
	add := func(p Param) {
		switch p.Kind {
		case KindNumber:
			out = append(out, Param{Line: p.Line, Kind: KindGradient, Gradient: []float64{p.Num}})
		case KindGradient:
			out = append(out, p)
		}
	}
	if i >= 0 {
		if p, ok := c.Models[i].Parameters[key]; ok {
			falls = false
			if p.Kind == KindFilters {
				falls = true
				for _, f := range p.Filters {
					fv := f.Value
					if fv.Line == 0 {
						fv.Line = p.Line
					}
					add(fv)
					if f.Filter == "" || f.Filter == "*" {
						falls = false
					}
				}
			} else {
				add(p)
			}
		}
	}
	if falls {
		if p, ok := c.Parameters[key]; ok {
			if p.Kind == KindFilters {
				for _, f := range p.Filters {
					fv := f.Value
					if fv.Line == 0 {
						fv.Line = p.Line
					}
					add(fv)
				}
			} else {
				add(p)
			}
		}
	}
	return out
}

// breakpoints are the positions of the anchors of two gradients.
func breakpoints(a, b []float64) []float64 {
	var ts []float64
	for _, g := range [][]float64{a, b} {
		if len(g) == 1 {
			ts = append(ts, 0)
		}
		for j := 0; j < len(g) && len(g) > 1; j++ {
			ts = append(ts, float64(j)/float64(len(g)-1))
		}
	}
	sort.Float64s(ts)
	return ts
}

// hubName matches Hugging Face Hub repository ids, org/name, optionally @revision.
var hubName = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(@[A-Za-z0-9._/-]+)?$`)

// validateTokens checks that every model tokens: names is a model of the merge,
// matched by path as tokenizer_source's models are.
func (c *Config) validateTokens(v *errList) {
	paths := c.modelPaths()
	for _, o := range c.Tokens {
		if o.Source == TokenZero || slices.ContainsFunc(paths, func(p string) bool { return samePath(p, o.Model) }) {
			continue
		}
		v.add(o.Line, "tokenizer.tokens[%q]: %s is not a model of the merge (the base_model or a model of models: or slices:)", o.Token, o.Model)
	}
}

// modelPaths are the paths of every model the config reads: the base_model,
// then the models (or the slices' sources), each once, in order.
func (c *Config) modelPaths() []string {
	var out []string
	add := func(p string) {
		if p != "" && !slices.ContainsFunc(out, func(q string) bool { return samePath(p, q) }) {
			out = append(out, p)
		}
	}
	add(c.BaseModel)
	for _, m := range c.Models {
		add(m.Path)
	}
	for _, s := range c.Slices {
		for _, src := range s.Sources {
			add(src.Path)
		}
	}
	return out
}

func checkPath(v *errList, stat func(string) (fs.FileInfo, error), what, path string, line int) {
	if model, adapter, ok := SplitModelRef(path); ok {
		checkPath(v, stat, what, model, line)
		checkPath(v, stat, what+" adapter", adapter, line)
		return
	}
	_, err := stat(path)
	if err == nil {
		return
	}
	if !errors.Is(err, fs.ErrNotExist) {
		v.add(line, "%s %s: %v", what, path, err)
		return
	}
	if m := hubName.FindStringSubmatch(path); m != nil && !strings.HasPrefix(path, ".") {
		v.add(line, "%s %s: no such file or directory; it looks like a Hugging Face Hub name; tiesmm reads local paths only: download it first (huggingface-cli download %s --local-dir DIR) and use DIR",
			what, path, m[1])
		return
	}
	v.add(line, "%s %s: no such file or directory (relative paths are from the current directory, not the config's)", what, path)
}

func sortedKeys(ps Params) []string {
	keys := make([]string, 0, len(ps))
	for k := range ps {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
