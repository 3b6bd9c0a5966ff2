package merge

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// Bad inputs: each must fail with an error that names the problem and the
// file or tensor, and leave nothing at the destination: no output
// directory and no partial files beside it.

// rawShard writes a safetensors file with the given header text (no
// padding) followed by data.
func rawShard(t testing.TB, path, header string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(append(b, header...), data...)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// hdrTensor is one header entry; denseHeader places them back to back.
type hdrTensor struct {
	name, dtype string
	shape       []int64
}

func denseHeader(ts ...hdrTensor) (string, int64) {
	var parts []string
	var pos int64
	for _, t := range ts {
		bits, ok := mmapio.DTypeBits(t.dtype)
		if !ok {
			panic(t.dtype)
		}
		n := int64(1)
		dims := make([]string, len(t.shape))
		for i, d := range t.shape {
			n *= d
			dims[i] = strconv.FormatInt(d, 10)
		}
		size := n * bits / 8
		parts = append(parts, fmt.Sprintf(`%s:{"dtype":%q,"shape":[%s],"data_offsets":[%d,%d]}`,
			strconv.Quote(t.name), t.dtype, strings.Join(dims, ","), pos, pos+size))
		pos += size
	}
	return "{" + strings.Join(parts, ",") + "}", pos
}

// errFixture is an input directory and an empty destination parent.
type errFixture struct {
	root, in, dst, out string
}

func newFixture(t *testing.T) errFixture {
	dir := t.TempDir()
	f := errFixture{root: dir, in: filepath.Join(dir, "in"), dst: filepath.Join(dir, "dst")}
	f.out = filepath.Join(f.dst, "out")
	for _, d := range []string{f.in, f.dst} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// goodTensors are the base's tensors: w1 [4, 2] and w2 [4], F32.
func goodTensors(shift float32) []testTensor {
	w1 := testTensor{name: "w1", shape: []int64{4, 2}, dt: kernels.F32, vals: []float32{1, -2, 3, -4, 5, -6, 7, -8}}
	w2 := vec("w2", 0.5, -0.25, 0.125, 1)
	for i := range w1.vals {
		w1.vals[i] += shift
	}
	for i := range w2.vals {
		w2.vals[i] -= shift
	}
	return []testTensor{w1, w2}
}

// model writes a good model (base: shift 0) and returns its path.
func (f errFixture) model(t *testing.T, name string, shift float32) string {
	p := filepath.Join(f.in, name)
	writeModel(t, p, goodTensors(shift), 0)
	return p
}

func tiesParams(density float64) Resolver {
	return func(string, int, int) (TensorParams, error) {
		return TensorParams{Density: []float64{density, density}, Weights: []float32{1, 1},
			Gamma: []float64{0.1, 0.1}, Epsilon: []float64{0.1, 0.1}, Lambda: 1}, nil
	}
}

// merge plans and runs a merge of the fixture's models, mergekit's ties at
// density 0.5 unless m is given.
func (f errFixture) merge(base string, models []string, m *Method, resolve Resolver) error {
	meth, _, err := NewMethod("ties", "mergekit")
	if err != nil {
		return err
	}
	if m != nil {
		meth = *m
	}
	if resolve == nil {
		resolve = tiesParams(0.5)
	}
	p, err := NewPlan(Options{Base: base, Models: models, Out: f.out, Threads: 2}, meth, resolve)
	if err != nil {
		return err
	}
	_, err = Run(context.Background(), p, nil, nil)
	return err
}

// expectErr checks that err says every one of wants (a want of the form
// "a|b" is satisfied by either), and that nothing was written at the
// destination. Paths are wants that start with the fixture's directory;
// the others are looked for in the message with that directory cut out,
// as it holds the test's name.
func (f errFixture) expectErr(t *testing.T, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("merge succeeded, want an error")
	}
	msg := err.Error()
	bare := strings.ReplaceAll(msg, f.root, "<dir>")
	for _, w := range wants {
		ok := false
		for _, alt := range strings.Split(w, "|") {
			if strings.HasPrefix(alt, f.root) {
				ok = ok || strings.Contains(msg, alt)
			} else {
				ok = ok || strings.Contains(bare, alt)
			}
		}
		if !ok {
			t.Errorf("error does not say %q:\n%v", w, err)
		}
	}
	nothingIn(t, f.dst)
}

// nothingIn checks that dir is empty: no output directory, no partial one.
func nothingIn(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("%s: %s was left behind", dir, e.Name())
	}
}

func shard(dir string) string { return filepath.Join(dir, "model.safetensors") }

func TestErrMissingTensor(t *testing.T) {
	f := newFixture(t)
	base, ft1 := f.model(t, "base", 0), f.model(t, "ft1", 1)
	ft2 := filepath.Join(f.in, "ft2")
	writeModel(t, ft2, goodTensors(2)[:1], 0) // w1 only
	f.expectErr(t, f.merge(base, []string{ft1, ft2}, nil, nil), `"w2"`, "missing", ft2, shard(base))
}

func TestErrShapeMismatch(t *testing.T) {
	f := newFixture(t)
	base, ft2 := f.model(t, "base", 0), f.model(t, "ft2", 2)
	ft1 := filepath.Join(f.in, "ft1")
	ts := goodTensors(1)
	ts[0].shape = []int64{2, 4} // same element count, other shape
	writeModel(t, ft1, ts, 0)
	f.expectErr(t, f.merge(base, []string{ft1, ft2}, nil, nil), `"w1"`, "[2, 4]", "[4, 2]", shard(ft1), shard(base))
}

func TestErrUnsupportedDType(t *testing.T) {
	t.Run("F64-in-base", func(t *testing.T) {
		f := newFixture(t)
		ft1, ft2 := f.model(t, "ft1", 1), f.model(t, "ft2", 2)
		h, n := denseHeader(hdrTensor{"w1", "F32", []int64{4, 2}}, hdrTensor{"w2", "F32", []int64{4}}, hdrTensor{"w3", "F64", []int64{2}})
		base := filepath.Join(f.in, "base")
		rawShard(t, shard(base), h, make([]byte, n))
		f.expectErr(t, f.merge(base, []string{ft1, ft2}, nil, nil), `"w3"`, "F64", "not supported", shard(base))
	})
	t.Run("F8_E4M3-in-model", func(t *testing.T) {
		f := newFixture(t)
		base, ft2 := f.model(t, "base", 0), f.model(t, "ft2", 2)
		h, n := denseHeader(hdrTensor{"w1", "F8_E4M3", []int64{4, 2}}, hdrTensor{"w2", "F32", []int64{4}})
		ft1 := filepath.Join(f.in, "ft1")
		rawShard(t, shard(ft1), h, make([]byte, n))
		f.expectErr(t, f.merge(base, []string{ft1, ft2}, nil, nil), `"w1"`, "F8_E4M3", shard(ft1))
	})
}

// The shard-level faults: each makes model 2's file bad in its own way.
func TestErrBadShard(t *testing.T) {
	cases := []struct {
		name  string
		write func(t *testing.T, dir string) // writes the bad model into dir
		wants []string
	}{
		{"truncated", func(t *testing.T, dir string) {
			writeModel(t, dir, goodTensors(2), 0)
			st, err := os.Stat(shard(dir))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(shard(dir), st.Size()-4); err != nil {
				t.Fatal(err)
			}
		}, []string{"truncated|out of range: the data section has 44 bytes (file size"}},
		{"header-past-end", func(t *testing.T, dir string) {
			b := binary.LittleEndian.AppendUint64(nil, 1000)
			b = append(b, `{"w1":{"dtype":"F32","shape":[4,2],"data_offsets":[0,32]}}`...)
			if err := os.WriteFile(shard(dir), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"header length 1000", "past the end"}},
		{"overlap", func(t *testing.T, dir string) {
			rawShard(t, shard(dir), `{"w1":{"dtype":"F32","shape":[4,2],"data_offsets":[0,32]},"w2":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}`, make([]byte, 32))
		}, []string{"overlap", `"w1"`, `"w2"`}},
		{"out-of-range", func(t *testing.T, dir string) {
			rawShard(t, shard(dir), `{"w1":{"dtype":"F32","shape":[4,2],"data_offsets":[0,32]},"w2":{"dtype":"F32","shape":[4],"data_offsets":[32,48]}}`, make([]byte, 40))
		}, []string{"out of range", `"w2"`}},
		{"duplicate-name", func(t *testing.T, dir string) {
			rawShard(t, shard(dir), `{"w1":{"dtype":"F32","shape":[4,2],"data_offsets":[0,32]},"w1":{"dtype":"F32","shape":[4],"data_offsets":[32,48]}}`, make([]byte, 48))
		}, []string{"duplicate", `"w1"`}},
		{"invalid-utf8", func(t *testing.T, dir string) {
			rawShard(t, shard(dir), "{\"w1\":{\"dtype\":\"F32\",\"shape\":[4,2],\"data_offsets\":[0,32]},\"w\xff2\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[32,48]}}", make([]byte, 48))
		}, []string{"invalid UTF-8"}},
		{"index-names-missing-shard", func(t *testing.T, dir string) {
			h, n := denseHeader(hdrTensor{"w1", "F32", []int64{4, 2}})
			rawShard(t, filepath.Join(dir, "model-00001-of-00002.safetensors"), h, make([]byte, n))
			idx := `{"metadata":{},"weight_map":{"w1":"model-00001-of-00002.safetensors","w2":"model-00002-of-00002.safetensors"}}`
			if err := os.WriteFile(filepath.Join(dir, mmapio.IndexName), []byte(idx), 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"model-00002-of-00002.safetensors", "does not exist", `"w2"`, mmapio.IndexName}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			base, ft1 := f.model(t, "base", 0), f.model(t, "ft1", 1)
			ft2 := filepath.Join(f.in, "ft2")
			if err := os.MkdirAll(ft2, 0o755); err != nil {
				t.Fatal(err)
			}
			c.write(t, ft2)
			err := f.merge(base, []string{ft1, ft2}, nil, nil)
			// The file (or, for the index, the model directory) is named.
			f.expectErr(t, err, append(c.wants, ft2)...)
		})
	}
}

// Density must be in (0, 1] for every method that sparsifies; a density too
// small for a tensor (k = ⌊n·density⌋ = 0) is an error for the exact-k trim.
func TestErrDensity(t *testing.T) {
	for _, name := range []string{"ties", "dare_ties", "dare_linear", "breadcrumbs", "della_linear"} {
		for _, d := range []float64{0, -0.5, 1.5, math.NaN()} {
			t.Run(fmt.Sprintf("%s-%v", name, d), func(t *testing.T) {
				f := newFixture(t)
				base, ft1, ft2 := f.model(t, "base", 0), f.model(t, "ft1", 1), f.model(t, "ft2", 2)
				m := newMethod(t, name, "mergekit")
				f.expectErr(t, f.merge(base, []string{ft1, ft2}, &m, tiesParams(d)), "density", "(0, 1]", `"w1"`)
			})
		}
	}
	t.Run("k=0", func(t *testing.T) {
		f := newFixture(t)
		base, ft1, ft2 := f.model(t, "base", 0), f.model(t, "ft1", 1), f.model(t, "ft2", 2)
		// w2 has 4 elements: ⌊4·0.2⌋ = 0.
		f.expectErr(t, f.merge(base, []string{ft1, ft2}, nil, tiesParams(0.2)), `"w2"`, "keeps no element")
	})
}

// DELLA's probabilities d ± ε must lie in (0, 1).
func TestErrDellaEpsilon(t *testing.T) {
	f := newFixture(t)
	base, ft1, ft2 := f.model(t, "base", 0), f.model(t, "ft1", 1), f.model(t, "ft2", 2)
	m := newMethod(t, "della", "mergekit")
	resolve := func(string, int, int) (TensorParams, error) {
		return TensorParams{Density: []float64{0.5, 0.5}, Weights: []float32{1, 1},
			Gamma: []float64{0, 0}, Epsilon: []float64{0.1, 0.6}, Lambda: 1}, nil
	}
	f.expectErr(t, f.merge(base, []string{ft1, ft2}, &m, resolve), "epsilon", "model 2", `"w1"`)
}

func TestErrNoFineTune(t *testing.T) {
	f := newFixture(t)
	base := f.model(t, "base", 0)
	f.expectErr(t, f.merge(base, nil, nil, nil), "at least one fine-tuned model")
}

func TestErrNotFinite(t *testing.T) {
	f := newFixture(t)
	base, ft1, ft2 := f.model(t, "base", 0), f.model(t, "ft1", 1), f.model(t, "ft2", 2)
	resolve := func(string, int, int) (TensorParams, error) {
		return TensorParams{Density: []float64{0.5, 0.5}, Weights: []float32{1, float32(math.Inf(1))}, Lambda: 1}, nil
	}
	f.expectErr(t, f.merge(base, []string{ft1, ft2}, nil, resolve), "weight", "not finite", "model 2")
}

// The output may be neither inside an input nor around one.
func TestErrOutputOverlapsInput(t *testing.T) {
	f := newFixture(t)
	base, ft1, ft2 := f.model(t, "base", 0), f.model(t, "ft1", 1), f.model(t, "ft2", 2)
	before := listTree(t, f.in)
	for _, out := range []string{filepath.Join(base, "merged"), filepath.Join(ft2, "sub", "merged"), f.in} {
		m, _, _ := NewMethod("ties", "mergekit")
		p, err := NewPlan(Options{Base: base, Models: []string{ft1, ft2}, Out: out}, m, tiesParams(0.5))
		if err == nil {
			_, err = Run(context.Background(), p, nil, nil)
		}
		if err == nil || !strings.Contains(err.Error(), "the input") || !strings.Contains(err.Error(), "somewhere else") {
			t.Errorf("output %s: error %v, want one saying it overlaps an input", out, err)
		}
	}
	if after := listTree(t, f.in); after != before {
		t.Errorf("the inputs changed:\n%s\nnow:\n%s", before, after)
	}
}

// listTree lists every path under dir with its size.
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %d\n", p, info.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// An existing non-empty output is refused and left alone without force,
// and replaced with it.
func TestErrExistingOutput(t *testing.T) {
	f := newFixture(t)
	base, ft1, ft2 := f.model(t, "base", 0), f.model(t, "ft1", 1), f.model(t, "ft2", 2)
	if err := os.MkdirAll(f.out, 0o755); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(f.out, "model-00001-of-00009.safetensors") // an earlier merge's
	if err := os.WriteFile(old, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := listTree(t, f.dst)
	err := f.merge(base, []string{ft1, ft2}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "not empty") || !strings.Contains(err.Error(), "--force") || !strings.Contains(err.Error(), f.out) {
		t.Fatalf("error %v, want one naming %s as not empty and suggesting --force", err, f.out)
	}
	if after := listTree(t, f.dst); after != before {
		t.Fatalf("the destination changed:\n%s\nnow:\n%s", before, after)
	}
	if b, err := os.ReadFile(old); err != nil || string(b) != "keep me" {
		t.Fatalf("%s: %q, %v", old, b, err)
	}

	m, _, _ := NewMethod("ties", "mergekit")
	p, err := NewPlan(Options{Base: base, Models: []string{ft1, ft2}, Out: f.out, Force: true}, m, tiesParams(0.5))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), p, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("%s survived --force: %v", old, err)
	}
	if _, data := readModel(t, f.out); len(data) != 2 {
		t.Errorf("the replaced output has %d tensors, want 2", len(data))
	}
	ents, _ := os.ReadDir(f.dst)
	if len(ents) != 1 || ents[0].Name() != "out" {
		t.Errorf("beside the output: %v, want only out", ents)
	}
}

// A layout larger than the file system fails before anything is created:
// the base carries a huge integer buffer (copied, not merged, so the
// fine-tunes need not have it) in a sparse file.
func TestErrNoSpace(t *testing.T) {
	f := newFixture(t)
	ft1, ft2 := f.model(t, "ft1", 1), f.model(t, "ft2", 2)
	free := freeBytes(t, f.dst)
	elems := max(int64(1)<<37, 4*free/8) // ≥ 1 TiB of I64
	if elems*8 > 8<<40 {
		t.Skipf("%d bytes free: too much to exceed with a sparse file", free)
	}
	h, n := denseHeader(hdrTensor{"w1", "F32", []int64{4, 2}}, hdrTensor{"w2", "F32", []int64{4}}, hdrTensor{"buf", "I64", []int64{elems}})
	base := filepath.Join(f.in, "base")
	rawShard(t, shard(base), h, make([]byte, 48))
	if err := os.Truncate(shard(base), 8+int64(len(h))+n); err != nil {
		t.Skipf("no sparse file of %d bytes here: %v", n, err)
	}
	f.expectErr(t, f.merge(base, []string{ft1, ft2}, nil, nil), "not enough free space", f.dst)
}

// Every check that headers allow comes before any tensor data is read: a
// shape mismatch in the last tensor of the last model fails the plan, the
// plan reads little more than the headers, and the output is never created.
func TestErrValidatedBeforeData(t *testing.T) {
	f := newFixture(t)
	const elems = 1 << 18 // 1 MiB of F32 per tensor
	mk := func(name string, lastShape []int64) string {
		var ts []testTensor
		for i := range 3 {
			shape := []int64{512, 512}
			if i == 2 && lastShape != nil {
				shape = lastShape
			}
			vals := make([]float32, elems)
			for e := range vals {
				vals[e] = float32(e%13) * 0.25
			}
			ts = append(ts, testTensor{name: fmt.Sprintf("model.layers.%d.w", i), shape: shape, dt: kernels.F32, vals: vals})
		}
		p := filepath.Join(f.in, name)
		writeModel(t, p, ts, 0)
		return p
	}
	base, ft1, ft2 := mk("base", nil), mk("ft1", nil), mk("ft2", []int64{1024, 256})
	m, _, _ := NewMethod("ties", "paper")
	read0 := readChars(t)
	_, err := NewPlan(Options{Base: base, Models: []string{ft1, ft2}, Out: f.out}, m, tiesParams(0.2))
	read := readChars(t) - read0
	f.expectErr(t, err, `"model.layers.2.w"`, "[1024, 256]", "[512, 512]", shard(ft2))
	if read >= elems*4 {
		t.Errorf("the plan read %d bytes: more than a tensor (%d)", read, elems*4)
	}
}

// freeBytes is the space available to this user on dir's file system.
func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Skipf("statfs %s: %v", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// readChars is the bytes this process has read by system call (rchar), or
// skips where /proc does not tell.
func readChars(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Skip("no /proc/self/io")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	t.Skip("no rchar in /proc/self/io")
	return 0
}

// A base config.json that is not JSON fails the plan, before any tensor is
// read, with the file named.
func TestErrBadConfig(t *testing.T) {
	f := newFixture(t)
	base, ft1, ft2 := f.model(t, "base", 0), f.model(t, "ft1", 1), f.model(t, "ft2", 2)
	cfg := filepath.Join(base, "config.json")
	if err := os.WriteFile(cfg, []byte(`{"torch_dtype": `), 0o644); err != nil {
		t.Fatal(err)
	}
	f.expectErr(t, f.merge(base, []string{ft1, ft2}, nil, nil), cfg, "unexpected end of JSON")
}
