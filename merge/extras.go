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
// tokenizer_source), the base's generation files, and the caller's files;
// for EMR, the base's files go to each task's folder and the caller's to
// the top.
func (r *run) writeExtras(extra map[string][]byte) error {
	dt, one := r.outDType()
	var edits baseEdits
	if vm := r.p.vocab; vm != nil {
		var err error
		if edits.tokenizer, err = vm.tokenizerOutputs(r.p.Opts.Vocab.Source); err != nil {
			return fmt.Errorf("tokenizer_source: %w", err)
		}
		edits.vocabSize = vm.rows
	}
	parts := []int{0}
	if e := r.p.emr; e != nil {
		parts = parts[:0]
		for k := range e.tasks {
			parts = append(parts, emrFirstTask+k)
		}
	}
	for _, part := range parts {
		if err := writeBaseFiles(r.out, part, r.p.Base.Dir, r.p.config, dt, one, edits); err != nil {
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

// baseEdits are what a merge changes in the base's files: with a
// tokenizer_source, the tokenizer files (each one taken from tokenizer, or
// left out) and config.json's vocab_size (0: the base's).
type baseEdits struct {
	tokenizer map[string][]byte
	vocabSize int64
}

// writeBaseFiles writes into part of out the base's config (cfg, with
// torch_dtype set to dt when all merged tensors share it) and its tokenizer
// and generation files, read from dir, with edits applied.
func writeBaseFiles(out *mmapio.Output, part int, dir string, cfg map[string]any, dt kernels.DType, one bool, edits baseEdits) error {
	if cfg != nil {
		if one {
			cfg["torch_dtype"] = dt.TorchName()
		}
		if edits.vocabSize > 0 {
			cfg["vocab_size"] = edits.vocabSize
		}
		data, err := json.MarshalIndent(cfg, "", "  ")
		if err != nil {
			return err
		}
		if err := out.WritePartFile(part, "config.json", append(data, '\n')); err != nil {
			return err
		}
	}
	for _, name := range baseFiles {
		if data, ok := edits.tokenizer[name]; ok || (edits.tokenizer != nil && slices.Contains(tokenizerFiles, name)) {
			if ok {
				if err := out.WritePartFile(part, name, data); err != nil {
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
		if err := out.WritePartFile(part, name, data); err != nil {
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
