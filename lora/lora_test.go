package lora

import (
	"encoding/json"
	"testing"
)

// rank_pattern and alpha_pattern keys match as PEFT matches them: the
// module name ends with the key, read as a regular expression, after a dot
// or as the whole name; the first key in the file's order wins.
func TestPatterns(t *testing.T) {
	var c Config
	raw := `{"r": 8, "lora_alpha": 16,
		"rank_pattern": {"q_proj": 4, "layers.1.self_attn.k_proj": 2, "layers\\.[23]\\..*k_proj": 3, "k_proj": 5, "self_attn": 9},
		"alpha_pattern": {"v_proj": 1.5}}`
	if err := c.parse([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	for module, want := range map[string]float64{
		"model.layers.0.self_attn.q_proj":  4,
		"q_proj":                           4,
		"model.layers.0.self_attn.xq_proj": 8, // not after a dot
		"model.layers.1.self_attn.k_proj":  2,
		"model.layers.11.self_attn.k_proj": 5, // "layers.1." must follow a dot
		"model.layers.3.self_attn.k_proj":  3,
		"model.layers.0.self_attn.k_proj":  5,
		"model.layers.0.self_attn.v_proj":  8, // self_attn is not at the end
		"model.layers.0.self_attn":         9,
	} {
		if got := lookup(c.RankPattern, module, float64(c.R)); got != want {
			t.Errorf("rank of %s = %v, want %v", module, got, want)
		}
	}
	if got := lookup(c.AlphaPattern, "model.layers.0.self_attn.v_proj", c.Alpha); got != 1.5 {
		t.Errorf("alpha of v_proj = %v, want 1.5", got)
	}
	if s := c.scale(4, 16); s != 4 {
		t.Errorf("scale alpha 16, r 4 = %v, want 4", s)
	}
	c.UseRSLoRA = true
	if s := c.scale(4, 16); s != 8 {
		t.Errorf("rsLoRA scale alpha 16, r 4 = %v, want 8", s)
	}
}

// target_modules: a list selects a module by its name or its last dotted
// parts; a string is a regular expression matching the whole name.
func TestTargets(t *testing.T) {
	for _, c := range []struct {
		targets string
		module  string
		want    bool
	}{
		{`["q_proj", "v_proj"]`, "model.layers.0.self_attn.q_proj", true},
		{`["q_proj"]`, "model.layers.0.self_attn.xq_proj", false},
		{`["self_attn.q_proj"]`, "model.layers.0.self_attn.q_proj", true},
		{`".*\\.(q|v)_proj"`, "model.layers.0.self_attn.v_proj", true},
		{`".*\\.(q|v)_proj"`, "model.layers.0.self_attn.k_proj", false},
		{`"q_proj"`, "model.layers.0.self_attn.q_proj", false}, // a regex matches the whole name
		{`"all-linear"`, "model.layers.0.mlp.down_proj", true},
		{`null`, "model.layers.0.mlp.down_proj", true},
	} {
		cfg := Config{TargetModules: json.RawMessage(c.targets)}
		got, err := cfg.targets(c.module)
		if err != nil || got != c.want {
			t.Errorf("target_modules %s, %s: %v, %v; want %v", c.targets, c.module, got, err, c.want)
		}
	}
}
