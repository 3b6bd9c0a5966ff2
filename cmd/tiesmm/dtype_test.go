package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --out-dtype and YAML's out_dtype read the same spellings (kernels.ParseDType);
// the output's header and its tiesmm_config.yml carry the dtype.
func TestCLIOutDTypeSpellings(t *testing.T) {
	dir := t.TempDir()
	for i, name := range []string{"base", "ft1", "ft2"} {
		writeST(t, shardOf(filepath.Join(dir, "in", name)), tiny(float32(i)), nil)
	}
	flags := []string{"merge", "--quiet", "--base", "in/base", "--model", "in/ft1", "--model", "in/ft2"}
	for i, c := range []struct{ spelling, header, torch string }{
		{"fp32", "F32", "float32"}, {"torch.float32", "F32", "float32"}, {"F32", "F32", "float32"},
		{"bf16", "BF16", "bfloat16"}, {"torch.bfloat16", "BF16", "bfloat16"},
		{"half", "F16", "float16"}, {"FP16", "F16", "float16"},
	} {
		out := filepath.Join("out", strings.Repeat("x", i+1))
		mustRun(t, dir, append(append([]string(nil), flags...), "--out-dtype", c.spelling, out)...)
		if h := readHeader(t, shardOf(filepath.Join(dir, out))); !strings.Contains(h, `"dtype":"`+c.header+`"`) {
			t.Errorf("--out-dtype %s: header %s, want dtype %s", c.spelling, h, c.header)
		}
		b, err := os.ReadFile(filepath.Join(dir, out, "tiesmm_config.yml"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "out_dtype: "+c.torch) {
			t.Errorf("--out-dtype %s: tiesmm_config.yml does not say out_dtype: %s:\n%s", c.spelling, c.torch, b)
		}
	}

	writeFile(t, filepath.Join(dir, "c.yml"), "merge_method: ties\nbase_model: in/base\nmodels: [{model: in/ft1}, {model: in/ft2}]\nparameters: {density: 0.5}\nout_dtype: fp32\n")
	mustRun(t, dir, "merge", "--quiet", "c.yml", "out/yaml")
	if h := readHeader(t, shardOf(filepath.Join(dir, "out/yaml"))); !strings.Contains(h, `"dtype":"F32"`) {
		t.Errorf("out_dtype: fp32: header %s", h)
	}
	mustRun(t, dir, "merge", "--quiet", "--out-dtype", "torch.bfloat16", "c.yml", "out/yaml-flag")
	if h := readHeader(t, shardOf(filepath.Join(dir, "out/yaml-flag"))); !strings.Contains(h, `"dtype":"BF16"`) {
		t.Errorf("--out-dtype over out_dtype: header %s", h)
	}

	_, stderr, code := tiesmm(t, dir, append(append([]string(nil), flags...), "--out-dtype", "fp8", "out/bad")...)
	if code != 2 || !strings.Contains(stderr, `--out-dtype: unsupported dtype "fp8"`) {
		t.Errorf("--out-dtype fp8: exit %d, stderr %s", code, stderr)
	}
}
