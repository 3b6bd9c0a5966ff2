package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	"github.com/tiesmm/tiesmm/kernels"
)

// maxNodes bounds the nodes visited while walking the YAML, aliases included, so that an
// alias bomb ("billion laughs") fails instead of running away.
const maxNodes = 1 << 20

var (
	topKeys       = []string{"merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype", "compute_dtype", "tokenizer_source", "tokenizer"}
	tokenizerKeys = []string{"source", "pad_to_multiple_of", "tokens"}
	modelKeys     = []string{"model", "parameters"}
	refKeys       = []string{"model", "lora", "override_architecture"}
	pathKeys      = []string{"path", "revision"}
	sliceKeys     = []string{"sources", "base_model", "parameters", "residual_weight"}
	sourceKeys    = []string{"model", "layer_range", "parameters"}
	filterKeys    = []string{"filter", "value"}
	tokenKeys     = []string{"source", "force"}
	embedKeys     = []string{"kind", "model", "token", "token_id"}

	// mergekit keys tiesmm knows but does not implement: an error that says so beats
	// "unknown key".
	unsupportedKeys = map[string]string{
		"modules":               "modules: is not supported by tiesmm; use models: (or slices:)",
		"tokens":                "tokens: (per-token embedding overrides) belongs in the tokenizer: block (tokenizer: {source: union, tokens: {TOKEN: {source: MODEL}}})",
		"chat_template":         "chat_template is not supported yet; tiesmm copies the base model's tokenizer files as they are",
		"override_architecture": "override_architecture is not supported: tiesmm merges tensors by name and needs no architecture",
		"revision":              "revision is for Hugging Face Hub models; tiesmm reads local paths only: download the revision first (huggingface-cli download ORG/NAME --revision REV --local-dir DIR) and use DIR",
		"residual_weight":       "residual_weight is not supported",
		"pattern":               "pattern is not a key of a filter entry (mergekit ignores it, so the entry matches every tensor); did you mean filter?",
	}
)

type parser struct {
	errList
	budget int
}

type field struct {
	key  string
	line int // the key's line
	val  *yaml.Node
}

// Parse parses a YAML config; file names it in messages. It checks the syntax (keys,
// types, the slices form); Validate checks the rest. On error the Config is nil and the
// error joins every problem found, each an *Error with its line.
func Parse(data []byte, file string) (*Config, error) {
	p := &parser{errList: errList{file: file}, budget: maxNodes}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.add(0, "empty config: it needs at least merge_method and models")
			return nil, p.err()
		}
		p.yamlErr(err)
		return nil, p.err()
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		p.add(next.Line, "a second YAML document (after ---): a config is one document")
	} else if !errors.Is(err, io.EOF) {
		p.yamlErr(err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	root = p.deref(root)
	if root == nil || root.Kind == yaml.DocumentNode || isNull(root) {
		p.add(0, "empty config: it needs at least merge_method and models")
		return nil, p.err()
	}
	if root.Kind != yaml.MappingNode {
		p.add(root.Line, "the config must be a map of keys (merge_method:, models:, ...), not a %s", kindName(root))
		return nil, p.err()
	}
	c := p.config(root)
	if err := p.err(); err != nil {
		return nil, err
	}
	c.File = file
	return c, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): `)

func (p *parser) yamlErr(err error) {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		p.add(line, "%s", strings.TrimPrefix(msg, m[0]))
		return
	}
	p.add(0, "%s", strings.TrimPrefix(msg, "yaml: "))
}

// deref follows aliases and charges the node budget; nil once the budget is spent.
func (p *parser) deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode; i++ {
		if i > 64 {
			return nil
		}
		n = n.Alias
	}
	p.budget--
	if p.budget == 0 {
		p.add(0, "the YAML expands to more than %d nodes (aliases?)", maxNodes)
	}
	if p.budget < 0 {
		return nil
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "map"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int", "!!float":
			return "number"
		case "!!bool":
			return "bool"
		case "!!null":
			return "null"
		case "!!str":
			return "string"
		}
		return "value of type " + strings.TrimPrefix(n.ShortTag(), "!!")
	}
	return "value"
}

// fields returns the entries of mapping n in order, merge keys (<<: *anchor) expanded.
// It reports duplicate keys and, when known is not nil, keys outside it.
func (p *parser) fields(n *yaml.Node, what string, known []string) []field {
	var out []field
	seen := map[string]int{}
	var walk func(n *yaml.Node, merged bool, depth int)
	walk = func(n *yaml.Node, merged bool, depth int) {
		if depth > 16 {
			p.add(n.Line, "merge keys (<<) nested too deep")
			return
		}
		var merges []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := p.deref(n.Content[i])
			v := n.Content[i+1]
			if k == nil {
				return
			}
			if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
				merges = append(merges, v)
				continue
			}
			if k.Kind != yaml.ScalarNode {
				p.add(k.Line, "%s: a key must be a plain name, not a %s", what, kindName(k))
				continue
			}
			if first, dup := seen[k.Value]; dup {
				if !merged {
					p.add(k.Line, "%s: duplicate key %s (first at line %d)", what, k.Value, first)
				}
				continue
			}
			seen[k.Value] = k.Line
			if known != nil && !contains(known, k.Value) {
				p.unknownKey(k, what, known)
				continue
			}
			out = append(out, field{key: k.Value, line: k.Line, val: v})
		}
		// Explicit keys win over merged ones, whatever their order.
		for _, m := range merges {
			m = p.deref(m)
			if m == nil {
				return
			}
			switch m.Kind {
			case yaml.MappingNode:
				walk(m, true, depth+1)
			case yaml.SequenceNode:
				for _, e := range m.Content {
					if e = p.deref(e); e != nil && e.Kind == yaml.MappingNode {
						walk(e, true, depth+1)
					} else if e != nil {
						p.add(e.Line, "%s: << must merge maps", what)
					}
				}
			default:
				p.add(m.Line, "%s: << must merge a map", what)
			}
		}
	}
	walk(n, false, 0)
	return out
}

func (p *parser) unknownKey(k *yaml.Node, what string, known []string) {
	if hint, ok := unsupportedKeys[k.Value]; ok && (k.Value != "pattern" || contains(known, "filter")) {
		p.add(k.Line, "%s: %s", what, hint)
		return
	}
	if s := suggest(k.Value, known); s != "" {
		p.add(k.Line, "%s: unknown key %s; did you mean %s?", what, k.Value, s)
		return
	}
	p.add(k.Line, "%s: unknown key %s (known: %s)", what, k.Value, strings.Join(known, ", "))
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// str reads a string scalar; null gives ("", false) without error.
func (p *parser) str(n *yaml.Node, what string) (string, bool) {
	if n = p.deref(n); n == nil || isNull(n) {
		return "", false
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
		return n.Value, true
	}
	if n.Kind == yaml.ScalarNode {
		p.add(n.Line, "%s must be a string, not the %s %s (quote it if you mean the text: %q)", what, kindName(n), n.Value, n.Value)
	} else {
		p.add(n.Line, "%s must be a string, not a %s", what, kindName(n))
	}
	return "", false
}

func (p *parser) config(root *yaml.Node) *Config {
	c := &Config{}
	var modelsNode, slicesNode *yaml.Node
	var modelsLine, slicesLine, sourceLine, blockLine int
	for _, f := range p.fields(root, "config", topKeys) {
		switch f.key {
		case "merge_method":
			c.lines.method = f.line
			if s, ok := p.str(f.val, "merge_method"); ok {
				c.Method = s
			} else if n := p.deref(f.val); n != nil && isNull(n) {
				p.add(f.line, "merge_method has no value")
			}
		case "base_model":
			c.lines.base = f.line
			if n := p.deref(f.val); n != nil && !isNull(n) {
				c.BaseModel, _ = p.modelRef(n, "base_model")
			}
		case "models":
			modelsNode, modelsLine = f.val, f.line
		case "slices":
			slicesNode, slicesLine = f.val, f.line
		case "parameters":
			c.lines.params = f.line
			c.Parameters = p.params(f.val, "parameters")
		case "dtype":
			c.lines.dtype = f.line
			s, _ := p.str(f.val, "dtype")
			c.DType = canonicalDType(s)
		case "out_dtype":
			c.lines.outDType = f.line
			s, _ := p.str(f.val, "out_dtype")
			c.OutDType = canonicalDType(s)
		case "compute_dtype":
			c.lines.computeDType = f.line
			s, _ := p.str(f.val, "compute_dtype")
			c.ComputeDType = canonicalDType(s)
		case "tokenizer_source":
			c.lines.tokenizer, sourceLine = f.line, f.line
			c.TokenizerSource = p.tokenizerSource(f.val, "tokenizer_source")
		case "tokenizer":
			c.lines.tokenizer, blockLine = f.line, f.line
			p.tokenizerBlock(f.val, c)
		}
	}
	if sourceLine > 0 && blockLine > 0 {
		p.add(max(sourceLine, blockLine), "use either tokenizer_source (line %d) or the tokenizer: block (line %d), not both", sourceLine, blockLine)
	}
	if c.Method == "" && c.lines.method == 0 {
		p.add(0, "merge_method is missing (e.g. merge_method: ties)")
	}
	switch {
	case modelsNode != nil && slicesNode != nil:
		p.add(slicesLine, "use either models: (line %d) or slices:, not both", modelsLine)
	case modelsNode != nil:
		c.lines.models = modelsLine
		c.Models = p.models(modelsNode)
	case slicesNode != nil:
		c.lines.models = slicesLine
		p.slices(slicesNode, c)
	default:
		p.add(0, "models: is missing: list the models to merge (- model: PATH)")
	}
	p.dedupe(c)
	return c
}

// dedupe reports models listed twice and drops the base from the models (but for linear,
// where the base is an ordinary model).
func (p *parser) dedupe(c *Config) {
	seen := map[string]int{}
	out := c.Models[:0]
	for _, m := range c.Models {
		key := filepath.Clean(m.Path)
		if first, dup := seen[key]; dup {
			p.add(m.Line, "model %s is listed twice (first at line %d)", m.Path, first)
			continue
		}
		seen[key] = m.Line
		if c.Method != "linear" && c.Method != "karcher" && samePath(m.Path, c.BaseModel) {
			continue
		}
		out = append(out, m)
	}
	c.Models = out
	c.JoinBase()
}

// modelRef reads mergekit's model reference: a string, or {model: string | {path: string}}.
func (p *parser) modelRef(n *yaml.Node, what string) (string, bool) {
	if n = p.deref(n); n == nil {
		return "", false
	}
	if isNull(n) {
		p.add(n.Line, "%s has no value", what)
		return "", false
	}
	var path, adapter string
	var ok bool
	switch n.Kind {
	case yaml.MappingNode:
		hasModel := false
		for _, f := range p.fields(n, what, refKeys) {
			switch f.key {
			case "model":
				hasModel = true
				m := p.deref(f.val)
				if m != nil && m.Kind == yaml.MappingNode {
					hasPath := false
					for _, g := range p.fields(m, what+".model", pathKeys) {
						if g.key == "path" {
							hasPath = true
							path, ok = p.str(g.val, what+".model.path")
						} else {
							p.add(g.line, "%s: %s", what, unsupportedKeys["revision"])
						}
					}
					if !hasPath {
						p.add(m.Line, "%s.model: path is missing", what)
					}
				} else {
					path, ok = p.str(f.val, what+".model")
				}
			case "lora":
				adapter, _ = p.loraRef(f.val, what+".lora")
			default: // override_architecture
				p.add(f.line, "%s: %s", what, unsupportedKeys[f.key])
			}
		}
		if !hasModel {
			p.add(n.Line, "%s: model is missing (model: PATH)", what)
			return "", false
		}
		if ok && adapter != "" {
			path += "+" + adapter
		}
	default:
		path, ok = p.str(n, what)
	}
	if ok && strings.TrimSpace(path) == "" {
		p.add(n.Line, "%s: the model path is empty", what)
		return "", false
	}
	return path, ok
}

// loraRef reads a model reference's lora: a path, or {path: string}.
func (p *parser) loraRef(n *yaml.Node, what string) (string, bool) {
	if n = p.deref(n); n != nil && n.Kind == yaml.MappingNode {
		path, ok := "", false
		for _, g := range p.fields(n, what, pathKeys) {
			if g.key == "path" {
				path, ok = p.str(g.val, what+".path")
			} else {
				p.add(g.line, "%s: %s", what, unsupportedKeys["revision"])
			}
		}
		return path, ok
	}
	return p.str(n, what)
}

func (p *parser) models(n *yaml.Node) []ModelEntry {
	if n = p.deref(n); n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		if !isNull(n) {
			p.add(n.Line, "models must be a list (- model: PATH), not a %s", kindName(n))
		}
		return nil
	}
	var out []ModelEntry
	for i, e := range n.Content {
		e = p.deref(e)
		if e == nil {
			return out
		}
		what := fmt.Sprintf("models[%d]", i)
		m := ModelEntry{Line: e.Line}
		switch e.Kind {
		case yaml.ScalarNode:
			m.Path, _ = p.modelRef(e, what)
		case yaml.MappingNode:
			hasModel := false
			for _, f := range p.fields(e, what, modelKeys) {
				switch f.key {
				case "model":
					hasModel = true
					m.Path, _ = p.modelRef(f.val, what+".model")
				case "parameters":
					m.Parameters = p.params(f.val, what+".parameters")
				}
			}
			if !hasModel {
				p.add(e.Line, "%s: model is missing (- model: PATH)", what)
			}
		default:
			p.add(e.Line, "%s must be a map (- model: PATH), not a %s", what, kindName(e))
		}
		if m.Path != "" {
			out = append(out, m)
		}
	}
	return out
}

// params reads a parameters map. Names are not checked here: which ones are known
// depends on the method, and Validate reports them all together.
func (p *parser) params(n *yaml.Node, what string) Params {
	if n = p.deref(n); n == nil || isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.add(n.Line, "%s must be a map (name: value), not a %s", what, kindName(n))
		return nil
	}
	out := Params{}
	for _, f := range p.fields(n, what, nil) {
		if v, ok := p.param(f.val, f.key, true); ok {
			out[f.key] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// yaml11Bools are the YAML 1.1 booleans PyYAML (so mergekit) reads where YAML 1.2 sees text.
var yaml11Bools = map[string]bool{
	"yes": true, "Yes": true, "YES": true, "on": true, "On": true, "ON": true,
	"no": false, "No": false, "NO": false, "off": false, "Off": false, "OFF": false,
}

// param reads one setting: a scalar, a gradient (list of numbers) or, when filters is
// true, a list of {filter, value} maps.
func (p *parser) param(n *yaml.Node, name string, filters bool) (Param, bool) {
	if n = p.deref(n); n == nil {
		return Param{}, false
	}
	switch n.Kind {
	case yaml.ScalarNode:
		return p.scalar(n, name)
	case yaml.MappingNode:
		if filters {
			p.add(n.Line, "%s: a {filter, value} entry must be in a list (%s:\\n  - filter: ...\\n    value: ...)", name, name)
		} else {
			p.add(n.Line, "%s: a filter's value must be a number, a string, a bool or a list of numbers, not a map", name)
		}
		return Param{}, false
	case yaml.SequenceNode:
	default:
		p.add(n.Line, "%s: unexpected %s", name, kindName(n))
		return Param{}, false
	}
	if len(n.Content) == 0 {
		p.add(n.Line, "%s: empty list", name)
		return Param{}, false
	}
	items := make([]*yaml.Node, len(n.Content))
	maps := 0
	for i, e := range n.Content {
		if items[i] = p.deref(e); items[i] == nil {
			return Param{}, false
		}
		if items[i].Kind == yaml.MappingNode {
			maps++
		}
	}
	if maps == 0 {
		g := Param{Line: n.Line, Kind: KindGradient, Gradient: make([]float64, len(items))}
		ok := true
		for i, e := range items {
			v, isNum := p.number(e)
			if !isNum {
				p.add(e.Line, "%s: a gradient is a list of numbers; element %d is a %s", name, i, kindName(e))
				ok = false
			}
			g.Gradient[i] = v
		}
		return g, ok
	}
	if maps != len(items) || !filters {
		if !filters {
			p.add(n.Line, "%s: a filter's value must be a scalar or a list of numbers", name)
		} else {
			p.add(n.Line, "%s: a list must be all numbers (a gradient) or all {filter, value} maps", name)
		}
		return Param{}, false
	}
	out := Param{Line: n.Line, Kind: KindFilters}
	ok := true
	for i, e := range items {
		what := fmt.Sprintf("%s[%d]", name, i)
		fv := FilterValue{}
		hasValue := false
		for _, f := range p.fields(e, what, filterKeys) {
			switch f.key {
			case "filter":
				fv.Filter, _ = p.str(f.val, what+".filter")
			case "value":
				hasValue = true
				v, vok := p.param(f.val, what+".value", false)
				ok = ok && vok
				fv.Value = v
			}
		}
		if !hasValue {
			p.add(e.Line, "%s: value is missing", what)
			ok = false
		}
		out.Filters = append(out.Filters, fv)
	}
	return out, ok
}

func (p *parser) number(n *yaml.Node) (float64, bool) {
	if n.Kind != yaml.ScalarNode {
		return 0, false
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		var v float64
		if err := n.Decode(&v); err != nil {
			// Integers beyond int64 (say 1e30 written out) still make a float64.
			f, ferr := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
			if ferr != nil && !errors.Is(ferr, strconv.ErrRange) {
				return 0, false
			}
			v = f
		}
		return v, true
	}
	return 0, false
}

func (p *parser) scalar(n *yaml.Node, name string) (Param, bool) {
	switch n.ShortTag() {
	case "!!int", "!!float":
		v, ok := p.number(n)
		if !ok {
			p.add(n.Line, "%s: %q is not a number", name, n.Value)
		}
		return Param{Line: n.Line, Kind: KindNumber, Num: v}, ok
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			p.add(n.Line, "%s: %q is not a bool", name, n.Value)
			return Param{}, false
		}
		return Param{Line: n.Line, Kind: KindBool, Bool: b}, true
	case "!!str":
		if b, ok := yaml11Bools[n.Value]; ok && n.Style == 0 {
			return Param{Line: n.Line, Kind: KindBool, Bool: b}, true
		}
		return Param{Line: n.Line, Kind: KindString, Str: n.Value}, true
	case "!!null":
		p.add(n.Line, "%s has no value", name)
	default:
		p.add(n.Line, "%s: unsupported %s", name, kindName(n))
	}
	return Param{}, false
}

// canonicalDType maps any spelling kernels.ParseDType reads to mergekit's name
// (float32, float16, bfloat16); others are kept for Validate to report.
func canonicalDType(s string) string {
	if d, err := kernels.ParseDType(s); err == nil {
		return d.TorchName()
	}
	return s
}

// finite reports whether v is a finite number.
func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// tokenizerSource reads a tokenizer source: base, union, a model path or model:PATH, or
// mergekit's model reference map.
func (p *parser) tokenizerSource(n *yaml.Node, what string) string {
	if n = p.deref(n); n == nil || isNull(n) {
		return ""
	}
	if n.Kind == yaml.MappingNode {
		s, _ := p.modelRef(n, what)
		return s
	}
	s, ok := p.str(n, what)
	if !ok {
		return ""
	}
	if rest, isModel := strings.CutPrefix(s, "model:"); isModel {
		if strings.TrimSpace(rest) == "" {
			p.add(n.Line, "%s: %s names no model", what, s)
			return ""
		}
		return rest
	}
	if strings.TrimSpace(s) == "" {
		p.add(n.Line, "%s is empty (base, union or a model path)", what)
	}
	return s
}

// tokenizerBlock reads mergekit's tokenizer: {source, pad_to_multiple_of, tokens}.
func (p *parser) tokenizerBlock(n *yaml.Node, c *Config) {
	if n = p.deref(n); n == nil || isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		p.add(n.Line, "tokenizer must be a map (source: union, pad_to_multiple_of: 64), not a %s", kindName(n))
		return
	}
	c.TokenizerBlock = true
	for _, f := range p.fields(n, "tokenizer", tokenizerKeys) {
		switch f.key {
		case "source":
			c.TokenizerSource = p.tokenizerSource(f.val, "tokenizer.source")
		case "pad_to_multiple_of":
			c.lines.padTo = f.line
			m := p.deref(f.val)
			if m == nil {
				continue
			}
			v, ok := p.number(m)
			if !ok || v != math.Trunc(v) || v < 1 || v > 1<<20 {
				p.add(f.line, "tokenizer.pad_to_multiple_of must be a whole number from 1 to %d", 1<<20)
				continue
			}
			c.PadToMultipleOf = int(v)
		case "tokens":
			c.Tokens = p.tokens(f.val)
		}
	}
	if c.TokenizerSource == "" {
		p.add(n.Line, "tokenizer: source is missing (base, union or a model path)")
	}
}

// tokens reads the tokenizer: block's tokens: a map of output token to
// {source, force}.
func (p *parser) tokens(n *yaml.Node) []TokenOverride {
	if n = p.deref(n); n == nil || isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.add(n.Line, "tokenizer.tokens must be a map of token to {source: ..., force: ...}, not a %s", kindName(n))
		return nil
	}
	var out []TokenOverride
	for _, f := range p.fields(n, "tokenizer.tokens", nil) {
		what := fmt.Sprintf("tokenizer.tokens[%q]", f.key)
		if f.key == "" {
			p.add(f.line, "%s: the token is empty", what)
			continue
		}
		if o, ok := p.tokenOverride(f, what); ok {
			out = append(out, o)
		}
	}
	return out
}

const tokenSourceForms = "source: MODEL, source: {kind: zero} or source: {kind: model_token, model: MODEL, token: TOKEN | token_id: ID}"

// tokenOverride reads one entry of tokens:.
func (p *parser) tokenOverride(f field, what string) (TokenOverride, bool) {
	o := TokenOverride{Token: f.key, Line: f.line}
	n := p.deref(f.val)
	if n == nil {
		return o, false
	}
	if isNull(n) {
		p.add(f.line, "%s has no source (%s)", what, tokenSourceForms)
		return o, false
	}
	if n.Kind != yaml.MappingNode {
		p.add(n.Line, "%s must be a map ({source: ..., force: ...}), not a %s", what, kindName(n))
		return o, false
	}
	ok, hasSource := true, false
	for _, g := range p.fields(n, what, tokenKeys) {
		switch g.key {
		case "source":
			hasSource = true
			ok = p.tokenSource(g, what+".source", &o) && ok
		case "force":
			v := p.deref(g.val)
			if v == nil {
				return o, false
			}
			pv, vok := p.scalar(v, what+".force")
			if vok && pv.Kind != KindBool {
				p.add(g.line, "%s.force must be true or false, not the %s %s", what, kindName(v), v.Value)
				vok = false
			}
			o.Force, ok = pv.Bool, ok && vok
		}
	}
	if !hasSource {
		p.add(n.Line, "%s has no source (%s)", what, tokenSourceForms)
		return o, false
	}
	return o, ok
}

// tokenSource reads a token's source: a model reference, or a map of kind
// zero or model_token.
func (p *parser) tokenSource(f field, what string, o *TokenOverride) bool {
	n := p.deref(f.val)
	if n == nil {
		return false
	}
	if isNull(n) {
		p.add(f.line, "%s has no value (%s)", what, tokenSourceForms)
		return false
	}
	if n.Kind != yaml.MappingNode || !hasKey(n, "kind") {
		var ok bool
		o.Source = TokenFromModel
		o.Model, ok = p.modelRef(n, what)
		return ok
	}
	es, ok := p.embedSource(n, what, o)
	switch es.kind {
	case "zero":
		o.Source = TokenZero
		for _, k := range []struct {
			name string
			set  bool
		}{{"model", es.hasModel}, {"token", es.tokenLine > 0}, {"token_id", es.idLine > 0}} {
			if k.set {
				p.add(n.Line, "%s: {kind: zero} takes no %s", what, k.name)
				ok = false
			}
		}
		return ok
	case "model_token":
		o.Source = TokenModelToken
		return p.modelToken(n, what, es, o) && ok
	case "":
		if es.kindLine > 0 && ok {
			p.add(es.kindLine, "%s.kind is empty (zero or model_token)", what)
		}
		return false
	default:
		p.add(es.kindLine, "%s: unknown kind %s (zero or model_token)", what, es.kind)
		return false
	}
}

// embedFields are the keys of a {kind: ...} token source as written.
type embedFields struct {
	kind, token                 string
	kindLine, tokenLine, idLine int
	idNode                      *yaml.Node
	hasModel                    bool
}

// embedSource reads a {kind: ...} token source's keys; the model goes to o.
func (p *parser) embedSource(n *yaml.Node, what string, o *TokenOverride) (embedFields, bool) {
	var es embedFields
	ok := true
	for _, g := range p.fields(n, what, embedKeys) {
		switch g.key {
		case "kind":
			es.kindLine = g.line
			s, sok := p.str(g.val, what+".kind")
			es.kind, ok = s, ok && sok
		case "model":
			es.hasModel = true
			m, mok := p.modelRef(g.val, what+".model")
			o.Model, ok = m, ok && mok
		case "token":
			es.tokenLine = g.line
			s, sok := p.str(g.val, what+".token")
			es.token, ok = s, ok && sok
		case "token_id":
			es.idLine, es.idNode = g.line, p.deref(g.val)
		}
	}
	return es, ok
}

// modelToken checks a {kind: model_token} source: a model, and a token or a
// row index but not both.
func (p *parser) modelToken(n *yaml.Node, what string, es embedFields, o *TokenOverride) bool {
	ok := true
	if !es.hasModel {
		p.add(n.Line, "%s: {kind: model_token} needs model: (a model of the merge)", what)
		ok = false
	}
	switch {
	case es.tokenLine > 0 && es.idLine > 0:
		p.add(max(es.tokenLine, es.idLine), "%s: give token or token_id, not both", what)
		return false
	case es.tokenLine > 0:
		o.FromToken = es.token
		if ok && es.token == "" {
			p.add(es.tokenLine, "%s.token is empty", what)
			return false
		}
	case es.idLine > 0:
		if es.idNode == nil {
			return false
		}
		v, isNum := p.number(es.idNode)
		if !isNum || v != math.Trunc(v) || v < 0 || v >= 1<<53 {
			p.add(es.idLine, "%s.token_id must be a whole number from 0 (a row of the model's embedding), not %s", what, es.idNode.Value)
			return false
		}
		o.FromID, o.ByID = int64(v), true
	default:
		p.add(n.Line, "%s: {kind: model_token} needs token: TOKEN or token_id: ID", what)
		return false
	}
	return ok
}

// hasKey reports whether mapping n has key as one of its own keys.
func hasKey(n *yaml.Node, key string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key {
			return true
		}
	}
	return false
}
