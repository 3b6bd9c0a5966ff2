package merge

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// Policies the user may not expect: each situation gives exactly its warning,
// in the plan (known from headers) or in the summary (found while merging).

// warnPlan plans a merge of models into the fixture's output.
func (f errFixture) warnPlan(t *testing.T, base string, models []string, m Method, resolve Resolver, outDType string) *Plan {
	t.Helper()
	if resolve == nil {
		resolve = tiesParams(0.5)
	}
	p, err := NewPlan(Options{Base: base, Models: models, Out: f.out, Threads: 2, OutDType: outDType}, m, resolve)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func runPlan(t *testing.T, p *Plan) *Summary {
	t.Helper()
	sum, err := Run(context.Background(), p, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// wantWarnings checks that ws are exactly want, in order, each message
// holding every one of its words.
func wantWarnings(t *testing.T, ws []Warning, want ...struct {
	code, model, tensor string
	says                []string
}) {
	t.Helper()
	if len(ws) != len(want) {
		t.Fatalf("%d warnings, want %d:\n%s", len(ws), len(want), warningLines(ws))
	}
	for i, w := range want {
		g := ws[i]
		if g.Code != w.code || g.Model != w.model || g.Tensor != w.tensor {
			t.Errorf("warning %d: code %q model %q tensor %q, want %q %q %q", i, g.Code, g.Model, g.Tensor, w.code, w.model, w.tensor)
		}
		for _, s := range w.says {
			if !strings.Contains(g.Message, s) {
				t.Errorf("warning %d does not say %q: %s", i, s, g.Message)
			}
		}
	}
}

func warningLines(ws []Warning) string {
	var b strings.Builder
	PrintWarnings(&b, ws)
	return b.String()
}

type want = struct {
	code, model, tensor string
	says                []string
}

func TestWarnNoneOnCleanInputs(t *testing.T) {
	for _, m := range []Method{newMethod(t, "ties", "mergekit"), newMethod(t, "ties", "paper"),
		newMethod(t, "breadcrumbs", ""), newMethod(t, "task_arithmetic", ""), newMethod(t, "linear", "")} {
		t.Run(m.Name+"-"+m.Preset, func(t *testing.T) {
			f := newFixture(t)
			base, ft1, ft2 := f.model(t, "base", 0), f.model(t, "ft1", 1), f.model(t, "ft2", 2)
			for _, out := range []string{"", "float32", "F32"} {
				p := f.warnPlan(t, base, []string{ft1, ft2}, m, nil, out)
				wantWarnings(t, p.Warnings)
			}
			p := f.warnPlan(t, base, []string{ft1, ft2}, m, nil, "")
			wantWarnings(t, runPlan(t, p).Warnings)
		})
	}
}

// embeddings are a vocabulary of rows rows, two wide.
func embeddings(rows int, shift float32) []testTensor {
	var ts []testTensor
	for _, name := range []string{"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} {
		tt := testTensor{name: name, shape: []int64{int64(rows), 2}, dt: kernels.F32, vals: make([]float32, 2*rows)}
		if name == "model.norm.weight" {
			tt.shape, tt.vals = []int64{2}, make([]float32, 2)
		}
		for i := range tt.vals {
			tt.vals[i] = float32(i%5) - 2 + shift*float32(i%3-1)
		}
		ts = append(ts, tt)
	}
	return ts
}

func TestWarnVocabCut(t *testing.T) {
	f := newFixture(t)
	base, ft1, ft2 := filepath.Join(f.in, "base"), filepath.Join(f.in, "ft1"), filepath.Join(f.in, "ft2")
	writeModel(t, base, embeddings(32, 0), 0)
	writeModel(t, ft1, embeddings(38, 1), 0) // 6 added tokens
	writeModel(t, ft2, embeddings(32, 2), 0)
	p := f.warnPlan(t, base, []string{ft1, ft2}, newMethod(t, "ties", "mergekit"), nil, "")
	says := []string{"rows 32–37 (6 added tokens)", "dropped", "cut to the 32×2 all of them have", "tokenizer_source: union would keep"}
	wantWarnings(t, p.Warnings,
		want{WarnVocabCut, ft1, "model.embed_tokens.weight", says},
		want{WarnVocabCut, ft1, "lm_head.weight", says})
	wantWarnings(t, runPlan(t, p).Warnings,
		want{WarnVocabCut, ft1, "model.embed_tokens.weight", says},
		want{WarnVocabCut, ft1, "lm_head.weight", says})

	// One added token.
	f = newFixture(t)
	base, ft1 = filepath.Join(f.in, "base"), filepath.Join(f.in, "ft1")
	writeModel(t, base, embeddings(32, 0), 0)
	writeModel(t, ft1, embeddings(33, 1), 0)
	p = f.warnPlan(t, base, []string{ft1}, newMethod(t, "task_arithmetic", ""), func(string, int, int) (TensorParams, error) {
		return TensorParams{Density: []float64{1}, Weights: []float32{1}, Lambda: 1}, nil
	}, "")
	one := []string{"row 32 (1 added token) is dropped"}
	wantWarnings(t, p.Warnings,
		want{WarnVocabCut, ft1, "model.embed_tokens.weight", one},
		want{WarnVocabCut, ft1, "lm_head.weight", one})
}

func TestWarnTensorIgnored(t *testing.T) {
	f := newFixture(t)
	base, ft2 := f.model(t, "base", 0), f.model(t, "ft2", 2)
	ft1, ft3 := filepath.Join(f.in, "ft1"), filepath.Join(f.in, "ft3")
	extra := goodTensors(1)
	for _, name := range []string{"x1", "x2", "x3", "x4", "x5"} {
		extra = append(extra, vec(name, 1, 2))
	}
	writeModel(t, ft1, extra, 0)
	writeModel(t, ft3, append(goodTensors(3), vec("lora.scale", 1)), 0)
	p := f.warnPlan(t, base, []string{ft1, ft2, ft3}, newMethod(t, "ties", "mergekit"),
		func(string, int, int) (TensorParams, error) {
			return TensorParams{Density: []float64{0.5, 0.5, 0.5}, Weights: []float32{1, 1, 1}, Lambda: 1}, nil
		}, "")
	wantWarnings(t, p.Warnings,
		want{WarnTensorIgnored, ft1, "", []string{"5 tensors", "not in the base", "ignored", `"x1", "x2", "x3" and 2 more`}},
		want{WarnTensorIgnored, ft3, "lora.scale", []string{"not in the base: ignored"}})
}

func TestWarnStrayShard(t *testing.T) {
	f := newFixture(t)
	base := filepath.Join(f.in, "base")
	writeModel(t, base, goodTensors(0), 16) // two shards and an index
	if _, err := os.Stat(filepath.Join(base, "model.safetensors.index.json")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(base, "model-00001-of-00002.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"old-00001-of-00002.safetensors", ".hidden.safetensors"} {
		if err := os.WriteFile(filepath.Join(base, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ft1, ft2 := f.model(t, "ft1", 1), f.model(t, "ft2", 2)
	// A directory with model.safetensors reads only that.
	if err := os.WriteFile(filepath.Join(ft2, "model-v2.safetensors"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	p := f.warnPlan(t, base, []string{ft1, ft2}, newMethod(t, "ties", "mergekit"), nil, "")
	wantWarnings(t, p.Warnings,
		want{WarnStrayShard, base, "", []string{"1 *.safetensors file", "is ignored", "not named by the index model.safetensors.index.json", `"old-00001-of-00002.safetensors"`}},
		want{WarnStrayShard, ft2, "", []string{"only model.safetensors is read", `"model-v2.safetensors"`}})
	// linear without a base: the first model lays out the output, and is
	// told of once.
	p = f.warnPlan(t, ft2, []string{ft2, ft1}, newMethod(t, "linear", ""), nil, "")
	wantWarnings(t, p.Warnings, want{WarnStrayShard, ft2, "", []string{`"model-v2.safetensors"`}})
}

func TestWarnCopiedFromBase(t *testing.T) {
	f := newFixture(t)
	ints := func(shift int64) []testTensor {
		return append(goodTensors(float32(shift)),
			testTensor{name: "pos_ids", shape: []int64{3}, ints: []int64{0, 1, 2 + shift}},
			testTensor{name: "mask", shape: []int64{2}, ints: []int64{1, shift}})
	}
	var paths []string
	for i, name := range []string{"base", "ft1", "ft2"} {
		p := filepath.Join(f.in, name)
		writeModel(t, p, ints(int64(i)), 0)
		paths = append(paths, p)
	}
	p := f.warnPlan(t, paths[0], paths[1:], newMethod(t, "ties", "mergekit"), nil, "")
	says := []string{"2 non-float tensors", "copied from the base unmerged", `"pos_ids", "mask"`}
	wantWarnings(t, p.Warnings, want{WarnCopiedFromBase, paths[0], "", says})
	wantWarnings(t, runPlan(t, p).Warnings, want{WarnCopiedFromBase, paths[0], "", says})

	// One: named as the tensor.
	f = newFixture(t)
	base := filepath.Join(f.in, "base")
	writeModel(t, base, append(goodTensors(0), testTensor{name: "pos_ids", shape: []int64{3}, ints: []int64{0, 1, 2}}), 0)
	p = f.warnPlan(t, base, []string{f.model(t, "ft1", 1), f.model(t, "ft2", 2)}, newMethod(t, "ties", "mergekit"), nil, "")
	wantWarnings(t, p.Warnings, want{WarnCopiedFromBase, base, "pos_ids", []string{"not a float tensor: copied from the base unmerged"}})
}

func TestWarnZeroTaskVectorSameFiles(t *testing.T) {
	f := newFixture(t)
	base, ft2 := f.model(t, "base", 0), f.model(t, "ft2", 2)
	// The base again, by a hard link to its shard.
	ft1 := filepath.Join(f.in, "ft1.safetensors")
	if err := os.Link(shard(base), ft1); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{ft1, base} {
		p := f.warnPlan(t, base, []string{m, ft2}, newMethod(t, "ties", "mergekit"), nil, "")
		says := []string{"the base's own files", `"model.safetensors"`, "task vector is zero", "contributes nothing"}
		wantWarnings(t, p.Warnings, want{WarnZeroTaskVector, m, "", says})
		// Said once, not again when the trim keeps nothing.
		wantWarnings(t, runPlan(t, p).Warnings, want{WarnZeroTaskVector, m, "", says})
		if err := os.RemoveAll(f.out); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWarnContributesNothing(t *testing.T) {
	f := newFixture(t)
	base, ft1, ft2 := f.model(t, "base", 0), f.model(t, "ft1", 1), f.model(t, "ft2", 2)
	weights := func(w1 float32) Resolver {
		return func(name string, _, _ int) (TensorParams, error) {
			tp := TensorParams{Density: []float64{0.5, 0.5}, Weights: []float32{1, 0}, Lambda: 1}
			if name == "w1" {
				tp.Weights[0] = w1
			}
			return tp, nil
		}
	}
	// Model 2 has weight 0 everywhere, model 1 on w1 only.
	for _, m := range []Method{newMethod(t, "ties", "mergekit"), newMethod(t, "linear", "")} {
		p := f.warnPlan(t, base, []string{ft1, ft2}, m, weights(0), "")
		wantWarnings(t, p.Warnings,
			want{WarnContributesNone, ft1, "w1", []string{"weight 0 (on 1 of 2 merged tensors)", "contributes nothing to it"}},
			want{WarnContributesNone, ft2, "", []string{"weight 0 on every merged tensor (2)", "contributes nothing"}})
	}
	// Model Stock takes no weights.
	p := f.warnPlan(t, base, []string{ft1, ft2}, newMethod(t, "model_stock", ""), weights(0), "")
	wantWarnings(t, p.Warnings)

	// A whole-model trim whose k is 0.
	m := newMethod(t, "ties", "paper")
	m.Ties = ExactK
	p = f.warnPlan(t, base, []string{ft1, ft2}, m, func(string, int, int) (TensorParams, error) {
		return TensorParams{Density: []float64{0.5, 0.05}, Weights: []float32{1, 1}, Lambda: 1}, nil
	}, "")
	wantWarnings(t, p.Warnings, want{WarnContributesNone, ft2, "", []string{"density 0.05 keeps no element of 12", "k = ⌊n·density⌋ = 0"}})
}

func TestWarnNarrowerOutDType(t *testing.T) {
	f := newFixture(t)
	typed := func(name string, base, ft kernels.DType) (string, string) {
		b, m := filepath.Join(f.in, name, "base"), filepath.Join(f.in, name, "ft")
		ts := goodTensors(0)
		for i := range ts {
			ts[i].dt = base
		}
		writeModel(t, b, ts, 0)
		ts = goodTensors(1)
		for i := range ts {
			ts[i].dt = ft
		}
		writeModel(t, m, ts, 0)
		return b, m
	}
	one := func(string, int, int) (TensorParams, error) {
		return TensorParams{Density: []float64{0.5}, Weights: []float32{1}, Lambda: 1}, nil
	}
	ta := newMethod(t, "task_arithmetic", "")
	for _, c := range []struct {
		base, ft kernels.DType
		out      string
		says     []string // nil: no warning
	}{
		{kernels.F32, kernels.F32, "bfloat16", []string{"out dtype BF16", "narrower than the F32 inputs of 2 merged tensors", "8 significant bits"}},
		{kernels.F32, kernels.F32, "float16", []string{"out dtype F16", "F32 inputs", "±65504"}},
		{kernels.F16, kernels.BF16, "float16", []string{"out dtype F16", "the BF16 inputs of 2"}},
		{kernels.F16, kernels.F32, "bfloat16", []string{"out dtype BF16", "the F16 and F32 inputs"}},
		{kernels.BF16, kernels.BF16, "bfloat16", nil},
		{kernels.BF16, kernels.F16, "float32", nil},
	} {
		b, m := typed(c.base.String()+c.ft.String()+c.out, c.base, c.ft)
		p := f.warnPlan(t, b, []string{m}, ta, one, c.out)
		if c.says == nil {
			wantWarnings(t, p.Warnings)
		} else {
			wantWarnings(t, p.Warnings, want{WarnNarrowerOutDType, "", "", c.says})
		}
	}
}
