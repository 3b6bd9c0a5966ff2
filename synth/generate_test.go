package synth

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/tiesmm/tiesmm/mmapio"
)

// readSafetensors reads a model directory written by Generate with a minimal
// reader of its own (index or single file; 8-byte length, JSON header,
// data): tensor name → dtype, shape, bytes.
type fileTensor struct {
	DType       string  `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
	data        []byte
}

func readModelDir(t *testing.T, dir string) (map[string]*fileTensor, []string) {
	t.Helper()
	files := []string{"model.safetensors"}
	var index struct {
		Metadata  map[string]any    `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	if raw, err := os.ReadFile(filepath.Join(dir, "model.safetensors.index.json")); err == nil {
		if err := json.Unmarshal(raw, &index); err != nil {
			t.Fatalf("%s: index: %v", dir, err)
		}
		seen := map[string]bool{}
		files = files[:0]
		for _, f := range index.WeightMap {
			if !seen[f] {
				seen[f] = true
				files = append(files, f)
			}
		}
		sort.Strings(files)
	}
	out := map[string]*fileTensor{}
	for _, f := range files {
		raw, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		n := binary.LittleEndian.Uint64(raw)
		var hdr map[string]json.RawMessage
		if err := json.Unmarshal(raw[8:8+n], &hdr); err != nil {
			t.Fatalf("%s/%s: header: %v", dir, f, err)
		}
		data := raw[8+n:]
		for name, js := range hdr {
			if name == "__metadata__" {
				continue
			}
			ft := &fileTensor{}
			if err := json.Unmarshal(js, ft); err != nil {
				t.Fatal(err)
			}
			ft.data = data[ft.DataOffsets[0]:ft.DataOffsets[1]]
			if _, dup := out[name]; dup {
				t.Errorf("%s: tensor %q twice", dir, name)
			}
			if index.WeightMap != nil && index.WeightMap[name] != f {
				t.Errorf("%s: index puts %q in %q, found in %q", dir, name, index.WeightMap[name], f)
			}
			out[name] = ft
		}
	}
	if index.WeightMap != nil && len(index.WeightMap) != len(out) {
		t.Errorf("%s: index lists %d tensors, shards hold %d", dir, len(index.WeightMap), len(out))
	}
	return out, files
}

func TestGenerateFiles(t *testing.T) {
	dir := t.TempDir()
	o := Options{Params: 1_000_000, Models: 2, Seed: 42, IntBuffer: true, FineTuneDTypes: []string{"bf16", "f32"}}
	sum := generateWithProgress(t, dir, o)
	mem := genMem(t, o, 3)
	if sum.Arch != mem.arch || len(sum.Models) != 3 {
		t.Fatalf("summary %+v", sum)
	}
	wantDT := map[string]string{"base": "BF16", "ft1": "BF16", "ft2": "F32"}
	for k, m := range sum.Models {
		if m.Path != filepath.Join(dir, m.Role) || m.DType != wantDT[m.Role] || m.Shards != 1 || m.Tensors != len(mem.ts) {
			t.Errorf("model summary %+v", m)
		}
		checkModelTensors(t, m, mem, mem.sinks[k])
		checkConfig(t, m, sum.Arch)
		checkSideFiles(t, m)
		// mmapio reads what it wrote.
		mm, err := mmapio.OpenModel(m.Path)
		if err != nil {
			t.Errorf("mmapio.OpenModel: %v", err)
		} else if len(mm.Tensors) != len(mem.ts) {
			t.Errorf("mmapio sees %d tensors", len(mm.Tensors))
		}
	}
	// No leftovers besides the three model directories.
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "base ft1 ft2" {
		t.Errorf("directory holds %v", names)
	}
}

// generateWithProgress runs Generate with a progress callback and checks
// that it was called and reached the summary's byte count.
func generateWithProgress(t *testing.T, dir string, o Options) *Summary {
	var mu sync.Mutex
	var calls int
	var last, total int64
	o.Progress = func(done, tot int64) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		last, total = max(last, done), tot
	}
	sum, err := Generate(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(sum)
	if calls < 2 || last != total || total != sum.Bytes {
		t.Errorf("progress: %d calls, last %d of %d; summary %d bytes", calls, last, total, sum.Bytes)
	}
	return sum
}

// checkModelTensors checks m's single file against the in-memory
// generator's output: every tensor's dtype, shape and bytes.
func checkModelTensors(t *testing.T, m ModelSummary, mem *memSet, sink *memSink) {
	got, files := readModelDir(t, m.Path)
	if len(files) != 1 || files[0] != "model.safetensors" {
		t.Errorf("%s: files %v", m.Role, files)
	}
	var bytesSeen int64
	for _, ts := range mem.ts {
		ft := got[ts.name]
		if ft == nil {
			t.Errorf("%s: no tensor %q", m.Role, ts.name)
			continue
		}
		dt := m.DType
		if ts.isInt() {
			dt = "I64"
		}
		if ft.DType != dt || len(ft.Shape) != len(ts.shape) {
			t.Errorf("%s %s: %s %v", m.Role, ts.name, ft.DType, ft.Shape)
		}
		for i := range ts.shape {
			if ft.Shape[i] != ts.shape[i] {
				t.Errorf("%s %s: shape %v, want %v", m.Role, ts.name, ft.Shape, ts.shape)
				break
			}
		}
		if !bytes.Equal(ft.data, sink.data[ts.name]) {
			t.Errorf("%s %s: file bytes differ from the in-memory generator", m.Role, ts.name)
		}
		bytesSeen += int64(len(ft.data))
	}
	if len(got) != len(mem.ts) || bytesSeen != m.Bytes {
		t.Errorf("%s: %d tensors, %d bytes; summary says %d bytes", m.Role, len(got), bytesSeen, m.Bytes)
	}
}

// checkConfig checks m's config.json against the architecture.
func checkConfig(t *testing.T, m ModelSummary, a Arch) {
	var cfg map[string]any
	raw, err := os.ReadFile(filepath.Join(m.Path, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]any{
		"hidden_size": float64(a.Hidden), "num_hidden_layers": float64(a.Layers), "intermediate_size": float64(a.Intermediate),
		"num_attention_heads": float64(a.Heads), "num_key_value_heads": float64(a.KVHeads), "vocab_size": float64(a.Vocab),
		"torch_dtype": map[string]string{"BF16": "bfloat16", "F32": "float32"}[m.DType], "model_type": "llama",
	} {
		if cfg[key] != want {
			t.Errorf("%s config.json %s = %v, want %v", m.Role, key, cfg[key], want)
		}
	}
	if arch, _ := cfg["architectures"].([]any); len(arch) != 1 || arch[0] != "LlamaForCausalLM" {
		t.Errorf("%s: architectures %v", m.Role, cfg["architectures"])
	}
}

// checkSideFiles checks that m's other JSON files parse, and the
// tokenizer's vocabulary.
func checkSideFiles(t *testing.T, m ModelSummary) {
	for _, f := range []string{"generation_config.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"} {
		raw, err := os.ReadFile(filepath.Join(m.Path, f))
		var v map[string]any
		if err == nil {
			err = json.Unmarshal(raw, &v)
		}
		if err != nil {
			t.Errorf("%s/%s: %v", m.Role, f, err)
		}
		if f == "tokenizer.json" {
			checkTokenizerVocab(t, v)
		}
	}
}

// checkTokenizerVocab checks tokenizer.json's byte-level vocabulary: 259
// distinct ids, <s> at 1, bytes from 3.
func checkTokenizerVocab(t *testing.T, v map[string]any) {
	vocab, _ := v["model"].(map[string]any)["vocab"].(map[string]any)
	ids := map[float64]bool{}
	for _, id := range vocab {
		ids[id.(float64)] = true
	}
	if len(vocab) != 259 || len(ids) != 259 || vocab["<s>"] != 1.0 || vocab["A"] != float64(3+'A') || vocab["Ġ"] != float64(3+' ') {
		t.Errorf("tokenizer.json vocab: %d entries, %d ids, <s> %v, A %v, Ġ %v", len(vocab), len(ids), vocab["<s>"], vocab["A"], vocab["Ġ"])
	}
}

// TestGenerateForce: an existing set is an error without Force and is
// replaced with it.
func TestGenerateForce(t *testing.T) {
	dir := t.TempDir()
	o := Options{Params: 1_000_000, Models: 1, Seed: 42}
	if _, err := Generate(dir, o); err != nil {
		t.Fatal(err)
	}
	before, _ := readModelDir(t, filepath.Join(dir, "ft1"))
	if _, err := Generate(dir, o); err == nil {
		t.Error("Generate over an existing set without Force: want an error")
	}
	o.Force, o.Seed = true, 43
	if _, err := Generate(dir, o); err != nil {
		t.Fatalf("Generate with Force: %v", err)
	}
	after, _ := readModelDir(t, filepath.Join(dir, "ft1"))
	if bytes.Equal(after["lm_head.weight"].data, before["lm_head.weight"].data) {
		t.Error("Force did not replace ft1")
	}
}

func TestGenerateShards(t *testing.T) {
	dir := t.TempDir()
	const cap = 600_000
	o := Options{Params: 1_000_000, Models: 1, Seed: 1, ShardBytes: cap}
	sum, err := Generate(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	mem := genMem(t, o, 2)
	for k, m := range sum.Models {
		got, files := readModelDir(t, m.Path)
		// 1.84 MB of bf16 data under a 600 KB cap: the two 491 KB embedding
		// matrices each fill a shard, so at least four.
		if len(files) < 4 || m.Shards != len(files) {
			t.Errorf("%s: %d shard files %v, summary %d", m.Role, len(files), files, m.Shards)
		}
		for i, f := range files {
			if want := "model-0000" + string(rune('1'+i)) + "-of-0000" + string(rune('0'+len(files))) + ".safetensors"; f != want {
				t.Errorf("shard %d named %s, want %s", i, f, want)
			}
			st, _ := os.Stat(filepath.Join(m.Path, f))
			if st.Size() > cap+4096 {
				t.Errorf("%s is %d bytes, cap %d", f, st.Size(), cap)
			}
		}
		for _, ts := range mem.ts {
			if !bytes.Equal(got[ts.name].data, mem.sinks[k].data[ts.name]) {
				t.Errorf("%s %s differs", m.Role, ts.name)
			}
		}
		var index struct {
			Metadata struct {
				TotalSize int64 `json:"total_size"`
			} `json:"metadata"`
		}
		raw, _ := os.ReadFile(filepath.Join(m.Path, "model.safetensors.index.json"))
		if err := json.Unmarshal(raw, &index); err != nil || index.Metadata.TotalSize != m.Bytes {
			t.Errorf("%s: index total_size %d, want %d (%v)", m.Role, index.Metadata.TotalSize, m.Bytes, err)
		}
	}
}

// TestGenerateEmbedOverride: the big-embedding mode at a small size.
func TestGenerateEmbedOverride(t *testing.T) {
	dir := t.TempDir()
	sum, err := Generate(dir, Options{Params: 10_000, Models: 1, EmbedRows: 3000, EmbedCols: 96})
	if err != nil {
		t.Fatal(err)
	}
	a := sum.Arch
	if a.Vocab != 3000 || a.Hidden != 96 || a.Layers != 1 || a.HeadDim != 32 || a.Heads != 3 {
		t.Errorf("arch %+v", a)
	}
	got, _ := readModelDir(t, filepath.Join(dir, "ft1"))
	for _, name := range []string{"model.embed_tokens.weight", "lm_head.weight"} {
		if sh := got[name].Shape; len(sh) != 2 || sh[0] != 3000 || sh[1] != 96 {
			t.Errorf("%s shape %v, want [3000 96]", name, sh)
		}
	}
}

// TestGenerateAddedTokens: each fine-tune's tokenizer adds <|tool|> then
// tokens of its own after the 259 ids; the base's adds none; more than the
// embedding rows hold is refused.
func TestGenerateAddedTokens(t *testing.T) {
	dir := t.TempDir()
	if _, err := Generate(dir, Options{Params: 10_000, Models: 2, EmbedRows: 262, EmbedCols: 96, AddedTokens: 3}); err != nil {
		t.Fatal(err)
	}
	for role, want := range map[string]string{"base": "", "ft1": "<|tool|> <|ft1_1|> <|ft1_2|>", "ft2": "<|tool|> <|ft2_1|> <|ft2_2|>"} {
		b, err := os.ReadFile(filepath.Join(dir, role, "tokenizer.json"))
		if err != nil {
			t.Fatal(err)
		}
		var tok struct {
			Added []struct {
				ID      int    `json:"id"`
				Content string `json:"content"`
			} `json:"added_tokens"`
		}
		if err := json.Unmarshal(b, &tok); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range tok.Added[3:] {
			if a.ID != 259+len(got) {
				t.Errorf("%s: %s at id %d, want %d", role, a.Content, a.ID, 259+len(got))
			}
			got = append(got, a.Content)
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%s: added %q, want %q", role, got, want)
		}
	}
	_, err := Generate(t.TempDir(), Options{Params: 10_000, Models: 1, EmbedRows: 262, EmbedCols: 96, AddedTokens: 4})
	if err == nil || !strings.Contains(err.Error(), "4 added tokens do not fit the 262 embedding rows") {
		t.Errorf("4 added tokens in 262 rows: %v", err)
	}
}

// TestGenerateThreads: GOMAXPROCS 1 and many give the same files.
func TestGenerateThreads(t *testing.T) {
	o := Options{Params: 1_000_000, Models: 1, Seed: 3, IntBuffer: true}
	var sets [2]map[string]*fileTensor
	for i, procs := range []int{1, 8} {
		old := runtime.GOMAXPROCS(procs)
		dir := t.TempDir()
		_, err := Generate(dir, o)
		runtime.GOMAXPROCS(old)
		if err != nil {
			t.Fatal(err)
		}
		sets[i], _ = readModelDir(t, filepath.Join(dir, "ft1"))
	}
	for name, a := range sets[0] {
		if !bytes.Equal(a.data, sets[1][name].data) {
			t.Errorf("%s differs between GOMAXPROCS 1 and 8", name)
		}
	}
}

var bigSet = flag.String("synth.size", "", "TestThroughput: generate base + 3 fine-tunes of this many parameters (e.g. 250M ≈ 2 GB of bf16) and report GB/s")

// TestThroughput writes a large set when asked (-synth.size), into
// $TIESMM_SYNTH_DIR or a temporary directory.
func TestThroughput(t *testing.T) {
	if *bigSet == "" {
		t.Skip("set -synth.size=250M to measure")
	}
	p, err := ParseParams(*bigSet)
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("TIESMM_SYNTH_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	sum, err := Generate(dir, Options{Params: p, Models: 3, Seed: 1, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(sum)
}
