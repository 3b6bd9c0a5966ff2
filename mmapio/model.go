package mmapio

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// IndexName is the file that maps tensors to shards in a sharded model.
const IndexName = "model.safetensors.index.json"

// Model is a safetensors checkpoint: one file or a directory of shards.
type Model struct {
	Path      string             // as given by the user
	Dir       string             // directory holding config.json etc. (dir of the file if a file was given)
	Files     []string           // shard paths, sorted
	Tensors   map[string]*Tensor // by name
	Names     []string           // tensor names, ordered by file then offset
	Metadata  map[string]string  // __metadata__ of the first shard
	Index     string             // the index file used, "" when there is none
	FileSizes map[string]int64   // shard path → size seen when the header was read
	// Stray are the directory's *.safetensors files that are not read: not
	// named by the index, or beside model.safetensors. Sorted paths.
	Stray []string
}

// OpenModel finds a model's shards and reads and validates every header (by pread;
// no data is mapped). path may be a .safetensors file, a directory with an index
// (model.safetensors.index.json, or a single *.safetensors.index.json), a directory
// with model.safetensors, or a directory of *.safetensors shards.
func OpenModel(path string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	m := &Model{Path: path, Tensors: map[string]*Tensor{}, FileSizes: map[string]int64{}}
	var index map[string]string // tensor → shard path
	if !st.IsDir() {
		m.Dir = filepath.Dir(path)
		m.Files = []string{path}
	} else {
		m.Dir = path
		if m.Index, err = findIndex(path); err != nil {
			return nil, err
		}
		switch {
		case m.Index != "":
			if m.Files, index, err = readIndex(m.Index); err != nil {
				return nil, err
			}
		case isFile(filepath.Join(path, "model.safetensors")):
			m.Files = []string{filepath.Join(path, "model.safetensors")}
		default:
			if m.Files, err = shardFiles(path); err != nil {
				return nil, err
			}
			if len(m.Files) == 0 {
				return nil, fmt.Errorf("model %s: no *.safetensors files and no %s in the directory", path, IndexName)
			}
		}
	}
	sort.Strings(m.Files)
	if st.IsDir() {
		all, err := shardFiles(path)
		if err != nil {
			return nil, err
		}
		for _, f := range all {
			if !slices.Contains(m.Files, f) {
				m.Stray = append(m.Stray, f)
			}
		}
	}

	for i, f := range m.Files {
		h, size, err := readFileHeader(f)
		if err != nil {
			return nil, err
		}
		m.FileSizes[f] = size
		if i == 0 {
			m.Metadata = h.Metadata
		}
		for _, t := range h.Tensors {
			if prev, dup := m.Tensors[t.Name]; dup {
				return nil, fmt.Errorf("model %s: tensor %q is in two shards: %s and %s", path, t.Name, prev.File, f)
			}
			if index != nil {
				want, listed := index[t.Name]
				if !listed {
					return nil, fmt.Errorf("%s: tensor %q is in shard %s but not in the index %s", f, t.Name, filepath.Base(f), m.Index)
				}
				if want != f {
					return nil, fmt.Errorf("%s: tensor %q: the index %s puts it in %s but it is in %s", m.Index, t.Name, m.Index, filepath.Base(want), filepath.Base(f))
				}
			}
			m.Tensors[t.Name] = t
			m.Names = append(m.Names, t.Name)
		}
	}
	for name, want := range index {
		if _, ok := m.Tensors[name]; !ok {
			return nil, fmt.Errorf("%s: tensor %q: the index puts it in %s but that shard has no such tensor", m.Index, name, filepath.Base(want))
		}
	}
	return m, nil
}

// shardFiles lists the directory's *.safetensors files, hidden ones aside.
func shardFiles(dir string) ([]string, error) {
	all, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", dir, err)
	}
	var files []string
	for _, f := range all {
		if !strings.HasPrefix(filepath.Base(f), ".") {
			files = append(files, f)
		}
	}
	return files, nil
}

// readFileHeader opens one shard and reads its header.
func readFileHeader(path string) (*Header, int64, error) {
	f, err := OpenRegular(path)
	if err != nil {
		var nr *NotRegularError
		if errors.As(err, &nr) {
			return nil, 0, fmt.Errorf("shard %w", err)
		}
		return nil, 0, fmt.Errorf("%s: cannot open shard: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	h, err := ReadHeader(f, st.Size(), path)
	if err != nil {
		return nil, 0, err
	}
	return h, st.Size(), nil
}

// isFile reports whether p exists and is not a directory; a FIFO or device
// counts, so that readFileHeader refuses it by name.
func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// findIndex returns the model's index file: model.safetensors.index.json, or else
// the only *.safetensors.index.json of the directory; "" if there is none.
func findIndex(dir string) (string, error) {
	p := filepath.Join(dir, IndexName)
	if _, err := os.Stat(p); err == nil {
		return p, nil // readIndex refuses it unless it is a regular file
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("model %s: %w", dir, err)
	}
	all, err := filepath.Glob(filepath.Join(dir, "*.safetensors.index.json"))
	if err != nil {
		return "", fmt.Errorf("model %s: %w", dir, err)
	}
	var found []string
	for _, f := range all {
		if !strings.HasPrefix(filepath.Base(f), ".") {
			found = append(found, f)
		}
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("model %s: several index files (%s): give the one to use", dir, strings.Join(found, ", "))
}

// readIndex reads an index and returns its shards (existing regular files) and, for
// each tensor, the path of the shard it names.
func readIndex(path string) ([]string, map[string]string, error) {
	data, err := ReadRegular(path)
	var nr *NotRegularError
	if errors.As(err, &nr) {
		return nil, nil, fmt.Errorf("index %w", err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("index %s: %w", path, err)
	}
	var idx struct {
		WeightMap json.RawMessage `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, nil, fmt.Errorf("index %s: not valid JSON: %w", path, err)
	}
	if len(idx.WeightMap) == 0 || string(idx.WeightMap) == "null" {
		return nil, nil, fmt.Errorf("index %s: no \"weight_map\"", path)
	}
	wm, err := stringMap(idx.WeightMap)
	if err != nil {
		return nil, nil, fmt.Errorf("index %s: \"weight_map\": %w", path, err)
	}
	if len(wm) == 0 {
		return nil, nil, fmt.Errorf("index %s: empty \"weight_map\"", path)
	}
	dir := filepath.Dir(path)
	index := make(map[string]string, len(wm))
	shards := map[string]bool{}
	for _, kv := range wm {
		name, shard := kv[0], kv[1]
		if shard == "" || shard == "." || shard == ".." || shard != filepath.Base(shard) || strings.ContainsRune(shard, '\\') {
			return nil, nil, fmt.Errorf("index %s: tensor %q: shard name %q is not a plain file name of the model directory", path, name, shard)
		}
		p := filepath.Join(dir, shard)
		index[name] = p
		if shards[p] {
			continue
		}
		shards[p] = true
		st, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, nil, fmt.Errorf("index %s names shard %s (for tensor %q), which does not exist", path, shard, name)
		case err != nil:
			return nil, nil, fmt.Errorf("index %s: shard %s: %w", path, shard, err)
		case !st.Mode().IsRegular():
			return nil, nil, fmt.Errorf("index %s: shard %w", path, &NotRegularError{Path: p, Mode: st.Mode()})
		}
	}
	files := make([]string, 0, len(shards))
	for p := range shards {
		files = append(files, p)
	}
	return files, index, nil
}

// stringMap decodes a JSON object of strings with a token walk, so that a duplicate
// key is an error rather than a silent overwrite.
func stringMap(raw []byte) ([][2]string, error) {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("expected an object, found %s", describe(t))
	}
	seen := map[string]bool{}
	var out [][2]string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key := k.(string)
		if seen[key] {
			return nil, fmt.Errorf("tensor %q listed twice", key)
		}
		seen[key] = true
		v, err := dec.Token()
		if err != nil {
			return nil, err
		}
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("tensor %q: expected a shard file name, found %s", key, describe(v))
		}
		out = append(out, [2]string{key, s})
	}
	return out, nil
}
