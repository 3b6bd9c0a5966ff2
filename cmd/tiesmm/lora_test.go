package main

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// tensorValues reads a stored tensor of a model folder as float32.
func tensorValues(t *testing.T, dir, file, name string) []float32 {
	t.Helper()
	path := dir
	if file != "" {
		path = filepath.Join(dir, file)
	}
	m, err := mmapio.OpenModel(path)
	if err != nil {
		t.Fatal(err)
	}
	tt, ok := m.Tensors[name]
	if !ok {
		t.Fatalf("%s: no tensor %q", path, name)
	}
	b := make([]byte, tt.Size)
	f, err := os.Open(tt.File)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, tt.Offset); err != nil {
		t.Fatal(err)
	}
	dt, err := kernels.ParseDType(tt.DType)
	if err != nil {
		t.Fatal(err)
	}
	vals := make([]float32, tt.Elements())
	for i := range vals {
		if dt == kernels.F32 {
			vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		} else {
			vals[i] = dt.At(b, i)
		}
	}
	return vals
}

// A linear merge of base+adapter alone from YAML, to float32, writes
// W + (alpha/r)·B·A of the synthetic adapter as the test computes it; the
// flag form writes the same bytes; --dry-run names the adapter.
func TestCLILora(t *testing.T) {
	dir := workDir(t)
	writeFile(t, filepath.Join(dir, "lora.yml"), `merge_method: linear
models:
  - model: demo/base+demo/lora1
    parameters: {weight: 1}
out_dtype: float32
`)
	mustRun(t, dir, "merge", "--quiet", "--threads", "2", "lora.yml", "yaml")
	mustRun(t, dir, "merge", "--quiet", "--threads", "1", "--block-size", "1000", "--method", "linear",
		"--base", "demo/base+demo/lora1", "--model", "demo/base+demo/lora1", "--out-dtype", "float32", "flags")
	sameFiles(t, "YAML against flags", files(t, filepath.Join(dir, "yaml")), files(t, filepath.Join(dir, "flags")))

	var cfg struct {
		R     int     `json:"r"`
		Alpha float64 `json:"lora_alpha"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "demo", "lora1", "adapter_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	s := float32(cfg.Alpha / float64(cfg.R))
	for _, module := range []string{"model.layers.0.self_attn.k_proj", "model.layers.1.mlp.down_proj"} {
		w := tensorValues(t, filepath.Join(dir, "demo", "base"), "", module+".weight")
		a := tensorValues(t, filepath.Join(dir, "demo", "lora1"), "adapter_model.safetensors", "base_model.model."+module+".lora_A.weight")
		b := tensorValues(t, filepath.Join(dir, "demo", "lora1"), "adapter_model.safetensors", "base_model.model."+module+".lora_B.weight")
		got := tensorValues(t, filepath.Join(dir, "yaml"), "", module+".weight")
		in := len(a) / cfg.R
		out := len(b) / cfg.R
		for o := range out {
			for i := range in {
				acc := float32(b[o*cfg.R] * a[i])
				for k := 1; k < cfg.R; k++ {
					acc += float32(b[o*cfg.R+k] * a[k*in+i])
				}
				want := w[o*in+i] + float32(s*acc)
				if g := got[o*in+i]; g != want {
					t.Fatalf("%s[%d, %d] = %v, want %v", module, o, i, g, want)
				}
			}
		}
	}

	dry := mustRun(t, dir, "merge", "--dry-run", "--base", "demo/base", "--model", "demo/lora1", "--model", "demo/ft1", "dry")
	if !strings.Contains(dry, "LoRA adapter demo/lora1") || !strings.Contains(dry, "14 tensors adapted") {
		t.Errorf("--dry-run does not name the adapter and its tensors:\n%s", dry)
	}

	bad := filepath.Join(dir, "bad")
	if err := os.MkdirAll(bad, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "demo", "lora1", "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(bad, "adapter_model.safetensors"), string(data))
	writeFile(t, filepath.Join(bad, "adapter_config.json"), `{"r": 8, "lora_alpha": 16, "use_dora": true}`)
	_, errOut, code := tiesmm(t, dir, "merge", "--base", "demo/base", "--model", "demo/base+bad", "refused")
	if code == 0 || !strings.Contains(errOut, "use_dora") || !strings.Contains(errOut, filepath.Join("bad", "adapter_config.json")) {
		t.Errorf("a DoRA adapter: exit %d, %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "refused")); !os.IsNotExist(err) {
		t.Errorf("a refused merge left its output: %v", err)
	}
}
