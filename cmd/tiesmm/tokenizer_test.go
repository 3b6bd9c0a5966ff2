package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tiesmm/tiesmm/mmapio"
)

// outVocabSize is the vocab_size of a model's config.json.
func outVocabSize(t *testing.T, dir string) int64 {
	t.Helper()
	var cfg struct {
		VocabSize int64 `json:"vocab_size"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.VocabSize
}

// outTokens is every token of a model's tokenizer.json (model.vocab and
// added tokens) by id.
func outTokens(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	var tok struct {
		Added []struct {
			ID      int64  `json:"id"`
			Content string `json:"content"`
		} `json:"added_tokens"`
		Model struct {
			Vocab map[string]int64 `json:"vocab"`
		} `json:"model"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &tok); err != nil {
		t.Fatal(err)
	}
	out := tok.Model.Vocab
	for _, a := range tok.Added {
		out[a.Content] = a.ID
	}
	return out
}

// The union example merges the demo's fine-tunes, which added <|tool|> and
// two tokens each of their own, into a model whose tokenizer holds the
// base's 259 ids then the five new tokens in config order, with embeddings
// of 320 rows (264 padded to a multiple of 64); a fine-tune as
// tokenizer_source gives its own tokenizer, unchanged.
func TestCLITokenizerUnion(t *testing.T) {
	dir := workDir(t)
	ex := filepath.Join(examplesDir(t), "tokenizer_union.yml")
	plan := mustRun(t, dir, "merge", "--dry-run", ex, "union")
	// Of the 5 tokens added, the base lacks all (<|tool|> is a mean of the
	// fine-tunes', the others the one fine-tune's) and each fine-tune the
	// other's 2.
	if want := "vocab:    tokenizer_source union: 264 tokens (5 appended), 320 embedding rows; rows a model lacks: 8 from the only model with the token, 0 from the base, 1 means, 0 zeros"; !strings.Contains(plan, want) {
		t.Errorf("--dry-run does not say\n%s\n%s", want, plan)
	}
	_, errOut, code := tiesmm(t, dir, "merge", "--quiet", ex, "union")
	if want := "warning: tokenizer_source union: the 5 tokens appended take ids 259–263 in config order"; code != 0 || !strings.Contains(errOut, want) {
		t.Errorf("exit %d, want a warning saying\n%s\n%s", code, want, errOut)
	}
	toks := outTokens(t, filepath.Join(dir, "union"))
	for i, tok := range []string{"<|tool|>", "<|ft1_1|>", "<|ft1_2|>", "<|ft2_1|>", "<|ft2_2|>"} {
		if id, ok := toks[tok]; !ok || id != int64(259+i) {
			t.Errorf("token %s: id %d (%v), want %d", tok, id, ok, 259+i)
		}
	}
	if len(toks) != 264 {
		t.Errorf("%d tokens, want 264", len(toks))
	}
	if got := outVocabSize(t, filepath.Join(dir, "union")); got != 320 {
		t.Errorf("vocab_size %d, want 320", got)
	}
	m, err := mmapio.OpenModel(filepath.Join(dir, "union"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"model.embed_tokens.weight", "lm_head.weight"} {
		if got := m.Tensors[name].Shape; got[0] != 320 {
			t.Errorf("%s: shape %v, want 320 rows", name, got)
		}
	}

	writeFile(t, filepath.Join(dir, "ft1.yml"), `merge_method: task_arithmetic
base_model: demo/base
models: [{model: demo/ft1}, {model: demo/ft2}]
tokenizer_source: model:demo/ft1
`)
	mustRun(t, dir, "merge", "--quiet", "ft1.yml", "ft1")
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		got, err := os.ReadFile(filepath.Join(dir, "ft1", name))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(dir, "demo", "ft1", name))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%s is not demo/ft1's", name)
		}
	}
	if got := outVocabSize(t, filepath.Join(dir, "ft1")); got != 262 {
		t.Errorf("vocab_size %d, want 262 (demo/ft1's tokens)", got)
	}

	// The base's vocabulary: its tokenizer as it is (no token past its
	// vocab_size to drop) and one row per token, as mergekit writes it.
	writeFile(t, filepath.Join(dir, "base.yml"), `merge_method: task_arithmetic
base_model: demo/base
models: [{model: demo/ft1}, {model: demo/ft2}]
tokenizer_source: base
`)
	mustRun(t, dir, "merge", "--quiet", "base.yml", "base")
	got, err := os.ReadFile(filepath.Join(dir, "base", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(dir, "demo", "base", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("tokenizer.json is not demo/base's")
	}
	if got := outVocabSize(t, filepath.Join(dir, "base")); got != 259 {
		t.Errorf("vocab_size %d, want 259 (demo/base's tokens)", got)
	}

	// A model without tokenizer.json cannot take part.
	if err := os.MkdirAll(filepath.Join(dir, "bare"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"model.safetensors", "config.json"} {
		if err := os.Symlink(filepath.Join(dir, "demo", "ft2", f), filepath.Join(dir, "bare", f)); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "bare.yml"), `merge_method: task_arithmetic
base_model: demo/base
models: [{model: demo/ft1}, {model: bare}]
tokenizer_source: union
`)
	_, errOut, code = tiesmm(t, dir, "merge", "bare.yml", "bare-out")
	if code == 0 || !strings.Contains(errOut, "bare: no tokenizer.json") {
		t.Errorf("exit %d, want an error naming bare's missing tokenizer.json:\n%s", code, errOut)
	}
}

// writeBigTokenizer gives a model a tokenizer of n ordinary tokens and the
// added tokens extra after them.
func writeBigTokenizer(t *testing.T, dir string, n int, extra ...string) {
	t.Helper()
	vocab := make(map[string]int, n)
	for i := range n {
		vocab[fmt.Sprintf("t%d", i)] = i
	}
	var added []map[string]any
	for i, s := range extra {
		added = append(added, map[string]any{"id": n + i, "content": s, "special": true})
	}
	b, err := json.Marshal(map[string]any{"added_tokens": added, "model": map[string]any{"type": "BPE", "vocab": vocab, "merges": []string{}}})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "tokenizer.json"), string(b))
}

// A union of embeddings larger than --max-memory (three models' 32000 × 1024
// bf16 rows, 393 MB of embeddings, under a 100 MiB bound), padded so that the
// pad rows' pass runs too, stays within the bound.
func TestPeakRSSTokenizerUnion(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and merges 500 MB")
	}
	dir := t.TempDir()
	mustRun(t, dir, "synth", "--params", "80M", "--models", "2", "--embed-rows", "32000", "--embed-cols", "1024", "sets")
	writeBigTokenizer(t, filepath.Join(dir, "sets", "base"), 31990)
	writeBigTokenizer(t, filepath.Join(dir, "sets", "ft1"), 31990, "<|tool|>", "<|a|>")
	writeBigTokenizer(t, filepath.Join(dir, "sets", "ft2"), 31990, "<|tool|>", "<|b|>")
	writeFile(t, filepath.Join(dir, "union.yml"), `merge_method: ties
base_model: sets/base
models:
  - model: sets/ft1
    parameters: {weight: 0.5, density: 0.5}
  - model: sets/ft2
    parameters: {weight: 0.5, density: 0.5}
tokenizer: {source: union, pad_to_multiple_of: 1000}
`)
	const bound = 100 << 20
	peak, msg := mergePeak(t, dir, "--max-memory", "100MiB", "union.yml", "out")
	t.Logf("peak RSS %d MiB, bound %d MiB", peak>>20, bound>>20)
	if peak > bound {
		t.Errorf("peak RSS %d MiB over --max-memory %d MiB\n%s", peak>>20, bound>>20, msg)
	}
	if got := outVocabSize(t, filepath.Join(dir, "out")); got != 32000 {
		t.Errorf("vocab_size %d, want 32000 (31993 tokens padded to a multiple of 1000)", got)
	}
}

// EMR rebuilds a task on the base's own rows, so a tokenizer_source that
// changes them is refused before anything is written.
func TestCLIEMRRefusesTokenizerSource(t *testing.T) {
	dir := workDir(t)
	writeFile(t, filepath.Join(dir, "emr-union.yml"), `merge_method: emr
base_model: demo/base
models: [{model: demo/ft1}, {model: demo/ft2}]
tokenizer_source: union
`)
	_, errOut, code := tiesmm(t, dir, "merge", "emr-union.yml", "out")
	if want := "emr: tokenizer_source union is not supported: a task is rebuilt on the base's own rows"; code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("exit %d, want 1 and\n%s\n%s", code, want, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); !os.IsNotExist(err) {
		t.Errorf("a refused merge left its output: %v", err)
	}
}

// The tokens: example overrides three rows of the union: --dry-run counts
// them; <|ft2_1|>, forced to the base's </s> in every model, merges to that
// row as it is; <|ft1_2|>, zeros in the base and ft2, to half ft1's row.
// The resolved config keeps the overrides. Overrides that cannot give a row
// stop the merge before anything is written.
func TestCLITokenizerTokens(t *testing.T) {
	dir := workDir(t)
	ex := filepath.Join(examplesDir(t), "tokenizer_tokens.yml")
	plan := mustRun(t, dir, "merge", "--dry-run", ex, "out")
	// <|tool|>: the base's row; <|ft2_1|>: all 3 forced; <|ft1_2|>: the base's and ft2's.
	if want := "rows a model lacks: 4 from the only model with the token, 0 from the base, 0 means, 0 zeros; tokens: 3 overrides (1 forced) set 6 rows"; !strings.Contains(plan, want) {
		t.Errorf("--dry-run does not say\n%s\n%s", want, plan)
	}
	mustRun(t, dir, "merge", "--quiet", ex, "out")
	toks := outTokens(t, filepath.Join(dir, "out"))
	baseToks := outTokens(t, filepath.Join(dir, "demo", "base"))
	ft1Toks := outTokens(t, filepath.Join(dir, "demo", "ft1"))
	for _, name := range []string{"model.embed_tokens.weight", "lm_head.weight"} {
		out := tensorValues(t, filepath.Join(dir, "out"), "", name)
		base := tensorValues(t, filepath.Join(dir, "demo", "base"), "", name)
		ft1 := tensorValues(t, filepath.Join(dir, "demo", "ft1"), "", name)
		cols := int64(len(base)) / outVocabSize(t, filepath.Join(dir, "demo", "base"))
		row := func(vals []float32, id int64) []float32 { return vals[id*cols : (id+1)*cols] }
		got, want := row(out, toks["<|ft2_1|>"]), row(base, baseToks["</s>"])
		for c := range got {
			if math.Float32bits(got[c]) != math.Float32bits(want[c]) {
				t.Fatalf("%s: <|ft2_1|> col %d = %v, want the base's </s> %v", name, c, got[c], want[c])
			}
		}
		got, want = row(out, toks["<|ft1_2|>"]), row(ft1, ft1Toks["<|ft1_2|>"])
		for c := range got {
			if got[c] != want[c]/2 {
				t.Fatalf("%s: <|ft1_2|> col %d = %v, want half ft1's %v", name, c, got[c], want[c])
			}
		}
	}
	resolved, err := os.ReadFile(filepath.Join(dir, "out", "tiesmm_config.yml"))
	if err != nil || !strings.Contains(string(resolved), "force: true") || !strings.Contains(string(resolved), "model_token") {
		t.Errorf("the resolved config lost the overrides (%v):\n%s", err, resolved)
	}

	for _, tc := range []struct{ tokens, want string }{
		{`"<|tool|>": {source: demo/ft3}`, `tokenizer.tokens["<|tool|>"]: demo/ft3 is not a model of the merge`},
		{`"<|tool|>": {source: demo/base}`, `tokenizer.tokens["<|tool|>"]: source demo/base does not have the token`},
		{`"<|tool|>": {source: {kind: model_token, model: demo/ft2, token: "<|ft1_1|>"}}`, `tokenizer.tokens["<|tool|>"]: token "<|ft1_1|>" is not in`},
		{`"<|tool|>": {source: {kind: model_token, model: demo/ft2, token_id: 100000}}`, `tokenizer.tokens["<|tool|>"]: row 100000 of`},
		{`"<|tool|>": {force: true}`, `tokenizer.tokens["<|tool|>"] has no source`},
	} {
		writeFile(t, filepath.Join(dir, "bad.yml"), "merge_method: task_arithmetic\nbase_model: demo/base\nmodels: [{model: demo/ft1}, {model: demo/ft2}]\ntokenizer:\n  source: union\n  tokens:\n    "+tc.tokens+"\n")
		_, errOut, code := tiesmm(t, dir, "merge", "bad.yml", "bad-out")
		if code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d, want an error saying\n%s\n%s", tc.tokens, code, tc.want, errOut)
		}
		if _, err := os.Stat(filepath.Join(dir, "bad-out")); !os.IsNotExist(err) {
			t.Errorf("%s: a refused merge left its output: %v", tc.tokens, err)
		}
	}

	// A token listed that the output lacks is appended to it, as mergekit's
	// add_tokens does, with the row its source gives.
	writeFile(t, filepath.Join(dir, "appended.yml"), "merge_method: task_arithmetic\nbase_model: demo/base\nmodels: [{model: demo/ft1}]\ntokenizer:\n  source: base\n  tokens:\n    \"<|none|>\": {source: {kind: zero}}\n")
	mustRun(t, dir, "merge", "--quiet", "appended.yml", "appended")
	baseRows := int64(len(outTokens(t, filepath.Join(dir, "demo", "base"))))
	if got := outVocabSize(t, filepath.Join(dir, "appended")); got != baseRows+1 {
		t.Errorf("vocab_size %d, want the base's %d tokens and one appended", got, baseRows)
	}
	if id, ok := outTokens(t, filepath.Join(dir, "appended"))["<|none|>"]; !ok || id != baseRows {
		t.Errorf("<|none|> has id %d (%v), want %d", id, ok, baseRows)
	}
	emb := tensorValues(t, filepath.Join(dir, "appended"), "", "model.embed_tokens.weight")
	cols := int64(len(emb)) / (baseRows + 1)
	for c, v := range emb[baseRows*cols:] {
		if math.Float32bits(v) != 0 {
			t.Fatalf("<|none|> col %d = %v, want +0", c, v)
		}
	}
}
