// Package lora reads PEFT LoRA adapters (adapter_config.json and
// adapter_model.safetensors) and checks them against the model they adapt:
// which base tensors they change, with which low-rank factors and scale.
// The arithmetic lives in the merge; this package only finds and checks.
package lora

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/tiesmm/tiesmm/mmapio"
)

// The files of a PEFT adapter folder.
const (
	ConfigName  = "adapter_config.json"
	WeightsName = "adapter_model.safetensors"
	pickleName  = "adapter_model.bin"
	keyPrefix   = "base_model.model."
)

// Config is what tiesmm reads of adapter_config.json.
type Config struct {
	PeftType      string          `json:"peft_type"`
	R             int             `json:"r"`
	Alpha         float64         `json:"lora_alpha"`
	TargetModules json.RawMessage `json:"target_modules"` // a list of names or one regex
	UseRSLoRA     bool            `json:"use_rslora"`
	UseDoRA       bool            `json:"use_dora"`
	FanInFanOut   bool            `json:"fan_in_fan_out"`
	ModulesToSave []string        `json:"modules_to_save"`
	Bias          string          `json:"bias"`
	LoraBias      bool            `json:"lora_bias"`
	BaseModel     string          `json:"base_model_name_or_path"`
	RankPattern   []pattern       `json:"-"` // in the file's order: the first match wins
	AlphaPattern  []pattern       `json:"-"`
}

// pattern is one entry of rank_pattern or alpha_pattern.
type pattern struct {
	key string
	re  *regexp.Regexp
	val float64
}

// Module is one adapted base tensor: W' = W + Scale·(B·A), or with
// FanInFanOut W' = W + Scale·(B·A)ᵀ (W stored [in, out]).
type Module struct {
	Target      string         // the base tensor's name, e.g. model.layers.0.self_attn.q_proj.weight
	A, B        *mmapio.Tensor // lora_A [r, in], lora_B [out, r]
	Rank        int
	Scale       float32 // lora_alpha/r (rsLoRA: lora_alpha/√r), rounded once to float32
	FanInFanOut bool
}

// Adapter is an opened adapter folder: its config and its modules, by
// target tensor name.
type Adapter struct {
	Dir     string
	File    string // adapter_model.safetensors
	Config  Config
	Weights *mmapio.Model // the weights file: its tensors and size
	Modules map[string]*Module
}

// IsAdapter reports whether path is a PEFT adapter folder.
func IsAdapter(path string) bool {
	st, err := os.Stat(filepath.Join(path, ConfigName))
	return err == nil && st.Mode().IsRegular()
}

// Open reads an adapter folder's config and weights headers and checks
// them on their own: options tiesmm does not apply, keys it does not
// know, factors without their pair, ranks that disagree with the config.
func Open(dir string) (*Adapter, error) {
	cfgPath := filepath.Join(dir, ConfigName)
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("adapter %s: no %s: not a PEFT adapter folder", dir, ConfigName)
		}
		return nil, fmt.Errorf("adapter %s: %w", dir, err)
	}
	a := &Adapter{Dir: dir, File: filepath.Join(dir, WeightsName), Modules: map[string]*Module{}}
	if err := a.Config.parse(raw); err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	if err := a.Config.refuse(); err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	if _, err := os.Stat(a.File); err != nil {
		if _, perr := os.Stat(filepath.Join(dir, pickleName)); perr == nil {
			return nil, fmt.Errorf("adapter %s: only %s is read, not %s (a pickle): convert it to safetensors first", dir, WeightsName, pickleName)
		}
		return nil, fmt.Errorf("adapter %s: %w", dir, err)
	}
	if a.Weights, err = mmapio.OpenModel(a.File); err != nil {
		return nil, fmt.Errorf("adapter %s: %w", dir, err)
	}
	if err := a.pair(); err != nil {
		return nil, err
	}
	return a, nil
}

func (c *Config) parse(raw []byte) error {
	if err := json.Unmarshal(raw, c); err != nil {
		return err
	}
	var ordered struct {
		RankPattern  orderedMap `json:"rank_pattern"`
		AlphaPattern orderedMap `json:"alpha_pattern"`
	}
	if err := json.Unmarshal(raw, &ordered); err != nil {
		return err
	}
	var err error
	if c.RankPattern, err = compile("rank_pattern", ordered.RankPattern); err != nil {
		return err
	}
	if c.AlphaPattern, err = compile("alpha_pattern", ordered.AlphaPattern); err != nil {
		return err
	}
	if c.R <= 0 {
		return fmt.Errorf("r %d: the rank must be positive", c.R)
	}
	return nil
}

// refuse names the options whose effect the merge does not reproduce.
func (c *Config) refuse() error {
	switch {
	case c.PeftType != "" && c.PeftType != "LORA":
		return fmt.Errorf("peft_type %s: only LORA adapters are read", c.PeftType)
	case c.UseDoRA:
		return errors.New("use_dora: true: DoRA adapters are not supported (their magnitude vector rescales each column of W + s·B·A)")
	case c.Bias != "" && c.Bias != "none":
		return fmt.Errorf("bias %q: adapters that train biases are not supported (only bias: none)", c.Bias)
	case c.LoraBias:
		return errors.New("lora_bias: true: adapters with a bias on lora_B are not supported")
	case len(c.ModulesToSave) > 0:
		return fmt.Errorf("modules_to_save %v: adapters that replace whole modules are not supported", c.ModulesToSave)
	}
	return nil
}

// orderedMap is a JSON object of numbers in the file's order.
type orderedMap []pattern

func (m *orderedMap) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(b))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return errors.New("want an object of module patterns to numbers")
	}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return err
		}
		var v float64
		if err := d.Decode(&v); err != nil {
			return fmt.Errorf("%q: %w", t, err)
		}
		*m = append(*m, pattern{key: t.(string), val: v})
	}
	return nil
}

// compile makes PEFT's match of a pattern key: the module name ends with
// the key as a regular expression, after a dot or as the whole name.
func compile(what string, ps []pattern) ([]pattern, error) {
	for i := range ps {
		re, err := regexp.Compile(`^(?:(.*\.)?(` + ps[i].key + `))$`)
		if err != nil {
			return nil, fmt.Errorf("%s: key %q: %w", what, ps[i].key, err)
		}
		ps[i].re = re
	}
	return ps, nil
}

func lookup(ps []pattern, module string, def float64) float64 {
	for _, p := range ps {
		if p.re.MatchString(module) {
			return p.val
		}
	}
	return def
}

// scale is PEFT's scaling for a module of rank r and alpha.
func (c *Config) scale(r int, alpha float64) float32 {
	if c.UseRSLoRA {
		return float32(alpha / math.Sqrt(float64(r)))
	}
	return float32(alpha / float64(r))
}

// targets reports whether target_modules selects module: a list entry
// equal to it or to its last dotted parts, or one regex matching it whole.
func (c *Config) targets(module string) (bool, error) {
	if len(c.TargetModules) == 0 || string(c.TargetModules) == "null" {
		return true, nil
	}
	var one string
	if json.Unmarshal(c.TargetModules, &one) == nil {
		if one == "all-linear" {
			return true, nil
		}
		re, err := regexp.Compile(`^(?:` + one + `)$`)
		if err != nil {
			return false, fmt.Errorf("target_modules %q: %w", one, err)
		}
		return re.MatchString(module), nil
	}
	var list []string
	if err := json.Unmarshal(c.TargetModules, &list); err != nil {
		return false, fmt.Errorf("target_modules: want a list of module names or a regex: %w", err)
	}
	for _, t := range list {
		if module == t || strings.HasSuffix(module, "."+t) {
			return true, nil
		}
	}
	return false, nil
}

// pair groups the weights file's tensors into modules: every lora_A with
// its lora_B, ranks that agree with each other and with the config.
func (a *Adapter) pair() error {
	type half struct{ a, b *mmapio.Tensor }
	halves := map[string]*half{}
	var errs []error
	for _, name := range a.Weights.Names {
		t := a.Weights.Tensors[name]
		module, factor, err := splitKey(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: tensor %q: %w", a.File, name, err))
			continue
		}
		if len(t.Shape) != 2 {
			errs = append(errs, fmt.Errorf("%s: tensor %q: shape %v: LoRA factors are matrices (embedding and convolution layers are not supported)", a.File, name, t.Shape))
			continue
		}
		if t.DType != "F32" && t.DType != "F16" && t.DType != "BF16" {
			errs = append(errs, fmt.Errorf("%s: tensor %q: dtype %s (want F32, F16 or BF16)", a.File, name, t.DType))
			continue
		}
		h := halves[module]
		if h == nil {
			h = &half{}
			halves[module] = h
		}
		if factor == "lora_A" {
			h.a = t
		} else {
			h.b = t
		}
	}
	modules := make([]string, 0, len(halves))
	for m := range halves {
		modules = append(modules, m)
	}
	sort.Strings(modules)
	for _, m := range modules {
		h := halves[m]
		if err := a.addModule(m, h.a, h.b); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 && len(a.Modules) == 0 {
		errs = append(errs, fmt.Errorf("%s: no lora_A/lora_B tensors", a.File))
	}
	return errors.Join(errs...)
}

// addModule checks one module's factors and records it.
func (a *Adapter) addModule(module string, A, B *mmapio.Tensor) error {
	key := keyPrefix + module
	switch {
	case A == nil:
		return fmt.Errorf("%s: %s.lora_B.weight has no lora_A", a.File, key)
	case B == nil:
		return fmt.Errorf("%s: %s.lora_A.weight has no lora_B", a.File, key)
	case A.Shape[0] != B.Shape[1]:
		return fmt.Errorf("%s: module %q: rank mismatch: lora_A %v has rank %d, lora_B %v has rank %d", a.File, module, A.Shape, A.Shape[0], B.Shape, B.Shape[1])
	}
	c := &a.Config
	r := int(lookup(c.RankPattern, module, float64(c.R)))
	if int64(r) != A.Shape[0] {
		return fmt.Errorf("%s: module %q: rank mismatch: lora_A %v has rank %d, %s gives r = %d", a.File, module, A.Shape, A.Shape[0], ConfigName, r)
	}
	if ok, err := c.targets(module); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(a.Dir, ConfigName), err)
	} else if !ok {
		return fmt.Errorf("%s: module %q is not among target_modules %s of %s", a.File, module, c.TargetModules, ConfigName)
	}
	alpha := lookup(c.AlphaPattern, module, c.Alpha)
	a.Modules[module+".weight"] = &Module{Target: module + ".weight", A: A, B: B, Rank: r, Scale: c.scale(r, alpha), FanInFanOut: c.FanInFanOut}
	return nil
}

// splitKey reads base_model.model.MODULE.lora_A.weight (or lora_B).
func splitKey(name string) (module, factor string, err error) {
	rest, ok := strings.CutPrefix(name, keyPrefix)
	if !ok {
		return "", "", fmt.Errorf("not a PEFT LoRA key (want %sMODULE.lora_A.weight)", keyPrefix)
	}
	for _, f := range []string{"lora_A", "lora_B"} {
		if m, ok := strings.CutSuffix(rest, "."+f+".weight"); ok {
			return m, f, nil
		}
	}
	switch {
	case strings.Contains(rest, "lora_magnitude_vector"):
		return "", "", errors.New("a DoRA magnitude vector: DoRA adapters are not supported")
	case strings.Contains(rest, "lora_embedding_"):
		return "", "", errors.New("an embedding LoRA factor: embedding layers are not supported")
	case strings.HasSuffix(rest, ".bias"):
		return "", "", errors.New("a bias: adapters that train biases are not supported")
	}
	return "", "", errors.New("not a lora_A or lora_B weight (modules_to_save and other adapter types are not supported)")
}

// Check checks the adapter against the model it adapts: every module a
// tensor of the base with the shape B·A gives, in a float dtype.
func (a *Adapter) Check(base *mmapio.Model) error {
	var errs []error
	for _, target := range a.Targets() {
		md := a.Modules[target]
		t, ok := base.Tensors[target]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: module %q adapts tensor %q, which the base %s does not have", a.File, strings.TrimSuffix(target, ".weight"), target, base.Path))
			continue
		}
		out, in := md.B.Shape[0], md.A.Shape[1]
		want := []int64{out, in}
		if md.FanInFanOut {
			want = []int64{in, out}
		}
		if len(t.Shape) != 2 || t.Shape[0] != want[0] || t.Shape[1] != want[1] {
			errs = append(errs, fmt.Errorf("%s: tensor %q: lora_B %v · lora_A %v gives %v, but the base %s has %v", a.File, target, md.B.Shape, md.A.Shape, want, t.File, t.Shape))
			continue
		}
		if t.DType != "F32" && t.DType != "F16" && t.DType != "BF16" {
			errs = append(errs, fmt.Errorf("%s: tensor %q: the base's dtype %s cannot be adapted", a.File, target, t.DType))
		}
	}
	return errors.Join(errs...)
}

// Targets lists the adapted base tensors, sorted.
func (a *Adapter) Targets() []string {
	ts := make([]string, 0, len(a.Modules))
	for t := range a.Modules {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}

// FactorBytes is the stored size of the largest module's two factors.
func (a *Adapter) FactorBytes() int64 {
	var most int64
	for _, m := range a.Modules {
		most = max(most, m.A.Size+m.B.Size)
	}
	return most
}
