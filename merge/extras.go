package merge

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// baseFiles are copied from the base model's directory when present.
var baseFiles = []string{
	"generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
	"tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
}

// writeExtras writes config.json (torch_dtype set to the output dtype, and
// vocab_size with a tokenizer_source), the tokenizer (the base's, or that of
// tokenizer_source), the base's generation files, and the caller's files.
func (r *run) writeExtras(extra map[string][]byte) error {
	dir := r.p.Base.Dir
	var tokenizer map[string][]byte
	if vm := r.p.vocab; vm != nil {
		var err error
		if tokenizer, err = vm.tokenizerOutputs(r.p.Opts.Vocab.Source); err != nil {
			return fmt.Errorf("tokenizer_source: %w", err)
		}
	}
	if cfg := r.p.config; cfg != nil {
		if dt, ok := r.outDType(); ok {
			cfg["torch_dtype"] = dt.TorchName()
		}
		if vm := r.p.vocab; vm != nil {
			cfg["vocab_size"] = vm.rows
		}
		out, err := json.MarshalIndent(cfg, "", "  ")
		if err != nil {
			return err
		}
		if err := r.out.WriteFile("config.json", append(out, '\n')); err != nil {
			return err
		}
	}
	for _, name := range baseFiles {
		if data, ok := tokenizer[name]; ok || (tokenizer != nil && slices.Contains(tokenizerFiles, name)) {
			if ok {
				if err := r.out.WriteFile(name, data); err != nil {
					return err
				}
			}
			continue
		}
		src := filepath.Join(dir, name)
		if _, err := os.Stat(src); err != nil {
			continue
		}
		// ReadRegular: a FIFO put in the file's place since the plan
		// checked it is refused, not waited on.
		data, err := mmapio.ReadRegular(src)
		if err != nil {
			return fmt.Errorf("base model: %w", err)
		}
		if err := r.out.WriteFile(name, data); err != nil {
			return err
		}
	}
	for name, data := range extra {
		if err := r.out.WriteFile(name, data); err != nil {
			return err
		}
	}
	return nil
}

// readConfig reads dir's config.json, if it has one: checked before the
// merge, written out after it.
func readConfig(dir string) (map[string]any, error) {
	path := filepath.Join(dir, "config.json")
	b, err := mmapio.ReadRegular(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	cfg := map[string]any{}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// checkExtras refuses a file of dir that writeExtras would copy but that is
// not a regular file (a FIFO would block, a device never end), before the
// merge rather than after it.
func checkExtras(dir string) error {
	for _, name := range baseFiles {
		if err := mmapio.CheckRegular(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// outDType is the dtype of the merged tensors when they all share one.
func (r *run) outDType() (kernels.DType, bool) {
	var dt kernels.DType
	seen := false
	for _, j := range r.p.Jobs {
		if j.Copy {
			continue
		}
		if seen && j.OutDT != dt {
			return 0, false
		}
		dt, seen = j.OutDT, true
	}
	return dt, seen
}
