package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// pcb from flags and from YAML writes the same bytes; its parameters reach
// the engine (other settings, other bytes); a bad --clip is a usage error.
func TestCLIPCB(t *testing.T) {
	dir := workDir(t)
	models := []string{"--base", "demo/base", "--model", "demo/ft1", "--model", "demo/ft2", "--model", "demo/ft3", "--method", "pcb"}
	flags := []string{"--ratio", "0.2", "--clip", "0.01,0.001", "--inter", "pairwise", "--scope", "tensor", "--lambda", "1.5", "--weight", "1,0.5,1"}
	mustRun(t, dir, append(append(append([]string{"merge", "--quiet"}, models...), flags...), "flags")...)
	writeFile(t, filepath.Join(dir, "pcb.yml"), `merge_method: pcb
base_model: demo/base
models:
  - model: demo/ft1
  - model: demo/ft2
    parameters: {weight: 0.5}
  - model: demo/ft3
parameters:
  ratio: 0.2
  clip: [0.01, 0.001]
  inter: pairwise
  scope: tensor
  lambda: 1.5
`)
	mustRun(t, dir, "merge", "--quiet", "pcb.yml", "yaml")
	sameFiles(t, "pcb flags against YAML", files(t, filepath.Join(dir, "flags")), files(t, filepath.Join(dir, "yaml")))
	mustRun(t, dir, append(append([]string{"merge", "--quiet"}, models...), "defaults")...)
	a, b := files(t, filepath.Join(dir, "flags")), files(t, filepath.Join(dir, "defaults"))
	if string(a["model.safetensors"]) == string(b["model.safetensors"]) {
		t.Error("pcb's settings left the output as the defaults give it")
	}
	dry := mustRun(t, dir, append(append(append([]string{"merge", "--dry-run"}, models...), flags...), "dry")...)
	if want := "pcb: per tensor, clip |τ| [0.01, 0.001], β = intra · inter pairwise, keep ratio 0.2 of β"; !strings.Contains(dry, want) {
		t.Errorf("--dry-run does not say %q:\n%s", want, dry)
	}
	for _, clip := range []string{"0.1,x", "0.1,0.2,0.3"} {
		_, stderr, code := tiesmm(t, dir, append(append([]string{"merge"}, models...), "--clip", clip, "bad")...)
		if code == 0 || !strings.Contains(stderr, "--clip") {
			t.Errorf("--clip %s: exit %d, stderr %q", clip, code, stderr)
		}
	}
}

// A tensor whose ratio keeps nothing (tensor scope, d·ratio ≤ 1) is
// reported once, found while merging: on stderr even with --quiet, and in
// --json's warnings.
func TestCLIPCBKeepsNothing(t *testing.T) {
	dir := t.TempDir()
	for name, shift := range map[string]float32{"base": 0, "ft1": 0.5, "ft2": -0.25} {
		writeST(t, shardOf(filepath.Join(dir, name)), tiny(shift), nil)
	}
	args := []string{"merge", "--base", "base", "--model", "ft1", "--model", "ft2", "--method", "pcb", "--scope", "tensor", "--ratio", "0.25"}
	_, stderr, code := tiesmm(t, dir, append(append([]string{}, args...), "--quiet", "out")...)
	if code != 0 || strings.Count(stderr, "pcb-keeps-nothing")+strings.Count(stderr, "kept no element of any model") != 1 ||
		!strings.Contains(stderr, `"model.layers.0.w2"`) {
		t.Fatalf("exit %d, stderr %q: want one warning naming model.layers.0.w2", code, stderr)
	}
	stdout := mustRun(t, dir, append(append([]string{}, args...), "--json", "--force", "out")...)
	var s struct {
		Warnings []struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Warnings) != 1 || s.Warnings[0].Code != "pcb-keeps-nothing" || !strings.Contains(s.Warnings[0].Message, "kept no element of any model") {
		t.Errorf("--json warnings %+v, want the one pcb-keeps-nothing", s.Warnings)
	}
}
