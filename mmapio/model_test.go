package mmapio

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	hdrA = `{"__metadata__":{"format":"pt","who":"first"},"a1":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"a0":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`
	hdrB = `{"b":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}`
)

func TestOpenModelForms(t *testing.T) {
	// a directory with model.safetensors; other files are ignored
	d1 := t.TempDir()
	writeRaw(t, d1, "model.safetensors", fileBytes(hdrA, 8))
	writeRaw(t, d1, "config.json", []byte("{}"))
	writeRaw(t, d1, "stray.safetensors", fileBytes(hdrA, 8)) // would clash if read
	// a directory of shards without an index
	d2 := t.TempDir()
	writeRaw(t, d2, "z.safetensors", fileBytes(hdrB, 8))
	writeRaw(t, d2, "y.safetensors", fileBytes(hdrA, 8))
	writeRaw(t, d2, ".hidden.safetensors", []byte("junk"))
	// a directory with an index
	d3 := t.TempDir()
	writeRaw(t, d3, "model-00001-of-00002.safetensors", fileBytes(hdrA, 8))
	writeRaw(t, d3, "model-00002-of-00002.safetensors", fileBytes(hdrB, 8))
	writeRaw(t, d3, IndexName, []byte(`{"metadata":{"total_size":16},"weight_map":{"b":"model-00002-of-00002.safetensors","a0":"model-00001-of-00002.safetensors","a1":"model-00001-of-00002.safetensors"}}`))
	writeRaw(t, d3, "unlisted.safetensors", fileBytes(hdrB, 8)) // not in the index: not read

	for _, c := range []struct {
		path, dir string
		files     []string
		names     []string
		stray     []string // files of the directory that are not read
	}{
		{d1, d1, []string{"model.safetensors"}, []string{"a1", "a0"}, []string{"stray.safetensors"}},
		{filepath.Join(d1, "stray.safetensors"), d1, []string{"stray.safetensors"}, []string{"a1", "a0"}, nil},
		{d2, d2, []string{"y.safetensors", "z.safetensors"}, []string{"a1", "a0", "b"}, nil},
		{d3, d3, []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}, []string{"a1", "a0", "b"}, []string{"unlisted.safetensors"}},
	} {
		m, err := OpenModel(c.path)
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		var files []string
		for _, f := range m.Files {
			if filepath.Dir(f) != c.dir {
				t.Errorf("%s: shard %s outside %s", c.path, f, c.dir)
			}
			files = append(files, filepath.Base(f))
		}
		if m.Path != c.path || m.Dir != c.dir || !slices.Equal(files, c.files) || !slices.Equal(m.Names, c.names) {
			t.Errorf("%s: got dir %s files %v names %v", c.path, m.Dir, files, m.Names)
		}
		var stray []string
		for _, f := range m.Stray {
			if filepath.Dir(f) != c.dir {
				t.Errorf("%s: stray %s outside %s", c.path, f, c.dir)
			}
			stray = append(stray, filepath.Base(f))
		}
		if !slices.Equal(stray, c.stray) {
			t.Errorf("%s: stray files %v, want %v", c.path, stray, c.stray)
		}
		if m.Metadata["who"] != "first" {
			t.Errorf("%s: metadata %v", c.path, m.Metadata)
		}
		a0 := m.Tensors["a0"]
		n := int64(len(hdrA))
		if a0.DType != "F32" || a0.Offset != 8+n+4 || a0.Size != 4 || filepath.Base(a0.File) != c.files[0] || m.FileSizes[a0.File] != 8+n+8 {
			t.Errorf("%s: a0 = %+v", c.path, *a0)
		}
	}
}

func TestOpenModelErrors(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(d string)
		want  []string
	}{
		{"no shards", func(d string) { writeRaw(t, d, "config.json", nil) }, []string{"no *.safetensors"}},
		{"duplicate across shards", func(d string) {
			writeRaw(t, d, "x.safetensors", fileBytes(hdrA, 8))
			writeRaw(t, d, "y.safetensors", fileBytes(hdrA, 8))
		}, []string{`tensor "a1" is in two shards`, "x.safetensors", "y.safetensors"}},
		{"shard is a directory", func(d string) {
			os.Mkdir(filepath.Join(d, "x.safetensors"), 0o755)
		}, []string{"x.safetensors is a directory, not a regular file"}},
		{"dangling shard", func(d string) {
			os.Symlink(filepath.Join(d, "gone"), filepath.Join(d, "x.safetensors"))
		}, []string{"x.safetensors: cannot open shard"}},
		{"bad shard", func(d string) {
			writeRaw(t, d, "x.safetensors", fileBytes(hdrA, 7))
		}, []string{"x.safetensors: tensor \"a0\"", "out of range"}},
		{"index names a missing shard", func(d string) {
			writeRaw(t, d, "s1.safetensors", fileBytes(hdrA, 8))
			writeRaw(t, d, IndexName, []byte(`{"weight_map":{"a0":"s1.safetensors","a1":"s1.safetensors","b":"s2.safetensors"}}`))
		}, []string{IndexName + " names shard s2.safetensors", `tensor "b"`, "does not exist"}},
		{"index names a directory", func(d string) {
			os.Mkdir(filepath.Join(d, "s1.safetensors"), 0o755)
			writeRaw(t, d, IndexName, []byte(`{"weight_map":{"a0":"s1.safetensors"}}`))
		}, []string{"s1.safetensors is a directory"}},
		{"index puts a tensor in the wrong shard", func(d string) {
			writeRaw(t, d, "s1.safetensors", fileBytes(hdrA, 8))
			writeRaw(t, d, "s2.safetensors", fileBytes(hdrB, 8))
			writeRaw(t, d, IndexName, []byte(`{"weight_map":{"a0":"s1.safetensors","a1":"s2.safetensors","b":"s2.safetensors"}}`))
		}, []string{`tensor "a1"`, "puts it in s2.safetensors but it is in s1.safetensors"}},
		{"shard tensor missing from the index", func(d string) {
			writeRaw(t, d, "s1.safetensors", fileBytes(hdrA, 8))
			writeRaw(t, d, IndexName, []byte(`{"weight_map":{"a0":"s1.safetensors"}}`))
		}, []string{"s1.safetensors", `tensor "a1"`, "not in the index"}},
		{"index tensor missing from the shard", func(d string) {
			writeRaw(t, d, "s1.safetensors", fileBytes(hdrA, 8))
			writeRaw(t, d, IndexName, []byte(`{"weight_map":{"a0":"s1.safetensors","a1":"s1.safetensors","zz":"s1.safetensors"}}`))
		}, []string{IndexName, `tensor "zz"`, "no such tensor"}},
		{"index lists a tensor twice", func(d string) {
			writeRaw(t, d, "s1.safetensors", fileBytes(hdrA, 8))
			writeRaw(t, d, IndexName, []byte(`{"weight_map":{"a0":"s1.safetensors","a0":"s1.safetensors"}}`))
		}, []string{IndexName, `tensor "a0" listed twice`}},
		{"index escapes the directory", func(d string) {
			writeRaw(t, d, IndexName, []byte(`{"weight_map":{"a0":"../s1.safetensors"}}`))
		}, []string{IndexName, "not a plain file name"}},
		{"index is not JSON", func(d string) {
			writeRaw(t, d, IndexName, []byte(`{"weight_map":`))
		}, []string{IndexName, "not valid JSON"}},
		{"index without weight_map", func(d string) {
			writeRaw(t, d, IndexName, []byte(`{"metadata":{}}`))
		}, []string{IndexName, `no "weight_map"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := t.TempDir()
			c.setup(d)
			_, err := OpenModel(d)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
	if _, err := OpenModel(filepath.Join(t.TempDir(), "nope")); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing path: %v", err)
	}
}

func TestOpenModelUnreadable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any file")
	}
	d := t.TempDir()
	p := writeRaw(t, d, "x.safetensors", fileBytes(hdrA, 8))
	os.Chmod(p, 0)
	if _, err := OpenModel(d); err == nil || !strings.Contains(err.Error(), "x.safetensors: cannot open shard") {
		t.Errorf("got %v", err)
	}
}
