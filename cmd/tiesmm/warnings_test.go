package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// vocab is a hand-made model with a vocabulary of rows rows.
func vocab(rows int64, shift float32) []st {
	ts := tiny(shift)
	for _, name := range []string{"model.embed_tokens.weight", "lm_head.weight"} {
		x := st{name, []int64{rows, 2}, make([]float32, 2*rows)}
		for i := range x.vals {
			x.vals[i] = float32(i%7) - 3 + shift*float32(i%2)
		}
		ts = append(ts, x)
	}
	return ts
}

// addedTokens is a folder holding in/base and in/ft2 with 32 rows of
// vocabulary, and in/ft1 with 38.
func addedTokens(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeST(t, shardOf(filepath.Join(dir, "in", "base")), vocab(32, 0), nil)
	writeST(t, shardOf(filepath.Join(dir, "in", "ft1")), vocab(38, 1), nil)
	writeST(t, shardOf(filepath.Join(dir, "in", "ft2")), vocab(32, 2), nil)
	return dir
}

// A fine-tune with added tokens: --dry-run names the rows dropped, per
// tensor, on stderr; clean inputs give no warning.
func TestCLIWarnVocabCut(t *testing.T) {
	dir := addedTokens(t)
	args := []string{"merge", "--dry-run", "--base", "in/base", "--model", "in/ft1", "--model", "in/ft2", "--density", "0.5", "out"}
	_, errOut, code := tiesmm(t, dir, args...)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(errOut), "\n") {
		if strings.HasPrefix(l, "warning: ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d warnings, want 2 (embed_tokens and lm_head):\n%s", len(lines), errOut)
	}
	for i, name := range []string{"model.embed_tokens.weight", "lm_head.weight"} {
		want := `warning: in/ft1: tensor "` + name + `": rows 32–37 (6 added tokens) are dropped: every input is cut to the 32×`
		if !strings.HasPrefix(lines[i], want) || !strings.Contains(lines[i], "tokenizer_source") {
			t.Errorf("warning %d:\n%s\nwant it to start with\n%s", i, lines[i], want)
		}
	}

	writeST(t, shardOf(filepath.Join(dir, "in", "ft1")), vocab(32, 1), nil)
	_, errOut, code = tiesmm(t, dir, args...)
	if code != 0 || strings.Contains(errOut, "warning") {
		t.Errorf("clean inputs: exit %d, stderr:\n%s", code, errOut)
	}
}

// afterWarnings is stderr without its leading warning lines.
func afterWarnings(stderr string) string {
	for strings.HasPrefix(stderr, "warning: ") {
		_, stderr, _ = strings.Cut(stderr, "\n")
	}
	return stderr
}

// The same warnings reach --json, as objects with their code, model and
// tensor; stdout holds nothing else.
func TestCLIWarnVocabCutJSON(t *testing.T) {
	dir := addedTokens(t)
	stdout, stderr, code := tiesmm(t, dir, "merge", "--json", "--base", "in/base", "--model", "in/ft1", "--model", "in/ft2", "--density", "0.5", "out")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	var sum struct{ Warnings []map[string]string }
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	if len(sum.Warnings) != 2 {
		t.Fatalf("%d warnings in the JSON, want 2:\n%s", len(sum.Warnings), stdout)
	}
	for i, name := range []string{"model.embed_tokens.weight", "lm_head.weight"} {
		w := sum.Warnings[i]
		if w["code"] != "vocab-cut" || w["model"] != "in/ft1" || w["tensor"] != name || !strings.Contains(w["message"], "rows 32–37") {
			t.Errorf("warning %d: %v", i, w)
		}
	}
	if !strings.Contains(stderr, `warning: in/ft1: tensor "lm_head.weight": rows 32–37`) {
		t.Errorf("stderr lacks the warning:\n%s", stderr)
	}
}
