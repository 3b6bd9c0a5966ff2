// Package config reads, checks, explains and writes tiesmm's merge configuration: the
// YAML format of mergekit (merge_method, base_model, models or slices, parameters, dtype,
// out_dtype, tokenizer_source), so that mergekit users' configs work unchanged, and
// tiesmm's compute_dtype beside them.
//
// It owns the config's syntax and the resolution of parameters (scalars, gradients over
// layers, {filter, value} lists, per-model over top-level), not their defaults: those
// belong to the merge engine, which asks Resolve for what the YAML says and falls back to
// its own defaults when Resolve reports nothing.
//
// Model paths are local paths. Relative paths resolve against the current working
// directory, as in mergekit, not against the YAML file's directory.
//
// Every error names the file and the YAML line it is about (*Error), and Parse and
// Validate report all the problems they find at once (errors.Join), sorted by line.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tiesmm/tiesmm/mmapio"
)

// Config is a parsed merge configuration, normalised to mergekit's `models` form.
//
// Models holds the models whose task vectors are merged, in YAML order. For every method
// but linear, an entry naming the base model is dropped (mergekit ignores it too: the base
// contributes no task vector); for linear it is kept as an ordinary model.
type Config struct {
	File         string // the YAML file, for messages ("" for a config built by hand)
	Method       string // merge_method
	BaseModel    string // base_model, "" if absent
	Models       []ModelEntry
	Parameters   Params // top-level parameters
	DType        string // dtype, canonical ("float32", "float16", "bfloat16") when known
	OutDType     string // out_dtype, canonical when known
	ComputeDType string // compute_dtype (tiesmm's), canonical when known: "", float32 or bfloat16
	// TokenizerSource is tokenizer_source (or the tokenizer: block's source): "", "base",
	// "union" or a model path ("model:PATH" is read as PATH).
	TokenizerSource string
	// PadToMultipleOf is the tokenizer: block's pad_to_multiple_of (0: none).
	PadToMultipleOf int
	// TokenizerBlock: the config used the tokenizer: block rather than tokenizer_source.
	TokenizerBlock bool
	// Tokens are the tokenizer: block's per-token embedding overrides (tokens:), in
	// YAML order.
	Tokens []TokenOverride
	// LayerRange is set when the config used the `slices:` form: the layers [0, end) the
	// slices covered, in order. tiesmm merges whole models, so the engine must check that
	// end equals the models' number of layers.
	LayerRange *[2]int
	// Slices is the slices form as written (nil with models:): output layers taken from
	// layer ranges of the models, slice after slice.
	Slices []Slice

	// topParams are the top-level parameters as written, before a slice's were laid over
	// them for the models form (what Marshal writes beside the slices).
	topParams Params

	lines lines // YAML lines of the top-level keys, 0 when unknown
}

type lines struct {
	method, base, models, params, dtype, outDType, computeDType, tokenizer, padTo int
}

// TokenSource says where a TokenOverride's row comes from.
type TokenSource int

const (
	TokenFromModel  TokenSource = iota // source: MODEL, that model's row of the token itself
	TokenZero                          // source: {kind: zero}
	TokenModelToken                    // source: {kind: model_token, model, token | token_id}
)

// TokenOverride is one entry of the tokenizer: block's tokens: map: the row an
// output token takes in place of tokenizer_source's rules, in every model that
// lacks the token, or in every model when Force is set.
type TokenOverride struct {
	Token  string
	Source TokenSource
	// Model: the model of the merge the row comes from (TokenFromModel,
	// TokenModelToken), a path as the config writes it.
	Model string
	// FromToken, or with ByID the row FromID: TokenModelToken's row of Model,
	// the token looked up in the model's own tokenizer.
	FromToken string
	FromID    int64
	ByID      bool
	Force     bool
	Line      int // YAML line of the entry, 0 when unknown
}

// ModelEntry is one model to merge: a local path and its own parameters.
type ModelEntry struct {
	Path       string
	Parameters Params
	Line       int // YAML line of the entry, 0 when unknown
}

// Params maps a parameter name to its setting.
type Params map[string]Param

// ParamKind says which field of a Param holds its value.
type ParamKind int

const (
	KindNone     ParamKind = iota // unset / invalid
	KindNumber                    // Num
	KindString                    // Str
	KindBool                      // Bool
	KindGradient                  // Gradient: ≥ 1 numbers interpolated over the layers
	KindFilters                   // Filters: first matching {filter, value} wins
)

func (k ParamKind) String() string {
	switch k {
	case KindNumber:
		return "number"
	case KindString:
		return "string"
	case KindBool:
		return "bool"
	case KindGradient:
		return "gradient"
	case KindFilters:
		return "filter list"
	}
	return "unset"
}

// Param is one parameter setting as written, or (from Resolve) its value for one tensor.
type Param struct {
	Line     int // YAML line of the value, 0 when unknown
	Kind     ParamKind
	Num      float64
	Str      string
	Bool     bool
	Gradient []float64
	Filters  []FilterValue
}

// FilterValue is one entry of a filter list. Filter "" or "*" matches every tensor;
// otherwise it matches tensors whose name contains it. Value is a scalar or a gradient.
type FilterValue struct {
	Filter string
	Value  Param
}

// NumberParam, StringParam and BoolParam build scalar Params (for configs built by hand,
// e.g. from command-line flags).
func NumberParam(v float64) Param { return Param{Kind: KindNumber, Num: v} }
func StringParam(s string) Param  { return Param{Kind: KindString, Str: s} }
func BoolParam(b bool) Param      { return Param{Kind: KindBool, Bool: b} }

// GradientParam builds a gradient Param.
func GradientParam(anchors ...float64) Param {
	return Param{Kind: KindGradient, Gradient: append([]float64(nil), anchors...)}
}

// Error is one problem in a config, located by file and line.
type Error struct {
	File string
	Line int // 0 when unknown
	Msg  string
}

func (e *Error) Error() string {
	switch {
	case e.File != "" && e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	case e.File != "":
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

// errList collects located errors and joins them sorted by line.
type errList struct {
	file string
	errs []*Error
}

func (l *errList) add(line int, format string, args ...any) {
	l.errs = append(l.errs, &Error{File: l.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (l *errList) err() error {
	if len(l.errs) == 0 {
		return nil
	}
	sort.SliceStable(l.errs, func(i, j int) bool { return l.errs[i].Line < l.errs[j].Line })
	errs := make([]error, len(l.errs))
	for i, e := range l.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// Load reads and parses the YAML config at path. It checks the syntax only: call
// Validate for the method, parameters, ranges and model paths.
func Load(path string) (*Config, error) {
	data, err := mmapio.ReadRegular(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// OutputDType is the dtype the merged tensors are written in, as mergekit does it:
// out_dtype, else dtype, else "" (meaning: the base model's).
func (c *Config) OutputDType() string {
	if c.OutDType != "" {
		return c.OutDType
	}
	return c.DType
}

// SplitModelRef splits mergekit's model reference BASE+ADAPTER (a model and
// a PEFT LoRA adapter folder). A path that exists as written is a path even
// if it holds a "+".
func SplitModelRef(ref string) (model, adapter string, ok bool) {
	if _, err := os.Stat(ref); err == nil {
		return ref, "", false
	}
	model, adapter, ok = strings.Cut(ref, "+")
	if !ok || model == "" || adapter == "" {
		return ref, "", false
	}
	return model, adapter, true
}

// samePath reports whether two model paths name the same local path.
func samePath(a, b string) bool {
	return a != "" && b != "" && filepath.Clean(a) == filepath.Clean(b)
}
