package synth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tiesmm/tiesmm/mmapio"
)

// Generate writes the base model to dir/base and fine-tune i to dir/ft<i>,
// each a Hugging Face directory made atomically (nothing appears under its
// final name unless it is complete). It returns what it wrote.
func Generate(dir string, o Options) (*Summary, error) {
	start := time.Now()
	a, ts, ms, err := plan(o)
	if err != nil {
		return nil, err
	}
	if o.AddedTokens < 0 || baseTokens+int64(o.AddedTokens) > a.Vocab {
		return nil, fmt.Errorf("synth: %d added tokens do not fit the %d embedding rows past the tokenizer's %d ids", o.AddedTokens, a.Vocab, baseTokens)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}
	sum := &Summary{Dir: dir, Seed: o.Seed, Arch: a}
	var outs []*mmapio.Output
	abort := func(err error) (*Summary, error) {
		for _, out := range outs {
			if aerr := out.Abort(); aerr != nil {
				err = errors.Join(err, aerr)
			}
		}
		return nil, err
	}
	writers := make([]tensorWriter, 0, len(ms))
	for _, m := range ms {
		path := filepath.Join(dir, m.role)
		ots := make([]mmapio.OutTensor, len(ts))
		var bytes int64
		for i, t := range ts {
			dt := m.dt.String()
			if t.isInt() {
				dt = "I64"
			}
			ots[i] = mmapio.OutTensor{Name: t.name, DType: dt, Shape: t.shape}
			bytes += dataBytes(t, m)
		}
		layout, err := mmapio.PlanLayout(ots, o.ShardBytes)
		if err != nil {
			return abort(fmt.Errorf("synth: %s: %w", path, err))
		}
		out, err := mmapio.CreateOutput(path, o.Force, layout)
		if err != nil {
			return abort(fmt.Errorf("synth: %s: %w", path, err))
		}
		outs = append(outs, out)
		writers = append(writers, out)
		files, err := sideFiles(a, m.dt, m.role, o.Seed, addedTokens(m.role, o.AddedTokens))
		if err != nil {
			return abort(err)
		}
		for name, data := range files {
			if err := out.WriteFile(name, data); err != nil {
				return abort(fmt.Errorf("synth: %s: %s: %w", path, name, err))
			}
		}
		sum.Models = append(sum.Models, ModelSummary{Role: m.role, Path: path, DType: m.dt.String(),
			Bytes: bytes, Tensors: len(ts), Shards: len(layout.Shards)})
		sum.Bytes += bytes
	}
	if err := fill(ts, ms, writers, o.Workers, o.Progress); err != nil {
		return abort(err)
	}
	for i, out := range outs {
		if err := out.Commit(); err != nil { // Abort leaves committed outputs alone
			return abort(fmt.Errorf("synth: %s: %w", sum.Models[i].Path, err))
		}
	}
	if o.LoraRank > 0 {
		ls, err := writeLora(dir, ts, o.LoraRank, o.Seed, o.Force)
		if err != nil {
			return nil, err
		}
		sum.Models = append(sum.Models, ls)
		sum.Bytes += ls.Bytes
	}
	sum.Elapsed = time.Since(start)
	return sum, nil
}
