package merge

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/kernels"
)

// vocabModel is a hand-made model for the tokenizer tests: a tokenizer
// (ordinary tokens and added tokens by id), a vocab_size and embeddings of
// rows × cols random values.
type vocabModel struct {
	name       string
	vocab      map[string]int
	added      map[string]int
	size, rows int
}

const vocabCols = 3

// The models of the tests: the base, ft1 (its ids shuffled, "g" and <|x|>
// added) and ft2 (no "f"; "h", <|x|> and <|y|> added), and a tokenizer
// folder "tok" holding a token none of them has.
var vocabModels = []vocabModel{
	{"base", map[string]int{"a": 0, "b": 1, "c": 2, "d": 3, "e": 4, "f": 5, "zz": 7}, map[string]int{"<s>": 6}, 7, 7},
	{"ft1", map[string]int{"b": 0, "a": 1, "c": 2, "d": 3, "e": 4, "f": 5, "g": 7}, map[string]int{"<s>": 6, "<|x|>": 8}, 9, 9},
	{"ft2", map[string]int{"a": 0, "b": 1, "c": 2, "d": 3, "e": 4, "h": 5}, map[string]int{"<s>": 6, "<|x|>": 7, "<|y|>": 8}, 10, 10},
}

var vocabSource = vocabModel{"tok", map[string]int{"a": 0, "b": 1, "c": 2, "q": 4}, map[string]int{"<|x|>": 3}, 5, 5}

// writeTokenizer writes m's tokenizer.json and config.json into dir.
func writeTokenizer(t *testing.T, dir string, m vocabModel) {
	t.Helper()
	var added []map[string]any
	for tok, id := range m.added {
		added = append(added, map[string]any{"id": id, "content": tok, "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false})
	}
	slices.SortFunc(added, func(a, b map[string]any) int { return a["id"].(int) - b["id"].(int) })
	vocab := map[string]int{}
	for tok, id := range m.vocab {
		vocab[tok] = id
	}
	tok, err := json.Marshal(map[string]any{"version": "1.0", "added_tokens": added,
		"model": map[string]any{"type": "BPE", "vocab": vocab, "merges": []string{}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`{"architectures": ["LlamaForCausalLM"], "vocab_size": %d}`, m.size)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"tokenizer.json": tok, "config.json": []byte(cfg),
		"tokenizer_config.json": []byte(`{"tokenizer_class": "PreTrainedTokenizerFast", "added_tokens_decoder": {"6": {"content": "<s>", "special": true}}}`)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// vocabTensors are a model's tensors: two embeddings of rows × cols, a norm
// and a layer, from r (the same r state gives the same non-embedding values).
func vocabTensors(r *rand.Rand, rows, cols int, dt kernels.DType) []testTensor {
	val := func() float32 { return roundTo(dt, float32(r.NormFloat64())) }
	var ts []testTensor
	for _, name := range []string{"model.embed_tokens.weight", "lm_head.weight"} {
		tt := testTensor{name: name, shape: []int64{int64(rows), int64(cols)}, dt: dt, vals: make([]float32, rows*cols)}
		for i := range tt.vals {
			tt.vals[i] = val()
		}
		ts = append(ts, tt)
	}
	for _, name := range []string{"model.norm.weight", "model.layers.0.mlp.up_proj.weight"} {
		tt := testTensor{name: name, shape: []int64{2, int64(cols)}, dt: dt, vals: make([]float32, 2*cols)}
		for i := range tt.vals {
			tt.vals[i] = val()
		}
		ts = append(ts, tt)
	}
	return ts
}

// tokensOf is every token a model has a row for, by id.
func tokensOf(m vocabModel) map[string]int {
	out := map[string]int{}
	for _, set := range []map[string]int{m.vocab, m.added} {
		for tok, id := range set {
			if id < m.size {
				out[tok] = id
			}
		}
	}
	return out
}

// refRows is the plain reference of a tokenizer_source's rows: each model's
// embedding rows for the output tokens (by output id, "" for none), then
// pad rows of its mean, with the fill rules in order (the only model, the
// base, the float32 mean, zeros); base is the base model's index. A token
// over lists (its Model a model's name) takes, in the models that lack it
// or in all with Force, the row its source gives: the model's own row of
// it, zeros, or the model's row of another token (in its whole tokenizer)
// or of a row index.
func refRows(out []string, rows int, models []vocabModel, embeds [][]float32, base int, over []config.TokenOverride) [][]float32 {
	has := make([]map[string]int, len(models))
	for k, m := range models {
		has[k] = tokensOf(m)
	}
	overs := map[string]config.TokenOverride{}
	for _, o := range over {
		overs[o.Token] = o
	}
	index := func(name string) int {
		return slices.IndexFunc(models, func(m vocabModel) bool { return m.name == name })
	}
	res := make([][]float32, len(models))
	for k := range models {
		res[k] = make([]float32, rows*vocabCols)
		for id, tok := range out {
			dst := res[k][id*vocabCols : (id+1)*vocabCols]
			row := func(m int) []float32 {
				i := has[m][tok]
				return embeds[m][i*vocabCols : (i+1)*vocabCols]
			}
			if o, ok := overs[tok]; ok && tok != "" {
				if _, own := has[k][tok]; own && !o.Force {
					copy(dst, row(k))
					continue
				}
				m := index(o.Model)
				switch o.Source {
				case config.TokenFromModel:
					copy(dst, row(m))
				case config.TokenModelToken:
					i := int(o.FromID)
					if !o.ByID {
						var ok bool
						if i, ok = models[m].vocab[o.FromToken]; !ok {
							i = models[m].added[o.FromToken]
						}
					}
					copy(dst, embeds[m][i*vocabCols:(i+1)*vocabCols])
				}
				continue
			}
			if _, ok := has[k][tok]; ok && tok != "" {
				copy(dst, row(k))
				continue
			}
			var holders []int
			for m := range models {
				if _, ok := has[m][tok]; ok && tok != "" {
					holders = append(holders, m)
				}
			}
			switch {
			case len(holders) == 1:
				copy(dst, row(holders[0]))
			case len(holders) == 0:
			case slices.Contains(holders, base):
				copy(dst, row(base))
			default:
				for _, m := range holders {
					for c, x := range row(m) {
						dst[c] += x
					}
				}
				for c := range dst {
					dst[c] /= float32(len(holders))
				}
			}
		}
		for c := range vocabCols {
			var sum float64
			for id := range out {
				sum += float64(res[k][id*vocabCols+c])
			}
			for id := len(out); id < rows; id++ {
				res[k][id*vocabCols+c] = float32(sum / float64(len(out)))
			}
		}
	}
	return res
}

// vocabCase is one tokenizer_source with its output tokens worked by hand,
// and tokens: overrides (their models by name).
type vocabCase struct {
	source string
	pad    int
	tokens []string // by output id
	rows   int
	over   []config.TokenOverride
}

var unionTokens = []string{"a", "b", "c", "d", "e", "f", "<s>", "g", "h", "<|x|>", "<|y|>"}

var vocabCases = []vocabCase{
	// The stripped base ("zz" is past its vocab_size), then the ordinary
	// tokens of ft1 ("g") and ft2 ("h"), then the added ones.
	{"union", 4, unionTokens, 12, nil},
	{"union", 0, unionTokens, 11, nil},
	{"base", 0, unionTokens[:7], 7, nil},
	{"tok", 8, []string{"a", "b", "c", "<|x|>", "q"}, 8, nil},
	// Overrides: forced or not, zeros, a model's own row, another token's
	// row by token and by row index; a token listed that the output lacks
	// ("nope", "<|tool|>", and "h" with tok's vocabulary) is appended to it.
	{"union", 4, append(slices.Clone(unionTokens), "nope"), 12, []config.TokenOverride{
		{Token: "<s>", Source: config.TokenFromModel, Model: "ft2", Force: true},
		{Token: "g", Source: config.TokenModelToken, Model: "ft2", FromToken: "<|y|>"},
		{Token: "<|x|>", Source: config.TokenZero},
		{Token: "a", Source: config.TokenModelToken, Model: "ft1", FromID: 8, ByID: true, Force: true},
		{Token: "h", Source: config.TokenFromModel, Model: "ft2"},
		{Token: "nope", Source: config.TokenZero},
		{Token: "<|y|>", Source: config.TokenZero, Force: true},
	}},
	{"base", 0, append(slices.Clone(unionTokens[:7]), "<|tool|>"), 8, []config.TokenOverride{
		{Token: "c", Source: config.TokenZero},
		{Token: "f", Source: config.TokenFromModel, Model: "ft1"},
		{Token: "b", Source: config.TokenModelToken, Model: "ft2", FromToken: "<|y|>", Force: true},
		{Token: "e", Source: config.TokenModelToken, Model: "base", FromToken: "<s>"},
		{Token: "<|tool|>", Source: config.TokenModelToken, Model: "ft1", FromToken: "g"},
	}},
	{"tok", 0, []string{"a", "b", "c", "<|x|>", "q", "h"}, 6, []config.TokenOverride{
		{Token: "q", Source: config.TokenModelToken, Model: "base", FromID: 6, ByID: true},
		{Token: "<|x|>", Source: config.TokenFromModel, Model: "ft1", Force: true},
		{Token: "a", Source: config.TokenModelToken, Model: "ft1", FromToken: "a", Force: true},
		{Token: "h", Source: config.TokenFromModel, Model: "ft2"},
	}},
}

// vocabFixture writes the three models with their tokenizers.
func vocabFixture(t *testing.T, dir string, dt kernels.DType) (paths []string, sets [][]testTensor) {
	for _, m := range vocabModels {
		r := rand.New(rand.NewPCG(7, uint64(len(m.name))))
		ts := vocabTensors(r, m.rows, vocabCols, dt)
		path := filepath.Join(dir, m.name)
		writeModel(t, path, ts, 0)
		writeTokenizer(t, path, m)
		paths, sets = append(paths, path), append(sets, ts)
	}
	writeTokenizer(t, filepath.Join(dir, vocabSource.name), vocabSource)
	return paths, sets
}

func (c vocabCase) options(dir string, paths []string) VocabOptions {
	src := c.source
	if src == "tok" {
		src = filepath.Join(dir, "tok")
	}
	var over []config.TokenOverride
	for _, o := range c.over {
		if o.Source != config.TokenZero {
			o.Model = filepath.Join(dir, o.Model)
		}
		over = append(over, o)
	}
	return VocabOptions{Source: src, PadTo: c.pad, BaseModel: paths[0], Tokens: over}
}

// Each model's rows, read alone (linear with a weight of 1 on it and 0 on
// the others), are the reference's row for row: own rows, the only model's,
// the base's, the mean, zeros and pad rows; the output's tokenizer.json and
// config.json give the output vocabulary. On every kernel set, 1–3 workers
// and several block sizes.
func TestVocabRows(t *testing.T) {
	dir := t.TempDir()
	paths, sets := vocabFixture(t, dir, kernels.F32)
	m := newMethod(t, "linear", "")
	for ci, c := range vocabCases {
		var embeds [][]float32
		for _, ts := range sets {
			embeds = append(embeds, ts[0].vals)
		}
		want := refRows(c.tokens, c.rows, vocabModels, embeds, 0, c.over)
		for k := range vocabModels {
			for _, ks := range kernels.Available() {
				for threads := 1; threads <= 3; threads++ {
					block := []int{1, 5, 64, 0}[(ci+k+threads)%4]
					out := filepath.Join(dir, fmt.Sprintf("out-%d-%d-%s-%d", ci, k, ks.Name, threads))
					opts := Options{Base: paths[0], Models: paths, Out: out, Kernels: ks, Threads: threads, BlockElems: block,
						Vocab: c.options(dir, paths)}
					tp := TensorParams{Density: []float64{1, 1, 1}, Weights: []float32{0, 0, 0}, Lambda: 1}
					tp.Weights[k] = 1
					p, err := NewPlan(opts, m, func(string, int, int) (TensorParams, error) { return tp, nil })
					if err != nil {
						t.Fatal(err)
					}
					for _, w := range p.Warnings {
						if w.Code == WarnVocabOrder && c.source != "union" {
							t.Errorf("case %d: %s: a vocab-order warning for tokenizer_source %s", ci, w, c.source)
						}
					}
					if _, err := Run(context.Background(), p, nil, nil); err != nil {
						t.Fatal(err)
					}
					md, data := readModel(t, out)
					for _, name := range []string{"model.embed_tokens.weight", "lm_head.weight"} {
						if got := md.Tensors[name].Shape; !slices.Equal(got, []int64{int64(c.rows), vocabCols}) {
							t.Fatalf("%s %s: shape %v, want [%d %d]", c.source, name, got, c.rows, vocabCols)
						}
					}
					got := decode(kernels.F32, data["model.embed_tokens.weight"])
					for e := range want[k] {
						if !sameFloat(got[e], want[k][e]) {
							t.Fatalf("source %s pad %d, model %s, %s, %d threads, block %d: row %d (%q) col %d = %v, want %v",
								c.source, c.pad, vocabModels[k].name, ks.Name, threads, block, e/vocabCols, tokenAt(c.tokens, e/vocabCols), e%vocabCols, got[e], want[k][e])
						}
					}
				}
			}
		}
		checkVocabFiles(t, filepath.Join(dir, fmt.Sprintf("out-%d-0-go-1", ci)), c)
	}
}

func tokenAt(tokens []string, id int) string {
	if id < len(tokens) {
		return tokens[id]
	}
	return "(pad)"
}

// checkVocabFiles checks an output's tokenizer.json (model.vocab and added
// tokens) and config.json against the case's tokens.
func checkVocabFiles(t *testing.T, out string, c vocabCase) {
	t.Helper()
	var tok struct {
		Added []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
		} `json:"added_tokens"`
		Model struct {
			Vocab map[string]int `json:"vocab"`
		} `json:"model"`
	}
	b, err := os.ReadFile(filepath.Join(out, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &tok); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for k, v := range tok.Model.Vocab {
		got[k] = v
	}
	for _, a := range tok.Added {
		got[a.Content] = a.ID
	}
	want := map[string]int{}
	for id, s := range c.tokens {
		want[s] = id
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: tokenizer.json's vocabulary %v, want %v", c.source, got, want)
	}
	var cfg struct {
		VocabSize int `json:"vocab_size"`
	}
	b, err = os.ReadFile(filepath.Join(out, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil || cfg.VocabSize != c.rows {
		t.Errorf("%s: config.json vocab_size %d (%v), want %d", c.source, cfg.VocabSize, err, c.rows)
	}
	var tc struct {
		Decoder map[string]struct {
			Content string `json:"content"`
		} `json:"added_tokens_decoder"`
	}
	b, err = os.ReadFile(filepath.Join(out, "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &tc); err != nil {
		t.Fatal(err)
	}
	if c.source == "union" {
		for id := 6; id < len(c.tokens); id++ {
			if e, ok := tc.Decoder[fmt.Sprint(id)]; !ok || e.Content != c.tokens[id] {
				t.Errorf("tokenizer_config.json's added_tokens_decoder[%d] = %+v, want %q", id, e, c.tokens[id])
			}
		}
	}
}

// Every method merges the rows of a union as it merges models whose
// embeddings hold those rows already: the union's output equals, bit for
// bit, the merge of the reference's rows written as plain models, whole
// tensor methods (norms, mean squares, Gram matrices, trims) included.
func TestVocabUnionMethods(t *testing.T) {
	cases := []struct {
		name   string
		models int
		tp     TensorParams
	}{
		{"ties", 2, TensorParams{Density: []float64{0.5, 0.7}, Weights: []float32{0.6, 0.5}, Lambda: 1}},
		{"task_arithmetic", 2, TensorParams{Density: []float64{1, 1}, Weights: []float32{0.3, 0.9}, Lambda: 1}},
		{"sce", 2, ownParamsFor(2, math.NaN(), 0.5)},
		{"multislerp", 2, TensorParams{Density: []float64{1, 1}, Weights: []float32{0.4, 0.6}, Lambda: 1}},
		{"slerp", 1, ownParamsFor(1, 0.3, 1)},
		{"nearswap", 1, ownParamsFor(1, 0.5, 1)},
	}
	// The union of the base and ft1 alone, for the methods of one model.
	pair := vocabCase{"union", 4, []string{"a", "b", "c", "d", "e", "f", "<s>", "g", "<|x|>"}, 12, nil}
	for _, dt := range []kernels.DType{kernels.F32, kernels.BF16} {
		dir := t.TempDir()
		paths, sets := vocabFixture(t, dir, dt)
		for mi, mc := range cases {
			n := 1 + mc.models
			c := vocabCases[0]
			if mc.models == 1 {
				c = pair
			}
			var embeds, heads [][]float32
			for _, ts := range sets[:n] {
				embeds, heads = append(embeds, ts[0].vals), append(heads, ts[1].vals)
			}
			wantE, wantH := refRows(c.tokens, c.rows, vocabModels[:n], embeds, 0, nil), refRows(c.tokens, c.rows, vocabModels[:n], heads, 0, nil)
			var refPaths []string
			for k, ts := range sets[:n] {
				ref := slices.Clone(ts)
				ref[0] = testTensor{name: ts[0].name, shape: []int64{int64(c.rows), vocabCols}, dt: kernels.F32, vals: wantE[k]}
				ref[1] = testTensor{name: ts[1].name, shape: []int64{int64(c.rows), vocabCols}, dt: kernels.F32, vals: wantH[k]}
				path := filepath.Join(dir, fmt.Sprintf("ref-%s-%s", mc.name, vocabModels[k].name))
				writeModel(t, path, ref, 0)
				refPaths = append(refPaths, path)
			}
			m := newMethod(t, mc.name, "mergekit")
			resolve := func(string, int, int) (TensorParams, error) { return mc.tp, nil }
			outDT := dt.String()
			ref := filepath.Join(dir, "ref-out-"+mc.name)
			p, err := NewPlan(Options{Base: refPaths[0], Models: refPaths[1:], Out: ref, OutDType: outDT}, m, resolve)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Run(context.Background(), p, nil, nil); err != nil {
				t.Fatal(err)
			}
			_, want := readModel(t, ref)
			for _, ks := range kernels.Available() {
				threads := 1 + (mi+len(ks.Name))%3
				block := []int{3, 16, 0}[(mi+int(dt))%3]
				out := filepath.Join(dir, fmt.Sprintf("out-%s-%s", mc.name, ks.Name))
				opts := Options{Base: paths[0], Models: paths[1:n], Out: out, OutDType: outDT, Kernels: ks,
					Threads: threads, BlockElems: block, Vocab: c.options(dir, paths)}
				p, err := NewPlan(opts, m, resolve)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := Run(context.Background(), p, nil, nil); err != nil {
					t.Fatal(err)
				}
				_, got := readModel(t, out)
				if diff := sameFiles(got, want); diff != "" {
					t.Fatalf("%s, %s inputs, %s, %d threads, block %d: the union's output differs from the merge of the reference rows: %s",
						mc.name, dt, ks.Name, threads, block, diff)
				}
			}
		}
	}
}

// Without a tokenizer_source, embeddings of different sizes are cut to the
// rows and columns every input has, for every method: the output equals,
// bit for bit, the merge of the inputs cut by hand to that submatrix. Here
// the base has more rows than ft2 and ft1 more columns than the others.
func TestEmbeddingCut(t *testing.T) {
	shapes := [][2]int{{9, 4}, {11, 5}, {7, 4}} // base, ft1, ft2
	cases := []struct {
		name   string
		models int
		tp     TensorParams
	}{
		{"ties", 2, TensorParams{Density: []float64{0.5, 0.7}, Weights: []float32{0.6, 0.5}, Lambda: 1}},
		{"sce", 2, ownParamsFor(2, math.NaN(), 0.5)},
		{"multislerp", 2, TensorParams{Density: []float64{1, 1}, Weights: []float32{0.4, 0.6}, Lambda: 1}},
		{"karcher", 2, TensorParams{Density: []float64{1, 1}, Weights: []float32{1, 1}, Lambda: 1}},
		{"slerp", 1, ownParamsFor(1, 0.3, 1)},
		{"nearswap", 1, ownParamsFor(1, 0.5, 1)},
		{"arcee_fusion", 1, ownParamsFor(1, math.NaN(), 1)},
	}
	for _, dt := range []kernels.DType{kernels.F32, kernels.BF16} {
		dir := t.TempDir()
		var paths []string
		var sets [][]testTensor
		for k, sh := range shapes {
			r := rand.New(rand.NewPCG(11, uint64(k)))
			ts := vocabTensors(r, sh[0], sh[1], dt)
			// The layers must match: every model's are 2 × 4.
			for i := 2; i < len(ts); i++ {
				ts[i].shape, ts[i].vals = []int64{2, 4}, ts[i].vals[:8]
			}
			path := filepath.Join(dir, fmt.Sprintf("m%d", k))
			writeModel(t, path, ts, 0)
			paths, sets = append(paths, path), append(sets, ts)
		}
		for mi, mc := range cases {
			m := newMethod(t, mc.name, "mergekit")
			resolve := func(string, int, int) (TensorParams, error) { return mc.tp, nil }
			ref := filepath.Join(dir, "ref-"+mc.name)
			models := []int{1, 2}[:mc.models]
			if mc.models == 1 {
				models = []int{2 - mi%2} // ft1 (columns cut) or ft2 (the base's rows cut)
			}
			pick := func(ps []string) []string {
				var out []string
				for _, i := range models {
					out = append(out, ps[i])
				}
				return out
			}
			rows, cols := shapes[0][0], shapes[0][1]
			for _, i := range models {
				rows, cols = min(rows, shapes[i][0]), min(cols, shapes[i][1])
			}
			var cutPaths []string
			for k, ts := range sets {
				if k != 0 && !slices.Contains(models, k) {
					cutPaths = append(cutPaths, "")
					continue
				}
				cut := slices.Clone(ts)
				for i := range 2 {
					vals := make([]float32, 0, rows*cols)
					for row := range rows {
						vals = append(vals, ts[i].vals[row*shapes[k][1]:row*shapes[k][1]+cols]...)
					}
					cut[i] = testTensor{name: ts[i].name, shape: []int64{int64(rows), int64(cols)}, dt: dt, vals: vals}
				}
				cutPath := filepath.Join(dir, fmt.Sprintf("cut-%s-%d", mc.name, k))
				writeModel(t, cutPath, cut, 0)
				cutPaths = append(cutPaths, cutPath)
			}
			p, err := NewPlan(Options{Base: cutPaths[0], Models: pick(cutPaths), Out: ref}, m, resolve)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Run(context.Background(), p, nil, nil); err != nil {
				t.Fatal(err)
			}
			_, want := readModel(t, ref)
			for _, ks := range kernels.Available() {
				threads := 1 + (mi+len(ks.Name))%3
				block := []int{3, 16, 0}[(mi+int(dt))%3]
				out := filepath.Join(dir, fmt.Sprintf("out-%s-%s", mc.name, ks.Name))
				p, err := NewPlan(Options{Base: paths[0], Models: pick(paths), Out: out, Kernels: ks, Threads: threads, BlockElems: block}, m, resolve)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.ContainsFunc(p.Warnings, func(w Warning) bool { return w.Code == WarnVocabCut }) {
					t.Errorf("%s: no %s warning: %v", mc.name, WarnVocabCut, p.Warnings)
				}
				if _, err := Run(context.Background(), p, nil, nil); err != nil {
					t.Fatal(err)
				}
				_, got := readModel(t, out)
				if diff := sameFiles(got, want); diff != "" {
					t.Fatalf("%s, %s inputs, %s, %d threads, block %d: the cut's output differs from the merge of the inputs cut by hand: %s",
						mc.name, dt, ks.Name, threads, block, diff)
				}
			}
		}
	}
}

// A Unigram tokenizer's vocabulary is a list of [piece, score] whose
// positions are the ids: the union keeps the base's pieces, scores and all,
// and appends a fine-tune's new piece as an added token.
func TestVocabUnigram(t *testing.T) {
	dir := t.TempDir()
	write := func(name, pieces string, size int) string {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
		tok := `{"added_tokens": [], "model": {"type": "Unigram", "unk_id": 0, "vocab": ` + pieces + `}}`
		for f, data := range map[string]string{"tokenizer.json": tok, "config.json": fmt.Sprintf(`{"vocab_size": %d}`, size)} {
			if err := os.WriteFile(filepath.Join(path, f), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return path
	}
	base := write("base", `[["<unk>", 0], ["▁a", -1.5], ["▁b", -2.5], ["▁past", -3]]`, 3)
	ft := write("ft", `[["<unk>", 0], ["▁b", -2.5], ["▁a", -1.5], ["▁c", -4]]`, 4)
	vm, err := newVocabMap(VocabOptions{Source: "union"}, []string{base, ft}, 0, func(string) int { return -1 })
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"<unk>", "▁a", "▁b", "▁c"}; !slices.Equal(vm.tokens, want) {
		t.Fatalf("tokens %q, want %q", vm.tokens, want)
	}
	if want := []int32{0, 2, 1, 3}; !slices.Equal(vm.perm[1], want) {
		t.Errorf("ft's rows %v, want %v", vm.perm[1], want)
	}
	b, err := vm.tokenizerJSON()
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Added []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens"`
		Model struct {
			Vocab [][]any `json:"vocab"`
		} `json:"model"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(out.Model.Vocab); got != "[[<unk> 0] [▁a -1.5] [▁b -2.5]]" {
		t.Errorf("model.vocab %s, want the base's first 3 pieces with their scores", got)
	}
	if len(out.Added) != 1 || out.Added[0].ID != 3 || out.Added[0].Content != "▁c" || out.Added[0].Special {
		t.Errorf("added tokens %+v, want ▁c at 3, not special", out.Added)
	}

	// Two tokens of one id cannot both have its row.
	clash := vocabModel{"clash", map[string]int{"a": 0, "b": 1}, map[string]int{"<x>": 1}, 2, 2}
	writeTokenizer(t, filepath.Join(dir, "clash"), clash)
	_, err = newVocabMap(VocabOptions{Source: "base"}, []string{filepath.Join(dir, "clash")}, 0, func(string) int { return -1 })
	if err == nil || !strings.Contains(err.Error(), `tokens "<x>" and "b" have the same id 1`) {
		t.Errorf("two tokens of id 1: %v", err)
	}
}

// What a tokenizer_source cannot align is refused before any work, naming
// the file and the problem.
func TestVocabErrors(t *testing.T) {
	dir := t.TempDir()
	paths, _ := vocabFixture(t, dir, kernels.F32)
	m := newMethod(t, "task_arithmetic", "")
	resolve := func(string, int, int) (TensorParams, error) {
		return TensorParams{Density: []float64{1}, Weights: []float32{1}, Lambda: 1}, nil
	}
	plan := func(models []string) error {
		_, err := NewPlan(Options{Base: paths[0], Models: models, Out: filepath.Join(dir, "out"),
			Vocab: VocabOptions{Source: "union", BaseModel: paths[0]}}, m, resolve)
		return err
	}
	wide := filepath.Join(dir, "wide")
	writeModel(t, wide, vocabTensors(rand.New(rand.NewPCG(1, 2)), 9, vocabCols+1, kernels.F32), 0)
	writeTokenizer(t, wide, vocabModels[1])
	short := filepath.Join(dir, "short")
	writeModel(t, short, vocabTensors(rand.New(rand.NewPCG(1, 2)), 8, vocabCols, kernels.F32), 0)
	writeTokenizer(t, short, vocabModels[1]) // vocab_size 9: token <|x|> at 8 has no row
	bare := filepath.Join(dir, "bare")
	writeModel(t, bare, vocabTensors(rand.New(rand.NewPCG(1, 2)), 9, vocabCols, kernels.F32), 0)
	for _, tc := range []struct {
		model string
		want  []string
	}{
		{wide, []string{`tensor "model.embed_tokens.weight"`, "4 columns in", "but 3 in the base", "the columns must match"}},
		{short, []string{`tensor "model.embed_tokens.weight"`, "has 8 rows", `token "<|x|>" id 8`}},
		{bare, []string{"tokenizer_source", "bare: no tokenizer.json"}},
	} {
		err := plan([]string{tc.model})
		if err == nil {
			t.Fatalf("%s: no error", tc.model)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error does not say %q:\n%v", filepath.Base(tc.model), w, err)
			}
		}
	}
}

// A tokens: override that cannot give a row is refused at plan time, naming
// the token and the problem.
func TestVocabTokenErrors(t *testing.T) {
	dir := t.TempDir()
	paths, _ := vocabFixture(t, dir, kernels.F32)
	m := newMethod(t, "task_arithmetic", "")
	resolve := func(string, int, int) (TensorParams, error) {
		return TensorParams{Density: []float64{1, 1}, Weights: []float32{1, 1}, Lambda: 1}, nil
	}
	for _, tc := range []struct {
		o    config.TokenOverride
		want []string
	}{
		{config.TokenOverride{Token: "h", Source: config.TokenFromModel, Model: paths[0]},
			[]string{`tokenizer.tokens["h"]`, "base does not have the token"}},
		{config.TokenOverride{Token: "a", Source: config.TokenModelToken, Model: paths[1], FromToken: "nope"},
			[]string{`tokenizer.tokens["a"]`, `token "nope" is not in`, "ft1's tokenizer"}},
		{config.TokenOverride{Token: "a", Source: config.TokenModelToken, Model: paths[0], FromID: 7, ByID: true},
			[]string{`tensor "model.embed_tokens.weight"`, `tokenizer.tokens["a"]: row 7 of`, "which has 7 rows"}},
		{config.TokenOverride{Token: "a", Source: config.TokenModelToken, Model: paths[0], FromToken: "zz"},
			[]string{`tokenizer.tokens["a"]: row 7 of`, "which has 7 rows"}},
		{config.TokenOverride{Token: "a", Source: config.TokenFromModel, Model: filepath.Join(dir, "tok")},
			[]string{`tokenizer.tokens["a"]`, "tok is not a model of the merge"}},
	} {
		_, err := NewPlan(Options{Base: paths[0], Models: paths[1:], Out: filepath.Join(dir, "out"),
			Vocab: VocabOptions{Source: "union", BaseModel: paths[0], Tokens: []config.TokenOverride{tc.o}}}, m, resolve)
		if err == nil {
			t.Fatalf("%+v: no error", tc.o)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error does not say %q:\n%v", tc.o, w, err)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "out")); !os.IsNotExist(err) {
			t.Errorf("%+v: output made: %v", tc.o, err)
		}
	}
}
