package config

import "testing"

// A LoRA reference reads as mergekit writes it, BASE+ADAPTER, in each of
// its YAML forms.
func TestParseLoraRef(t *testing.T) {
	for _, model := range []string{"m+l", "{model: m, lora: l}", "{model: {path: m}, lora: {path: l}}"} {
		c, err := Parse([]byte("merge_method: ties\nbase_model: b\nmodels:\n  - model: "+model+"\n"), "t.yml")
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		if len(c.Models) != 1 || c.Models[0].Path != "m+l" {
			t.Errorf("%s: models %+v, want m+l", model, c.Models)
		}
	}
	if m, a, ok := SplitModelRef("base+adapter"); !ok || m != "base" || a != "adapter" {
		t.Errorf("SplitModelRef(base+adapter) = %q, %q, %v", m, a, ok)
	}
	for _, ref := range []string{"plain", "+adapter", "base+"} {
		if _, _, ok := SplitModelRef(ref); ok {
			t.Errorf("SplitModelRef(%q) split", ref)
		}
	}
}
