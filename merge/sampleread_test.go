package merge

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// sampledRuns sets up a run over one 2048×4096 bf16 tensor per model and
// lists sampled runs of 4096 elements, gap elements apart.
func sampledRuns(t *testing.T, gap int64) (*run, []block, string) {
	t.Helper()
	const n = 1 << 23
	name := "model.layers.0.mlp.up_proj.weight"
	tt := testTensor{name: name, shape: []int64{2048, 4096}, dt: kernels.BF16, vals: make([]float32, n)}
	set := testSet{base: []testTensor{tt}, models: [][]testTensor{{tt}}}
	dir := t.TempDir()
	base, models := set.write(t, dir, rand.New(rand.NewPCG(1, 1)))
	opts := Options{Base: base, Models: models, Out: filepath.Join(dir, "out"), Threads: 2, BlockElems: 4096, Kernels: kernels.Generic}
	p, err := NewPlan(opts, preset("paper", nil)(), func(string, int, int) (TensorParams, error) { return uniformParams(0.2, ones(1), 1)(name), nil })
	if err != nil {
		t.Fatal(err)
	}
	r := &run{p: p, k: p.Opts.Kernels, prog: noProgress{}}
	r.openFiles()
	t.Cleanup(r.closeFiles)
	r.setup()
	var bs []block
	for start := gap / 2; start+4096 <= n; start += gap {
		bs = append(bs, block{job: 0, index: int(start / 4096), seq: len(bs), start: start, n: 4096})
	}
	return r, bs, p.Jobs[0].Base.File
}

// TestSampledRunsCopied: a pass over sampled runs of a tensor that is not
// hot copies each run from the file (no fault, nothing to release) and the
// copies hold the file's bytes; a hot tensor's runs come from the mapping,
// which its later passes read again.
func TestSampledRunsCopied(t *testing.T) {
	r, bs, path := sampledRuns(t, 160<<10)
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	j := &r.p.Jobs[0]
	for _, hot := range []bool{false, true} {
		r.hot = hot
		f := r.files[path]
		err := r.parallel(context.Background(), bs, func(w *worker, b block) error {
			base := r.src(w, j.Base, j.BaseDT, b.start, b.n)
			model := r.src(w, j.Models[0], j.ModelDT[0], b.start, b.n)
			off := j.Base.Offset + 2*b.start
			if !bytes.Equal(base, file[off:off+2*b.n]) {
				t.Errorf("hot %v, run %d: the base's bytes differ from the file's", hot, b.seq)
			}
			if &base[0] == &model[0] {
				t.Errorf("hot %v, run %d: the base and the model share a buffer", hot, b.seq)
			}
			f.mu.Lock()
			mapped := f.m != nil
			f.mu.Unlock()
			if mapped != hot {
				t.Errorf("hot %v, run %d: file mapped %v", hot, b.seq, mapped)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestSampledRunShortRead: a file cut short under a pass copying its runs
// gives an error naming it, not a fault or a short copy.
func TestSampledRunShortRead(t *testing.T) {
	r, bs, path := sampledRuns(t, 1<<21)
	if err := r.files[path].readAt(make([]byte, 8), 0); err != nil { // opened at its planned size
		t.Fatal(err)
	}
	if err := os.Truncate(path, r.p.Jobs[0].Base.Offset+2*bs[1].start); err != nil {
		t.Fatal(err)
	}
	j := &r.p.Jobs[0]
	err := r.parallel(context.Background(), bs, func(w *worker, b block) error {
		r.src(w, j.Base, j.BaseDT, b.start, b.n)
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "unexpected EOF") || !strings.Contains(err.Error(), `tensor "`+j.Name+`"`) {
		t.Fatalf("got %v, want an unexpected EOF naming %s and tensor %q", err, path, j.Name)
	}
}
