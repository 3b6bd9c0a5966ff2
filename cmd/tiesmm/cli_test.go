package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/mmapio"
)

// The command end to end: the binary is built once and run as a subprocess,
// as a user runs it.

var bin string // the tiesmm binary under test

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tiesmm-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "tiesmm")
	// go test puts its own GOROOT/bin first on the PATH.
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// tiesmm runs the binary in dir and returns its stdout, stderr and exit code.
func tiesmm(t *testing.T, dir string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir // TIESMM_KERNEL passes through: make test forces each set with it
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// mustRun runs the binary and fails the test unless it exits 0.
func mustRun(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, errOut, code := tiesmm(t, dir, args...)
	if code != 0 {
		t.Fatalf("tiesmm %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
	}
	return out
}

var (
	demoOnce sync.Once
	demoDir  string
	demoErr  error
)

// demo returns a directory holding demo/base and demo/ft1..3 (tiesmm synth,
// 2M parameters, each fine-tune's tokenizer adding 3 tokens) and demo/lora1 (a
// rank-8 LoRA adapter of the base), shared by the tests; they write their
// outputs elsewhere.
func demo(t *testing.T) string {
	t.Helper()
	demoOnce.Do(func() {
		demoDir, demoErr = os.MkdirTemp(filepath.Dir(bin), "work-")
		if demoErr != nil {
			return
		}
		cmd := exec.Command(bin, "synth", "--params", "2M", "--added-tokens", "3", "--lora-rank", "8", "demo")
		cmd.Dir = demoDir
		if out, err := cmd.CombinedOutput(); err != nil {
			demoErr = fmt.Errorf("tiesmm synth: %v\n%s", err, out)
		}
	})
	if demoErr != nil {
		t.Fatal(demoErr)
	}
	return demoDir
}

// workDir is a fresh directory with a link to the shared demo models, so
// that the examples' relative paths (demo/base, ...) resolve in it.
func workDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(demo(t), "demo"), filepath.Join(dir, "demo")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// st is one F32 tensor of a hand-made model.
type st struct {
	name  string
	shape []int64
	vals  []float32
}

// writeST writes tensors densely into a safetensors file (dtype F32 unless
// dtypes names another for a tensor, whose data is then zeros).
func writeST(t *testing.T, path string, ts []st, dtypes map[string]string) {
	t.Helper()
	var parts []string
	var data []byte
	for _, x := range ts {
		dims := make([]string, len(x.shape))
		n := int64(1)
		for i, d := range x.shape {
			dims[i], n = strconv.FormatInt(d, 10), n*d
		}
		dt, b := "F32", make([]byte, 0, 4*n)
		if o, ok := dtypes[x.name]; ok {
			bits, _ := mmapio.DTypeBits(o)
			dt, b = o, make([]byte, n*bits/8)
		} else {
			for _, v := range x.vals {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
			}
		}
		parts = append(parts, fmt.Sprintf(`%q:{"dtype":%q,"shape":[%s],"data_offsets":[%d,%d]}`,
			x.name, dt, strings.Join(dims, ","), len(data), len(data)+len(b)))
		data = append(data, b...)
	}
	writeRaw(t, path, "{"+strings.Join(parts, ",")+"}", data)
}

func writeRaw(t *testing.T, path, header string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	if err := os.WriteFile(path, append(append(b, header...), data...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tiny are the base's tensors; shift makes a fine-tune.
func tiny(shift float32) []st {
	w1 := st{"model.layers.0.w1", []int64{4, 2}, []float32{1, -2, 3, -4, 5, -6, 7, -8}}
	w2 := st{"model.layers.0.w2", []int64{4}, []float32{0.5, -0.25, 0.125, 1}}
	for i := range w1.vals {
		w1.vals[i] += shift * float32(i%3-1)
	}
	for i := range w2.vals {
		w2.vals[i] -= shift * float32(i%2)
	}
	return []st{w1, w2}
}

// badCase is a tiny base and two fine-tunes under in/, with a way to spoil
// them, and an empty dst/ for the output.
type badCase struct {
	name  string
	spoil func(t *testing.T, in string) // may rewrite in/base, in/ft1, in/ft2
	args  []string                      // after merge; "" entries are replaced by the defaults
	wants []string
}

func shardOf(dir string) string { return filepath.Join(dir, "model.safetensors") }

// Bad inputs: exit code 1, a message on stderr naming the problem, and
// nothing at the destination.
func TestCLIBadInputs(t *testing.T) {
	flags := []string{"merge", "--quiet", "--base", "in/base", "--model", "in/ft1", "--model", "in/ft2"}
	cases := []badCase{
		{name: "missing-tensor", spoil: func(t *testing.T, in string) {
			writeST(t, shardOf(filepath.Join(in, "ft2")), tiny(2)[:1], nil)
		}, wants: []string{`"model.layers.0.w2"`, "missing", "in/ft2"}},
		{name: "shape-mismatch", spoil: func(t *testing.T, in string) {
			ts := tiny(1)
			ts[0].shape = []int64{2, 4}
			writeST(t, shardOf(filepath.Join(in, "ft1")), ts, nil)
		}, wants: []string{"[2, 4]", "[4, 2]", "in/ft1/model.safetensors", "in/base/model.safetensors"}},
		{name: "dtype-F64", spoil: func(t *testing.T, in string) {
			writeST(t, shardOf(filepath.Join(in, "base")), append(tiny(0), st{"buf", []int64{2}, nil}), map[string]string{"buf": "F64"})
		}, wants: []string{`"buf"`, "F64", "in/base/model.safetensors"}},
		{name: "dtype-F8_E4M3", spoil: func(t *testing.T, in string) {
			writeST(t, shardOf(filepath.Join(in, "ft2")), tiny(2), map[string]string{"model.layers.0.w2": "F8_E4M3"})
		}, wants: []string{`"model.layers.0.w2"`, "F8_E4M3", "in/ft2/model.safetensors"}},
		{name: "truncated", spoil: func(t *testing.T, in string) {
			p := shardOf(filepath.Join(in, "ft1"))
			st, _ := os.Stat(p)
			if err := os.Truncate(p, st.Size()-5); err != nil {
				t.Fatal(err)
			}
		}, wants: []string{"truncated|out of range: the data section has 43 bytes (file size", "in/ft1/model.safetensors"}},
		{name: "header-past-end", spoil: func(t *testing.T, in string) {
			b := binary.LittleEndian.AppendUint64(nil, 1<<20)
			if err := os.WriteFile(shardOf(filepath.Join(in, "ft1")), append(b, "{}"...), 0o644); err != nil {
				t.Fatal(err)
			}
		}, wants: []string{"past the end", "in/ft1/model.safetensors"}},
		{name: "overlap", spoil: func(t *testing.T, in string) {
			writeRaw(t, shardOf(filepath.Join(in, "ft2")), `{"model.layers.0.w1":{"dtype":"F32","shape":[4,2],"data_offsets":[0,32]},"model.layers.0.w2":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}`, make([]byte, 32))
		}, wants: []string{"overlap", "in/ft2/model.safetensors"}},
		{name: "out-of-range", spoil: func(t *testing.T, in string) {
			writeRaw(t, shardOf(filepath.Join(in, "ft2")), `{"model.layers.0.w1":{"dtype":"F32","shape":[4,2],"data_offsets":[0,32]},"model.layers.0.w2":{"dtype":"F32","shape":[4],"data_offsets":[32,48]}}`, make([]byte, 36))
		}, wants: []string{"out of range", `"model.layers.0.w2"`, "in/ft2/model.safetensors"}},
		{name: "duplicate-name", spoil: func(t *testing.T, in string) {
			writeRaw(t, shardOf(filepath.Join(in, "ft2")), `{"model.layers.0.w1":{"dtype":"F32","shape":[4,2],"data_offsets":[0,32]},"model.layers.0.w1":{"dtype":"F32","shape":[4],"data_offsets":[32,48]}}`, make([]byte, 48))
		}, wants: []string{"duplicate", `"model.layers.0.w1"`, "in/ft2/model.safetensors"}},
		{name: "invalid-utf8", spoil: func(t *testing.T, in string) {
			writeRaw(t, shardOf(filepath.Join(in, "ft2")), "{\"model.layers.0.w1\":{\"dtype\":\"F32\",\"shape\":[4,2],\"data_offsets\":[0,32]},\"w\xc32\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[32,48]}}", make([]byte, 48))
		}, wants: []string{"invalid UTF-8", "in/ft2/model.safetensors"}},
		{name: "index-names-missing-shard", spoil: func(t *testing.T, in string) {
			dir := filepath.Join(in, "ft2")
			os.Remove(shardOf(dir))
			writeST(t, filepath.Join(dir, "model-00001-of-00002.safetensors"), tiny(2)[:1], nil)
			idx := `{"weight_map":{"model.layers.0.w1":"model-00001-of-00002.safetensors","model.layers.0.w2":"model-00002-of-00002.safetensors"}}`
			if err := os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), []byte(idx), 0o644); err != nil {
				t.Fatal(err)
			}
		}, wants: []string{"model-00002-of-00002.safetensors", "does not exist", "in/ft2/model.safetensors.index.json"}},
		{name: "density-above-1", args: append(append([]string(nil), flags...), "--density", "1.5", "dst/out"),
			wants: []string{"density 1.5", "(0, 1]"}},
		{name: "density-0-dare", args: append(append([]string(nil), flags...), "--method", "dare_ties", "--density", "0", "dst/out"),
			wants: []string{"density 0", "(0, 1]"}},
		{name: "della-epsilon", args: append(append([]string(nil), flags...), "--method", "della", "--density", "0.5", "--epsilon", "0.6", "dst/out"),
			wants: []string{"epsilon", "density"}},
		{name: "no-fine-tune", args: []string{"merge", "--quiet", "--base", "in/base", "dst/out"},
			wants: []string{"at least one model"}},
		{name: "yaml-density-0", spoil: func(t *testing.T, in string) {
			writeFile(t, filepath.Join(in, "cfg.yml"), "merge_method: ties\nbase_model: in/base\nmodels:\n  - model: in/ft1\n    parameters:\n      density: 0\n  - model: in/ft2\n")
		}, args: []string{"merge", "--quiet", "in/cfg.yml", "dst/out"}, wants: []string{"in/cfg.yml:6:", "density 0", "(0, 1]"}},
		{name: "yaml-typo-key", spoil: func(t *testing.T, in string) {
			writeFile(t, filepath.Join(in, "cfg.yml"), "merge_method: ties\nbase_modle: in/base\nmodels:\n  - model: in/ft1\n  - model: in/ft2\n")
		}, args: []string{"merge", "--quiet", "in/cfg.yml", "dst/out"}, wants: []string{"in/cfg.yml:2:", "base_modle", "did you mean base_model"}},
		{name: "yaml-typo-parameter", spoil: func(t *testing.T, in string) {
			writeFile(t, filepath.Join(in, "cfg.yml"), "merge_method: ties\nbase_model: in/base\nmodels:\n  - model: in/ft1\n  - model: in/ft2\nparameters:\n  densty: 0.5\n")
		}, args: []string{"merge", "--quiet", "in/cfg.yml", "dst/out"}, wants: []string{"in/cfg.yml:7:", "densty", "did you mean density"}},
		{name: "output-inside-input", args: append(append([]string(nil), flags...), "in/ft1/merged"),
			wants: []string{"inside the input", "in/ft1"}},
		{name: "no-space", spoil: func(t *testing.T, in string) {
			var fs unix.Statfs_t
			if err := unix.Statfs(in, &fs); err != nil {
				t.Skip(err)
			}
			free := int64(fs.Bavail) * int64(fs.Bsize)
			elems := max(int64(1)<<37, free/2) // ≥ 1 TiB of I64, and 4× the free space
			if elems*8 > 8<<40 {
				t.Skipf("%d bytes free: too much to exceed with a sparse file", free)
			}
			p := shardOf(filepath.Join(in, "base"))
			writeST(t, p, append(tiny(0), st{"buf", []int64{1}, nil}), map[string]string{"buf": "I64"})
			// Rewrite the header for the huge buffer, then extend the file sparse.
			hdr := readHeader(t, p)
			hdr = strings.Replace(hdr, `"shape":[1],"data_offsets":[48,56]`, fmt.Sprintf(`"shape":[%d],"data_offsets":[48,%d]`, elems, 48+8*elems), 1)
			writeRaw(t, p, hdr, make([]byte, 48))
			if err := os.Truncate(p, 8+int64(len(hdr))+48+8*elems); err != nil {
				t.Skipf("no sparse file that large here: %v", err)
			}
		}, wants: []string{"not enough free space"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			in := filepath.Join(dir, "in")
			for i, name := range []string{"base", "ft1", "ft2"} {
				writeST(t, shardOf(filepath.Join(in, name)), tiny(float32(i)), nil)
			}
			if err := os.MkdirAll(filepath.Join(dir, "dst"), 0o755); err != nil {
				t.Fatal(err)
			}
			if c.spoil != nil {
				c.spoil(t, in)
			}
			before := tree(t, in)
			args := c.args
			if args == nil {
				args = append(append([]string(nil), flags...), "dst/out")
			}
			stdout, stderr, code := tiesmm(t, dir, args...)
			if code != 1 {
				t.Fatalf("exit %d, want 1\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			// Warnings about the inputs may come first.
			if msg := afterWarnings(stderr); !strings.HasPrefix(msg, "tiesmm: ") {
				t.Errorf("stderr does not start with \"tiesmm: \" after the warnings: %s", stderr)
			}
			for _, w := range c.wants {
				if !containsAny(stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr)
				}
			}
			if ents, _ := os.ReadDir(filepath.Join(dir, "dst")); len(ents) > 0 {
				t.Errorf("dst holds %v after a failed merge", ents)
			}
			if after := tree(t, in); after != before {
				t.Errorf("the inputs changed:\n%s\nnow:\n%s", before, after)
			}
		})
	}
}

// containsAny reports whether s contains one of the |-separated strings of w.
func containsAny(s, w string) bool {
	for _, alt := range strings.Split(w, "|") {
		if strings.Contains(s, alt) {
			return true
		}
	}
	return false
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readHeader(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	return string(b[8 : 8+n])
}

// tree lists the files under dir with their sizes.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		lines = append(lines, fmt.Sprintf("%s %d", p, info.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// files reads every file of a directory except tiesmm_config.yml (the
// resolved config, which records how the merge was asked for).
func files(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		if e.Name() == "tiesmm_config.yml" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	if _, ok := out["model.safetensors"]; !ok {
		t.Fatalf("%s: no model.safetensors", dir)
	}
	return out
}

func sameFiles(t *testing.T, what string, a, b map[string][]byte) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d files against %d", what, len(a), len(b))
	}
	for name, x := range a {
		if !bytes.Equal(x, b[name]) {
			t.Fatalf("%s: %s differs", what, name)
		}
	}
}

// An existing non-empty output: refused and untouched without --force,
// replaced with it.
func TestCLIExistingOutput(t *testing.T) {
	dir := workDir(t)
	old := filepath.Join(dir, "out", "README.md") // an earlier merge's model card
	if err := os.MkdirAll(filepath.Dir(old), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, old, "keep me")
	before := tree(t, filepath.Join(dir, "out"))
	args := []string{"merge", "--quiet", "--base", "demo/base", "--model", "demo/ft1", "--model", "demo/ft2", "out"}
	_, stderr, code := tiesmm(t, dir, args...)
	if code != 1 || !strings.Contains(stderr, "not empty") || !strings.Contains(stderr, "--force") {
		t.Fatalf("exit %d, stderr %q: want 1 and a message about --force", code, stderr)
	}
	if after := tree(t, filepath.Join(dir, "out")); after != before {
		t.Fatalf("out changed:\n%s\nnow:\n%s", before, after)
	}
	mustRun(t, dir, append(args[:len(args)-1], "--force", "out")...)
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("README.md survived --force: %v", err)
	}
	files(t, filepath.Join(dir, "out"))
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("%s holds %d entries, want demo and out", dir, len(ents))
	}
}

// --dry-run prints the plan and writes nothing; --explain prints each
// tensor's parameters and writes nothing.
func TestCLIDryRunExplain(t *testing.T) {
	dir := workDir(t)
	before := tree(t, dir)
	out := mustRun(t, dir, "merge", "--dry-run", "--base", "demo/base", "--model", "demo/ft1", "--model", "demo/ft2", "--density", "0.3", "out/dry")
	for _, w := range []string{"method:", "ties (preset paper)", "model 2:", "density 0.3", "passes:"} {
		if !strings.Contains(out, w) {
			t.Errorf("--dry-run does not say %q:\n%s", w, out)
		}
	}
	ex := filepath.Join(examplesDir(t), "ties.yml")
	out = mustRun(t, dir, "merge", "--explain", ex, "out/explain")
	for _, w := range []string{"merge_method: ties", "density", "weight", "demo/ft3", "model.layers.1.mlp.down_proj.weight", "0.33"} {
		if !strings.Contains(out, w) {
			t.Errorf("--explain does not say %q:\n%s", w, out)
		}
	}
	if after := tree(t, dir); after != before {
		t.Errorf("--dry-run or --explain wrote something:\n%s\nnow:\n%s", before, after)
	}
}

func examplesDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs(filepath.Join("..", "..", "examples"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// The flag form (preset paper by default) and the YAML form with
// preset: paper write the same bytes; so do the Go kernels and the ones
// auto picks.
func TestCLISameBytes(t *testing.T) {
	dir := workDir(t)
	models := []string{"--base", "demo/base", "--model", "demo/ft1", "--model", "demo/ft2", "--model", "demo/ft3"}
	mustRun(t, dir, append(append([]string{"merge", "--quiet"}, models...), "flags")...)
	writeFile(t, filepath.Join(dir, "paper.yml"), `merge_method: ties
base_model: demo/base
models:
  - model: demo/ft1
  - model: demo/ft2
  - model: demo/ft3
parameters:
  preset: paper
`)
	mustRun(t, dir, "merge", "--quiet", "paper.yml", "yaml")
	sameFiles(t, "flags against YAML", files(t, filepath.Join(dir, "flags")), files(t, filepath.Join(dir, "yaml")))

	// "flags" ran with the default kernels, auto.
	for i, extra := range [][]string{nil, {"--method", "dare_ties", "--preset", "mergekit", "--density", "0.4", "--seed", "5"}} {
		var outs []map[string][]byte
		for _, k := range []string{"go", "auto"} {
			out := fmt.Sprintf("k%d-%s", i, k)
			if extra == nil && k == "auto" {
				out = "flags"
			} else {
				mustRun(t, dir, append(append(append([]string{"merge", "--quiet", "--kernel", k}, models...), extra...), out)...)
			}
			outs = append(outs, files(t, filepath.Join(dir, out)))
		}
		sameFiles(t, fmt.Sprintf("--kernel go against auto %v", extra), outs[0], outs[1])
	}
}

// Every example config merges the synthetic set end to end, from the
// directory where its relative paths resolve, into a readable model with
// the base's tensors.
func TestCLIExamples(t *testing.T) {
	exs, err := filepath.Glob(filepath.Join(examplesDir(t), "*.yml"))
	if err != nil || len(exs) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	dir := workDir(t)
	base, err := mmapio.OpenModel(filepath.Join(dir, "demo", "base"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ex := range exs {
		name := strings.TrimSuffix(filepath.Base(ex), ".yml")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join("out", name)
			stdout := mustRun(t, dir, "merge", ex, out)
			method, _, _ := strings.Cut(name, "-") // a variant's suffix follows a dash
			votes := slices.Contains([]string{"ties", "dare_ties", "breadcrumbs_ties", "della"}, method)
			if got := strings.Contains(stdout, "elected a sign"); got != votes {
				t.Errorf("summary speaks of a sign vote: %v, want %v (the method votes: %v)\n%s", got, votes, votes, stdout)
			}
			model := out
			if name == "emr" { // the unified task vector; each task is a model (emr_test.go)
				mustRun(t, dir, "emr-apply", "--quiet", out, "--task", "ft2", filepath.Join("out", "emr-ft2"))
				model = filepath.Join("out", "emr-ft2")
			}
			m, err := mmapio.OpenModel(filepath.Join(dir, model))
			if err != nil {
				t.Fatal(err)
			}
			tensors := base.Tensors
			if c, err := config.Load(ex); err == nil && c.Slices != nil && c.LayerRange == nil {
				tensors = frankenTensors(t, base, c, filepath.Join(dir, out))
			}
			rows := outVocabSize(t, filepath.Join(dir, model))
			if len(m.Tensors) != len(tensors) {
				t.Fatalf("%d tensors, want %d", len(m.Tensors), len(tensors))
			}
			for name, bt := range tensors {
				mt, ok := m.Tensors[name]
				want := slices.Clone(bt.Shape)
				if strings.Contains(name, "embed_tokens") || strings.Contains(name, "lm_head") {
					want[0] = rows // the tokenizer_source's vocabulary, or the base's
				}
				if !ok || !slices.Equal(mt.Shape, want) {
					t.Fatalf("tensor %q missing or of another shape", name)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, out, "tiesmm_config.yml")); err != nil {
				t.Errorf("no resolved config written: %v", err)
			}
		})
	}
}

// --compute-dtype bf16 (flag form) and compute_dtype: bfloat16 (YAML) write
// the same bytes, which differ from the float32 compute's on the synthetic
// bf16 models; a method the bf16 compute does not cover is refused before
// anything is written.
func TestCLIComputeDType(t *testing.T) {
	dir := workDir(t)
	models := []string{"--base", "demo/base", "--model", "demo/ft1", "--model", "demo/ft2", "--method", "task_arithmetic", "--weight", "0.3,0.6"}
	mustRun(t, dir, append(append([]string{"merge", "--quiet"}, models...), "f32")...)
	mustRun(t, dir, append(append([]string{"merge", "--quiet", "--compute-dtype", "bf16"}, models...), "flags")...)
	writeFile(t, filepath.Join(dir, "bf16.yml"), `merge_method: task_arithmetic
base_model: demo/base
models:
  - model: demo/ft1
    parameters: {weight: 0.3}
  - model: demo/ft2
    parameters: {weight: 0.6}
compute_dtype: bfloat16
`)
	mustRun(t, dir, "merge", "--quiet", "bf16.yml", "yaml")
	bf16 := files(t, filepath.Join(dir, "flags"))
	sameFiles(t, "flags against YAML", bf16, files(t, filepath.Join(dir, "yaml")))
	f32 := files(t, filepath.Join(dir, "f32"))
	differ := false
	for name, b := range bf16 {
		if strings.HasSuffix(name, ".safetensors") && !bytes.Equal(b, f32[name]) {
			differ = true
		}
	}
	if !differ {
		t.Error("the bf16 compute wrote the float32 compute's tensors")
	}
	_, errOut, code := tiesmm(t, dir, "merge", "--base", "demo/base", "--model", "demo/ft1", "--compute-dtype", "bf16", "refused")
	if code == 0 || !strings.Contains(errOut, "compute_dtype: bfloat16 covers linear, task_arithmetic, slerp, nuslerp and multislerp only") {
		t.Errorf("ties with --compute-dtype bf16: exit %d, %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "refused")); !os.IsNotExist(err) {
		t.Errorf("a refused merge left its output: %v", err)
	}
}

// frankenTensors are the tensors a frankenmerge of the demo models writes:
// the base's outside the layers, and its layer 0's for each of the slices'
// layers, which the output's config.json must count.
func frankenTensors(t *testing.T, base *mmapio.Model, c *config.Config, out string) map[string]*mmapio.Tensor {
	t.Helper()
	layers := 0
	for _, s := range c.Slices {
		layers += s.Len()
	}
	b, err := os.ReadFile(filepath.Join(out, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Layers int `json:"num_hidden_layers"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil || cfg.Layers != layers {
		t.Fatalf("config.json: num_hidden_layers %d, want %d (%v)", cfg.Layers, layers, err)
	}
	want := map[string]*mmapio.Tensor{}
	for name, bt := range base.Tensors {
		prefix, l, suffix, ok := config.SplitLayer(name)
		switch {
		case !ok:
			want[name] = bt
		case l == 0:
			for o := range layers {
				want[fmt.Sprintf("%s%d%s", prefix, o, suffix)] = bt
			}
		}
	}
	return want
}

// --dry-run prints a frankenmerge's layer map; a layer range beyond a model's
// layers is refused naming the model and its layer count.
func TestCLIFrankenmerge(t *testing.T) {
	dir := workDir(t)
	out := mustRun(t, dir, "merge", "--dry-run", filepath.Join(examplesDir(t), "passthrough-frankenmerge.yml"), "out")
	for _, line := range []string{"layers:   0–1 ← demo/base 0–1\n", "layers:   2 ← demo/ft1 1\n", "layers:   3–4 ← demo/ft2 0–1\n", "5 layers"} {
		if !strings.Contains(out, line) {
			t.Errorf("--dry-run lacks %q:\n%s", line, out)
		}
	}
	// --explain: each output tensor's input and scale.
	out = mustRun(t, dir, "merge", "--explain", filepath.Join(examplesDir(t), "passthrough-frankenmerge.yml"), "out")
	for _, re := range []string{`model\.layers\.2\.mlp\.up_proj\.weight +demo/ft1 +model\.layers\.1\.mlp\.up_proj\.weight +copied`,
		`model\.layers\.3\.self_attn\.o_proj\.weight +demo/ft2 +model\.layers\.0\.self_attn\.o_proj\.weight +0\.5\n`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("--explain lacks %s:\n%s", re, out)
		}
	}
	writeFile(t, filepath.Join(dir, "deep.yml"), `merge_method: passthrough
slices:
  - sources: [{model: demo/base, layer_range: [0, 2]}]
  - sources: [{model: demo/ft1, layer_range: [1, 9]}]
`)
	_, errOut, code := tiesmm(t, dir, "merge", "--dry-run", "deep.yml", "out")
	if code == 0 || !strings.Contains(errOut, "slices[1].sources[0]: layer_range [1, 9] of demo/ft1, which has 2 layers") {
		t.Errorf("exit %d, stderr %s", code, errOut)
	}
	// One slice from layer 0 that stops short of the models' layers: the
	// models form in its syntax, but a shallower model.
	writeFile(t, filepath.Join(dir, "short.yml"), `merge_method: ties
base_model: demo/base
slices:
  - sources: [{model: demo/base, layer_range: [0, 1]}, {model: demo/ft1, layer_range: [0, 1]}]
`)
	out = mustRun(t, dir, "merge", "--dry-run", "short.yml", "out")
	if !strings.Contains(out, "1 layers\nlayers:   0 ← demo/ft1 0 (base demo/base 0)\n") {
		t.Errorf("--dry-run of a short slice:\n%s", out)
	}
}

// Slices that merge three, one and two fine-tunes (examples/ties-slices-counts.yml):
// --dry-run and --explain show each slice's own models; each slice's layers
// are, byte for byte, those of a merge of whole models of the slice's
// models with its parameters; the summary counts each model's values over
// the tensors it is merged into.
func TestCLIFrankenmergeCounts(t *testing.T) {
	dir := workDir(t)
	ex := filepath.Join(examplesDir(t), "ties-slices-counts.yml")
	out := mustRun(t, dir, "merge", "--dry-run", ex, "out")
	for _, line := range []string{"model 3:  demo/ft3", "4 layers\n", "layers:   0–1 ← demo/ft1 0–1, demo/ft2 0–1, demo/ft3 0–1 (base demo/base 0–1)\n",
		"layers:   2 ← demo/ft1 1 (base demo/base 1)\n", "layers:   3 ← demo/ft2 1, demo/ft3 1 (base demo/base 1)\n"} {
		if !strings.Contains(out, line) {
			t.Errorf("--dry-run lacks %q:\n%s", line, out)
		}
	}
	out = mustRun(t, dir, "merge", "--explain", ex, "out")
	for _, re := range []string{`\nmodel\.layers\.2\.mlp\.up_proj\.weight +demo/ft1 +model\.layers\.1\.mlp\.up_proj\.weight +1 +0\.7\nmodel\.layers\.2\.`,
		`\nmodel\.layers\.3\.mlp\.up_proj\.weight +demo/ft2 +model\.layers\.1\.mlp\.up_proj\.weight +0\.8 +0\.5\n +demo/ft3 +model\.layers\.1\.mlp\.up_proj\.weight +0\.8 +0\.5\nmodel\.layers\.3\.`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("--explain lacks %s:\n%s", re, out)
		}
	}
	var sum jsonSummary
	if err := json.Unmarshal([]byte(mustRun(t, dir, "merge", "--quiet", "--json", ex, "out")), &sum); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, models, params string }{
		{"three", "[{model: demo/ft1}, {model: demo/ft2}, {model: demo/ft3}]", "{density: 0.7, weight: 0.8}"},
		{"one", "[{model: demo/ft1}]", "{density: 0.7, weight: 1}"},
		{"two", "[{model: demo/ft2}, {model: demo/ft3}]", "{density: 0.5, weight: 0.8}"},
	} {
		writeFile(t, filepath.Join(dir, tc.name+".yml"), "merge_method: ties\nbase_model: demo/base\nmodels: "+tc.models+"\nparameters: "+tc.params+"\n")
		mustRun(t, dir, "merge", "--quiet", tc.name+".yml", tc.name)
	}
	got := tensorBytes(t, filepath.Join(dir, "out"))
	want := map[string][]byte{}
	for _, tc := range []struct {
		from  string
		layer map[int]int // the output's layer of each layer read
		ends  string      // the tensors outside the layers it gives: "embed" or the others
	}{{"three", map[int]int{0: 0, 1: 1}, "embed"}, {"one", map[int]int{1: 2}, ""}, {"two", map[int]int{1: 3}, "rest"}} {
		for name, b := range tensorBytes(t, filepath.Join(dir, tc.from)) {
			prefix, l, suffix, ok := config.SplitLayer(name)
			switch {
			case ok:
				if o, in := tc.layer[l]; in {
					want[fmt.Sprintf("%s%d%s", prefix, o, suffix)] = b
				}
			case strings.Contains(name, "embed") == (tc.ends == "embed") && tc.ends != "":
				want[name] = b
			}
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d tensors, want %d", len(got), len(want))
	}
	values := map[string]int64{}
	for name, b := range want {
		if !bytes.Equal(got[name], b) {
			t.Errorf("%s differs from its slice's merge of whole models", name)
		}
		n := int64(len(b) / 2) // bf16
		_, l, _, ok := config.SplitLayer(name)
		switch {
		case ok && l < 2:
			values["demo/ft1"] += n
			values["demo/ft2"] += n
			values["demo/ft3"] += n
		case ok && l == 2:
			values["demo/ft1"] += n
		case ok:
			values["demo/ft2"] += n
			values["demo/ft3"] += n
		case strings.Contains(name, "embed"):
			values["demo/ft1"] += n
			values["demo/ft2"] += n
			values["demo/ft3"] += n
		default:
			values["demo/ft2"] += n
			values["demo/ft3"] += n
		}
	}
	if len(sum.Models) != 3 {
		t.Fatalf("summary of %d models, want 3", len(sum.Models))
	}
	for _, m := range sum.Models {
		if m.Values != values[m.Path] || m.Kept == nil || *m.Kept == 0 || *m.Kept > uint64(m.Values) {
			t.Errorf("%s: %d values (kept %v), want %d", m.Path, m.Values, m.Kept, values[m.Path])
		}
	}
}

// tensorBytes reads every tensor of the model at dir.
func tensorBytes(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	m, err := mmapio.OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := map[string][]byte{}
	for name, tt := range m.Tensors {
		f, err := os.Open(tt.File)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, tt.Size)
		_, err = f.ReadAt(b, tt.Offset)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		data[name] = b
	}
	return data
}
