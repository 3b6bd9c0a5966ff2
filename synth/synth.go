// Package synth owns synthetic checkpoints (`tiesmm synth`): a Llama-shaped
// base model and N fine-tunes of it whose task vectors look like real ones,
// written as Hugging Face safetensors directories for the demo, the tests
// and the benchmarks.
//
// Values are a pure function of (seed, tensor name, model, element index),
// made by a counter-based hash, so the bytes depend only on the options, never
// on the number of workers. Workers take chunks of a tensor, compute the base
// values once and every model's values from them, and write each chunk at
// its offset; nothing larger than a chunk is held in memory.
package synth

import (
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tiesmm/tiesmm/internal/units"
	"github.com/tiesmm/tiesmm/kernels"
)

// Options describe a synthetic set. The zero value of each field but Params
// is a usable default.
type Options struct {
	Params int64 // target float parameter count per model (see ParseParams)
	Models int   // number of fine-tunes; 0 means 3
	Seed   uint64

	// DType is the base's dtype: "bf16" (default), "f16" or "f32" (any name
	// kernels.ParseDType reads). FineTuneDTypes gives the fine-tunes': none
	// means as the base, one applies to all, otherwise one per fine-tune.
	DType          string
	FineTuneDTypes []string

	ShardBytes int64 // cap per shard file (multi-shard with index JSON); 0: one file
	IntBuffer  bool  // add the I64 tensor IntBufferName (differs per model)

	// EmbedRows × EmbedCols override vocab × hidden (e.g. 128256 × 8192
	// for memory tests); the layers then fill what is left of Params (≥ 1).
	EmbedRows, EmbedCols int64

	// AddedTokens: each fine-tune's tokenizer adds this many special tokens
	// after the base's 259 ids (rows the embeddings already have): one all
	// fine-tunes share, then tokens of its own.
	AddedTokens int

	// LoraRank, if not 0: also write lora1, a LoRA adapter of the base of
	// this rank on every projection (adapter_config.json and
	// adapter_model.safetensors, as PEFT saves them).
	LoraRank int

	Force    bool                    // replace existing model directories
	Workers  int                     // 0: GOMAXPROCS
	Progress func(done, total int64) // bytes written; called concurrently
}

// ModelSummary describes one written model directory.
type ModelSummary struct {
	Role    string // "base", "ft1", …
	Path    string
	DType   string
	Bytes   int64 // tensor data bytes
	Tensors int
	Shards  int
}

// Summary is what Generate made.
type Summary struct {
	Dir     string
	Seed    uint64
	Arch    Arch
	Models  []ModelSummary
	Bytes   int64 // tensor data bytes over all models
	Elapsed time.Duration
}

// GBps is the write rate in 10⁹ bytes of tensor data per second.
func (s *Summary) GBps() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Bytes) / s.Elapsed.Seconds() / 1e9
}

func (s *Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "synthetic Llama set in %s (seed %d): %s\n", s.Dir, s.Seed, s.Arch)
	for _, m := range s.Models {
		fmt.Fprintf(&b, "  %-6s %-4s %8s  %4d tensors  %3d shard(s)  %s\n",
			m.Role, m.DType, units.FormatDecimal(m.Bytes), m.Tensors, m.Shards, m.Path)
	}
	fmt.Fprintf(&b, "%s in %v (%.2f GB/s)", units.FormatDecimal(s.Bytes), s.Elapsed.Round(time.Millisecond), s.GBps())
	return b.String()
}

// model is one checkpoint of the set: index 0 is the base, m ≥ 1 fine-tune m.
type model struct {
	role  string
	index int
	dt    kernels.DType
}

// resolve validates o and returns the models to write.
func (o *Options) resolve() ([]model, error) {
	n := o.Models
	if n == 0 {
		n = 3
	}
	if n < 0 || n > 1000 {
		return nil, fmt.Errorf("synth: number of fine-tunes %d out of range (1 .. 1000)", o.Models)
	}
	name := o.DType
	if name == "" {
		name = "bf16"
	}
	baseDT, err := kernels.ParseDType(name)
	if err != nil {
		return nil, fmt.Errorf("synth: base dtype: %w", err)
	}
	ms := []model{{role: "base", dt: baseDT}}
	if k := len(o.FineTuneDTypes); k > 1 && k != n {
		return nil, fmt.Errorf("synth: %d fine-tune dtypes for %d fine-tunes (give none, one, or one each)", k, n)
	}
	for i := 1; i <= n; i++ {
		dt := baseDT
		if k := len(o.FineTuneDTypes); k > 0 {
			s := o.FineTuneDTypes[0]
			if k > 1 {
				s = o.FineTuneDTypes[i-1]
			}
			if dt, err = kernels.ParseDType(s); err != nil {
				return nil, fmt.Errorf("synth: dtype of fine-tune %d: %w", i, err)
			}
		}
		ms = append(ms, model{role: fmt.Sprintf("ft%d", i), index: i, dt: dt})
	}
	if o.ShardBytes < 0 {
		return nil, fmt.Errorf("synth: negative shard size %d", o.ShardBytes)
	}
	return ms, nil
}

// chunkElems is the unit of work: small enough that every worker's buffers
// (two float32 and one output chunk) stay around a megabyte or two, large
// enough that a write call moves hundreds of kilobytes.
const chunkElems = 1 << 17

// tensorWriter is what a worker needs from an output: mmapio's Output.
type tensorWriter interface {
	WriteTensor(name string, off int64, p []byte) error
}

// dataBytes is the tensor data size of t in model m.
func dataBytes(t *tensorSpec, m model) int64 {
	if t.isInt() {
		return 8 * t.n
	}
	return t.n * int64(m.dt.Size())
}

// fill computes every tensor of every model and hands chunks to outs
// (one per model, same order), with the given number of workers.
func fill(ts []*tensorSpec, ms []model, outs []tensorWriter, workers int, progress func(done, total int64)) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	// first[i] is the global index of tensor i's first chunk.
	first := make([]int64, len(ts)+1)
	var total int64
	for i, t := range ts {
		c := int64(1)
		if !t.isInt() {
			c = (t.n + chunkElems - 1) / chunkElems
		}
		first[i+1] = first[i] + c
		for _, m := range ms {
			total += dataBytes(t, m)
		}
	}
	chunks := first[len(ts)]
	var (
		next, done atomic.Int64
		failed     atomic.Bool
		errOnce    sync.Once
		firstErr   error
		wg         sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		failed.Store(true)
	}
	for w := int64(0); w < min(int64(workers), max(chunks, 1)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := newChunkBuf(chunkElems)
			for !failed.Load() {
				c := next.Add(1) - 1
				if c >= chunks {
					return
				}
				ti := sort.Search(len(ts), func(i int) bool { return first[i+1] > c })
				t := ts[ti]
				var wrote int64
				var err error
				var role string
				if t.isInt() {
					for k, m := range ms {
						p := t.intValues(m.index)
						if err = outs[k].WriteTensor(t.name, 0, p); err != nil {
							role = m.role
							break
						}
						wrote += int64(len(p))
					}
				} else {
					start := (c - first[ti]) * chunkElems
					n := int(min(chunkElems, t.n-start))
					for k, m := range ms {
						var p []byte
						if m.index == 0 { // the base comes first: the others need it
							p = t.fillBase(buf, start, n, m.dt)
						} else {
							p = t.fillModel(buf, start, n, m.index, m.dt)
						}
						if err = outs[k].WriteTensor(t.name, start*int64(m.dt.Size()), p); err != nil {
							role = m.role
							break
						}
						wrote += int64(len(p))
					}
				}
				if err != nil {
					fail(fmt.Errorf("synth: %s: tensor %q: %w", role, t.name, err))
					return
				}
				d := done.Add(wrote)
				if progress != nil {
					progress(d, total)
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && failed.Load() {
		firstErr = errors.New("synth: generation stopped")
	}
	return firstErr
}

// plan resolves the options into the shape, the tensors and the models.
func plan(o Options) (Arch, []*tensorSpec, []model, error) {
	ms, err := o.resolve()
	if err != nil {
		return Arch{}, nil, nil, err
	}
	a, err := DeriveArch(o)
	if err != nil {
		return Arch{}, nil, nil, err
	}
	return a, specs(a, o.Seed, o.IntBuffer), ms, nil
}
