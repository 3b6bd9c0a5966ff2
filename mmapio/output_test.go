package mmapio

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nlpodyssey/safetensors"
)

// The header of a small shard, hand-written: key order, no HTML escaping, padding
// with spaces to a multiple of 8 (145 bytes of JSON + 7).
func TestHeaderGolden(t *testing.T) {
	l, err := PlanLayout([]OutTensor{{"a", "F32", []int64{2}}, {"b<&>", "BF16", []int64{3, 1}}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b<&>":{"dtype":"BF16","shape":[3,1],"data_offsets":[8,14]}}` + "       "
	s := l.Shards[0]
	if got := string(s.Header()); got != want {
		t.Fatalf("header\n%s\nwant\n%s", got, want)
	}
	if len(l.Shards) != 1 || s.FileName != "model.safetensors" || s.HeaderLen != 152 || s.Size != 8+152+14 || l.TotalSize != 14 {
		t.Fatalf("layout %+v", l)
	}
}

// Shard boundaries, hand-worked for tensors of 40, 40, 30, 100 and 10 bytes.
func TestPlanLayoutShards(t *testing.T) {
	ts := []OutTensor{{"a", "U8", []int64{40}}, {"b", "F32", []int64{10}}, {"c", "I16", []int64{15}}, {"d", "F32", []int64{5, 5, 1}}, {"e", "BF16", []int64{5}}}
	for _, c := range []struct {
		cap    int64
		shards [][]string
	}{
		{0, [][]string{{"a", "b", "c", "d", "e"}}},
		{220, [][]string{{"a", "b", "c", "d", "e"}}},
		{219, [][]string{{"a", "b", "c", "d"}, {"e"}}},
		{80, [][]string{{"a", "b"}, {"c"}, {"d"}, {"e"}}},
		{110, [][]string{{"a", "b", "c"}, {"d", "e"}}},
		{1, [][]string{{"a"}, {"b"}, {"c"}, {"d"}, {"e"}}},
	} {
		l, err := PlanLayout(ts, c.cap)
		if err != nil {
			t.Fatal(err)
		}
		var got [][]string
		for i, s := range l.Shards {
			var names []string
			pos := int64(0)
			for _, pt := range s.Tensors {
				names = append(names, pt.Name)
				if pt.Begin != pos {
					t.Errorf("cap %d: %q not dense", c.cap, pt.Name)
				}
				pos = pt.End
			}
			got = append(got, names)
			want := "model.safetensors"
			if len(c.shards) > 1 {
				want = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(c.shards))
			}
			if s.FileName != want {
				t.Errorf("cap %d: shard %d named %s, want %s", c.cap, i, s.FileName, want)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(c.shards) || l.TotalSize != 220 {
			t.Errorf("cap %d: shards %v (total %d), want %v", c.cap, got, l.TotalSize, c.shards)
		}
	}
}

func TestPlanLayoutErrors(t *testing.T) {
	for _, c := range []struct {
		ts   []OutTensor
		want string
	}{
		{[]OutTensor{{"a", "F32", []int64{1}}, {"a", "F32", []int64{1}}}, `tensor "a": listed twice`},
		{[]OutTensor{{"a", "F17", []int64{1}}}, `tensor "a": unknown dtype "F17"`},
		{[]OutTensor{{"a", "F32", []int64{-1}}}, `tensor "a": negative dimension`},
		{[]OutTensor{{"a", "F32", []int64{1 << 40, 1 << 40}}}, `tensor "a": shape`},
		{[]OutTensor{{"a", "F32", []int64{1 << 60}}}, `tensor "a": shape`},
		{[]OutTensor{{"__metadata__", "F32", nil}}, "reserved"},
		{[]OutTensor{{"a\xff", "F32", nil}}, "not valid UTF-8"},
	} {
		if _, err := PlanLayout(c.ts, 0); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want %q", c.ts, err, c.want)
		}
	}
	var many []OutTensor // 16 × 2^59 bytes = 2^63
	for i := range 16 {
		many = append(many, OutTensor{fmt.Sprint(i), "U8", []int64{1 << 59}})
	}
	if _, err := PlanLayout(many, 0); err == nil || !strings.Contains(err.Error(), `tensor "15": the output model exceeds`) {
		t.Errorf("2^63 bytes: %v", err)
	}
}

var rtTensors = []OutTensor{
	{"model.embed_tokens.weight", "BF16", []int64{32, 8}},
	{"model.layers.0.self_attn.q_proj.weight", "BF16", []int64{8, 8}},
	{"model.layers.0.input_layernorm.weight", "F32", []int64{8}},
	{"step", "I64", []int64{}},
	{"empty", "F32", []int64{0, 8}},
	{"model.layers.0.mlp.up_proj.weight", "F32", []int64{24, 8}},
	{"position_ids", "I64", []int64{1, 5}},
	{"lm_head.weight", "BF16", []int64{32, 8}},
}

func tensorData(rng *rand.Rand, l *Layout) map[string][]byte {
	data := map[string][]byte{}
	for _, s := range l.Shards {
		for _, pt := range s.Tensors {
			b := make([]byte, pt.End-pt.Begin)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			data[pt.Name] = b
		}
	}
	return data
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, maxShard := range []int64{0, 1, 600, 1024, 2000} {
		t.Run(fmt.Sprint(maxShard), func(t *testing.T) {
			l, err := PlanLayout(rtTensors, maxShard)
			if err != nil {
				t.Fatal(err)
			}
			data := tensorData(rng, l)
			dest := filepath.Join(t.TempDir(), "out")
			o, err := CreateOutput(dest, false, l)
			if err != nil {
				t.Fatal(err)
			}
			defer o.Abort()
			// Every tensor in random chunks, from several goroutines at once.
			var wg sync.WaitGroup
			for i, ot := range rtTensors {
				b := data[ot.Name]
				cut := int(rng.Uint32()) % (len(b) + 1)
				wg.Go(func() {
					if err := o.WriteTensor(ot.Name, int64(cut), b[cut:]); err != nil {
						t.Error(err)
					}
				})
				wg.Go(func() {
					if err := o.WriteTensor(ot.Name, 0, b[:cut]); err != nil {
						t.Error(err)
					}
				})
				_ = i
			}
			wg.Wait()
			for _, ot := range rtTensors {
				got := make([]byte, len(data[ot.Name]))
				if err := o.ReadTensor(ot.Name, 0, got); err != nil || !bytes.Equal(got, data[ot.Name]) {
					t.Fatalf("read back %q before commit: %v", ot.Name, err)
				}
			}
			if err := o.WriteFile("config.json", []byte(`{"x":1}`)); err != nil {
				t.Fatal(err)
			}
			if err := o.Commit(); err != nil {
				t.Fatal(err)
			}
			checkSpec(t, dest, l, data)

			m, err := OpenModel(dest)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, ot := range rtTensors {
				names = append(names, ot.Name)
			}
			if !slices.Equal(m.Names, names) || len(m.Files) != len(l.Shards) {
				t.Fatalf("names %v in %d files", m.Names, len(m.Files))
			}
			if m.Metadata["format"] != "pt" {
				t.Fatalf("metadata %v", m.Metadata)
			}
			for _, ot := range rtTensors {
				mt := m.Tensors[ot.Name]
				if mt.DType != ot.DType || !slices.Equal(mt.Shape, ot.Shape) {
					t.Fatalf("%q: %s %v", ot.Name, mt.DType, mt.Shape)
				}
				mp, err := MapFile(mt.File)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(mp.Data()[mt.Offset:mt.Offset+mt.Size], data[ot.Name]) {
					t.Fatalf("%q: data differs", ot.Name)
				}
				mp.Close()
			}
			if b, err := os.ReadFile(filepath.Join(dest, "config.json")); err != nil || string(b) != `{"x":1}` {
				t.Fatalf("config.json: %q %v", b, err)
			}
			assertOnly(t, filepath.Dir(dest), "out")
		})
	}
}

// checkSpec reads the output as the format describes it, with no help from the
// package: 8-byte little-endian header length (a multiple of 8), JSON padded with
// spaces, offsets relative to the data start and dense, the file size exact; then
// nlpodyssey/safetensors must read every shard, and the index must list everything.
func checkSpec(t *testing.T, dest string, l *Layout, data map[string][]byte) {
	t.Helper()
	weightMap := map[string]string{}
	var total int64
	for _, s := range l.Shards {
		b, err := os.ReadFile(filepath.Join(dest, s.FileName))
		if err != nil {
			t.Fatal(err)
		}
		n := binary.LittleEndian.Uint64(b)
		if n%8 != 0 || int(n) > len(b)-8 {
			t.Fatalf("%s: header length %d", s.FileName, n)
		}
		hdr := b[8 : 8+n]
		js := bytes.TrimRight(hdr, " ")
		if len(hdr)-len(js) > 7 || !json.Valid(js) {
			t.Fatalf("%s: header %q", s.FileName, hdr)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(js, &obj); err != nil {
			t.Fatal(err)
		}
		if string(obj["__metadata__"]) != `{"format":"pt"}` {
			t.Fatalf("%s: metadata %s", s.FileName, obj["__metadata__"])
		}
		delete(obj, "__metadata__")
		type info struct {
			DType       string   `json:"dtype"`
			Shape       []int64  `json:"shape"`
			DataOffsets [2]int64 `json:"data_offsets"`
		}
		infos := map[int64]string{} // begin → name, for the density check
		for name, raw := range obj {
			var in info
			if err := json.Unmarshal(raw, &in); err != nil {
				t.Fatal(err)
			}
			got := b[8+int64(n)+in.DataOffsets[0] : 8+int64(n)+in.DataOffsets[1]]
			if !bytes.Equal(got, data[name]) {
				t.Fatalf("%s: %q data differs", s.FileName, name)
			}
			if len(data[name]) > 0 {
				infos[in.DataOffsets[0]] = name
			}
			weightMap[name] = s.FileName
			total += int64(len(got))
		}
		pos := int64(0)
		for pos < int64(len(b))-8-int64(n) {
			name, ok := infos[pos]
			if !ok {
				t.Fatalf("%s: no tensor starts at %d", s.FileName, pos)
			}
			pos += int64(len(data[name]))
		}
		if 8+int64(n)+pos != int64(len(b)) || int64(len(b)) != s.Size {
			t.Fatalf("%s: %d bytes, expected %d", s.FileName, len(b), s.Size)
		}
		st, err := safetensors.Deserialize(b)
		if err != nil {
			t.Fatalf("%s: nlpodyssey/safetensors: %v", s.FileName, err)
		}
		for _, v := range st.Tensors() {
			if !bytes.Equal(v.TensorView.Data(), data[v.Name]) {
				t.Fatalf("%s: nlpodyssey reads other data for %q", s.FileName, v.Name)
			}
		}
	}
	if len(weightMap) != len(data) || total != l.TotalSize {
		t.Fatalf("%d tensors, %d bytes in the shards; want %d, %d", len(weightMap), total, len(data), l.TotalSize)
	}
	idx, err := os.ReadFile(filepath.Join(dest, IndexName))
	if len(l.Shards) == 1 {
		if err == nil {
			t.Fatal("index written for a single shard")
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	var ix struct {
		Metadata  map[string]int64  `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(idx, &ix); err != nil {
		t.Fatal(err)
	}
	if ix.Metadata["total_size"] != total || fmt.Sprint(ix.WeightMap) != fmt.Sprint(weightMap) {
		t.Fatalf("index %s", idx)
	}
}

// assertOnly checks that dir holds exactly the given entries: nothing left behind.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	slices.Sort(names)
	if !slices.Equal(got, names) {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}

func smallLayout(t *testing.T, maxShard int64) *Layout {
	t.Helper()
	l, err := PlanLayout([]OutTensor{{"a", "F32", []int64{4}}, {"b", "BF16", []int64{4}}}, maxShard)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestCreateOutputDest(t *testing.T) {
	parent := t.TempDir()
	l := smallLayout(t, 0)

	file := writeRaw(t, parent, "file", []byte("x"))
	if _, err := CreateOutput(file, true, l); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("dest is a file: %v", err)
	}
	full := filepath.Join(parent, "full")
	os.Mkdir(full, 0o755)
	writeRaw(t, full, "config.json", []byte("old"))
	if _, err := CreateOutput(full, false, l); err == nil || !strings.Contains(err.Error(), full+" exists and is not empty") {
		t.Errorf("non-empty dest: %v", err)
	}
	assertOnly(t, parent, "file", "full")

	// An empty directory is fine without force.
	empty := filepath.Join(parent, "empty")
	os.Mkdir(empty, 0o755)
	o, err := CreateOutput(empty, false, l)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	assertOnly(t, empty, "model.safetensors")

	// force replaces the old directory whole, and leaves nothing aside.
	o, err = CreateOutput(full, true, smallLayout(t, 16))
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	assertOnly(t, full, IndexName, "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
	assertOnly(t, parent, "empty", "file", "full")
	if _, err := OpenModel(full); err != nil {
		t.Fatal(err)
	}

	// Without force, a dest that filled up meanwhile is not clobbered at Commit.
	late := filepath.Join(parent, "late")
	o, err = CreateOutput(late, false, l)
	if err != nil {
		t.Fatal(err)
	}
	os.Mkdir(late, 0o755)
	writeRaw(t, late, "mine", nil)
	if err := o.Commit(); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("commit over a new non-empty dest: %v", err)
	}
	if err := o.Abort(); err != nil {
		t.Fatal(err)
	}
	assertOnly(t, late, "mine")
	assertOnly(t, parent, "empty", "file", "full", "late")

	// The parent is made when missing.
	deep := filepath.Join(parent, "x", "y", "out")
	if o, err = CreateOutput(deep, false, l); err != nil {
		t.Fatal(err)
	}
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	assertOnly(t, deep, "model.safetensors")
}

func TestAbortAndCrash(t *testing.T) {
	parent := t.TempDir()
	dest := filepath.Join(parent, "out")
	o, err := CreateOutput(dest, false, smallLayout(t, 16))
	if err != nil {
		t.Fatal(err)
	}
	if err := o.WriteTensor("a", 0, make([]byte, 16)); err != nil {
		t.Fatal(err)
	}
	o.WriteFile("config.json", []byte("{}"))
	// A process killed here leaves the hidden partial directory and nothing named
	// like a finished model outside it.
	if !strings.HasPrefix(filepath.Base(o.TempDir()), ".out.tiesmm-partial-") || filepath.Dir(o.TempDir()) != parent {
		t.Fatalf("temporary directory %s", o.TempDir())
	}
	assertOnly(t, parent, filepath.Base(o.TempDir()))
	filepath.WalkDir(parent, func(p string, d fs.DirEntry, err error) error {
		if strings.HasSuffix(p, ".safetensors") || strings.HasSuffix(p, ".index.json") {
			t.Errorf("finished-looking file before commit: %s", p)
		}
		return nil
	})
	for i, s := range []string{"model-00001-of-00002.safetensors.partial", "model-00002-of-00002.safetensors.partial"} {
		st, err := os.Stat(filepath.Join(o.TempDir(), s))
		if err != nil || st.Size() != o.parts[0].Layout.Shards[i].Size || o.parts[0].Layout.Shards[i].Size != 8+o.parts[0].Layout.Shards[i].HeaderLen+[]int64{16, 8}[i] {
			t.Fatalf("%s: reserved %v, %v", s, st, err)
		}
	}
	if err := o.Abort(); err != nil {
		t.Fatal(err)
	}
	assertOnly(t, parent)
	if err := o.Abort(); err != nil {
		t.Fatal("second abort:", err)
	}
	if err := o.WriteTensor("a", 0, []byte{1}); err == nil || !strings.Contains(err.Error(), `tensor "a"`) {
		t.Fatalf("write after abort: %v", err)
	}
	if err := o.Commit(); err == nil {
		t.Fatal("commit after abort")
	}
}

func TestNotEnoughSpace(t *testing.T) {
	parent := t.TempDir()
	l, err := PlanLayout([]OutTensor{{"huge", "F32", []int64{1 << 50}}}, 0) // 4 PiB
	if err != nil {
		t.Fatal(err)
	}
	_, err = CreateOutput(filepath.Join(parent, "out"), false, l)
	if err == nil || !strings.Contains(err.Error(), "not enough free space on "+parent+": need 4.00 PiB, have ") {
		t.Fatalf("got %v", err)
	}
	assertOnly(t, parent)
}

func TestWriteErrors(t *testing.T) {
	parent := t.TempDir()
	dest := filepath.Join(parent, "out")
	o, err := CreateOutput(dest, false, smallLayout(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Abort()
	shard := filepath.Join(dest, "model.safetensors")
	for _, c := range []struct {
		err  error
		want string
	}{
		{o.WriteTensor("a", 10, make([]byte, 7)), shard + `: tensor "a": write of 7 bytes at offset 10 is outside the tensor's 16 bytes`},
		{o.WriteTensor("a", -1, nil), `tensor "a": write of 0 bytes at offset -1`},
		{o.ReadTensor("b", 0, make([]byte, 9)), `tensor "b": read of 9 bytes`},
		{o.WriteTensor("zz", 0, nil), `tensor "zz": not in the output layout`},
		{o.WriteFile("model.safetensors", nil), "one of the output's shards"},
		{o.WriteFile(IndexName, nil), "reserved"},
		{o.WriteFile("../x", nil), "not a plain file name"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("got %v, want %q", c.err, c.want)
		}
	}
	// A full disk keeps its words and names the file and tensor.
	full, err := os.OpenFile("/dev/full", os.O_RDWR, 0)
	if err != nil {
		t.Skip("no /dev/full")
	}
	real := o.shards[0].f
	o.shards[0].f = full
	err = o.WriteTensor("b", 2, []byte{1, 2})
	o.shards[0].f = real
	full.Close()
	if err == nil || !strings.Contains(err.Error(), shard+`: tensor "b": writing 2 bytes at offset 2: `) || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("ENOSPC: %v", err)
	}
	if err := o.WriteFile("tokenizer.json", []byte("tokens")); err != nil {
		t.Fatal(err)
	}
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "tokenizer.json")); string(b) != "tokens" {
		t.Fatalf("copied %q", b)
	}
	if err := o.WriteTensor("a", 0, []byte{1}); err == nil || !strings.Contains(err.Error(), "after the output was committed") {
		t.Fatalf("write after commit: %v", err)
	}
	if err := o.Abort(); err != nil {
		t.Fatal("abort after commit:", err)
	}
	if _, err := OpenModel(dest); err != nil {
		t.Fatal("abort after commit removed the model:", err)
	}
}

// TestWritebackWhileWriting writes enough for the background writeback to
// run many times, from several goroutines, then commits and reads back.
func TestWritebackWhileWriting(t *testing.T) {
	const size = 4*writebackEvery + 12345
	l, err := PlanLayout([]OutTensor{{"big", "U8", []int64{size}}, {"small", "U8", []int64{7}}}, 3*writebackEvery)
	if err != nil {
		t.Fatal(err)
	}
	data := tensorData(rand.New(rand.NewPCG(3, 4)), l)
	dest := filepath.Join(t.TempDir(), "out")
	o, err := CreateOutput(dest, false, l)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Abort()
	var wg sync.WaitGroup
	const chunk = 1 << 20
	for w := range 3 {
		wg.Go(func() {
			for off := w * chunk; off < size; off += 3 * chunk {
				if err := o.WriteTensor("big", int64(off), data["big"][off:min(off+chunk, size)]); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if err := o.WriteTensor("small", 0, data["small"]); err != nil {
		t.Fatal(err)
	}
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	checkSpec(t, dest, l, data)
	if err := o.Abort(); err != nil { // after Commit: a no-op
		t.Fatal(err)
	}
}
