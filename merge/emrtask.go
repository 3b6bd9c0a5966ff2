package merge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// An EMR task's model, θₜ = θ₀ + float32(U·λₜ) where Mₜ and θ₀ elsewhere,
// rounded once to the output dtype: a pass over the base, U and row t of
// the masks, read with pread in blocks (their pages stay in the page cache,
// not in the process). The merge's --materialize reads U and the masks back
// from its partial output, emr-apply from a finished one: the same code
// writes the same bytes.

// tensorReader reads p at byte offset off of tensor name.
type tensorReader func(name string, off int64, p []byte) error

// emrTaskTensor is one tensor of a task's model.
type emrTaskTensor struct {
	name          string
	base          *mmapio.Tensor
	baseDT, outDT kernels.DType
	copy          bool // not a float tensor: the base's bytes
}

// emrTask writes task t's model into part of out.
type emrTask struct {
	k              *kernels.Set
	tensors        []emrTaskTensor
	task           int // t: its row of the masks
	lambda         float32
	unified, masks tensorReader
	out            *mmapio.Output
	part           int
	workers, block int // block: a multiple of 8
	prog           Progress
}

// emrTaskWorkerBytes is a worker's buffers for blocks of b elements: the
// base's bytes and values, U's bytes and values, the mask row, the result
// and its bytes.
func emrTaskWorkerBytes(b int64) int64 { return 4*b*6 + b/8 + 1 + workerStack }

// planTaskTensors lists a merge's tensors as a task's model has them.
func planTaskTensors(p *Plan) []emrTaskTensor {
	ts := make([]emrTaskTensor, len(p.Jobs))
	for i, j := range p.Jobs {
		ts[i] = emrTaskTensor{name: j.Name, base: j.Base, baseDT: j.BaseDT, outDT: j.OutDT, copy: j.Copy}
	}
	return ts
}

// taskBlock is elements [start, start+n) of a float tensor, or bytes of a
// copied one.
type taskBlock struct {
	tensor   int
	start, n int64
}

// span is tensor i's length and block length: elements, or bytes when
// copied (as many bytes as a float block's buffer holds).
func (a *emrTask) span(i int) (size, step int64) {
	t := &a.tensors[i]
	if t.copy {
		return t.base.Size, 4 * int64(a.block)
	}
	return t.base.Elements(), int64(a.block)
}

// blockStarts is, per tensor, the index of its first block; the last
// entry is the block count. Blocks are found from it, not listed.
func (a *emrTask) blockStarts() []int64 {
	starts := make([]int64, len(a.tensors)+1)
	for i := range a.tensors {
		size, step := a.span(i)
		starts[i+1] = starts[i] + (size+step-1)/step
	}
	return starts
}

// blockAt is block k of the pass.
func (a *emrTask) blockAt(starts []int64, k int64) taskBlock {
	i := sort.Search(len(a.tensors), func(i int) bool { return starts[i+1] > k })
	size, step := a.span(i)
	s := (k - starts[i]) * step
	return taskBlock{tensor: i, start: s, n: min(step, size-s)}
}

// taskScratch is one worker's buffers.
type taskScratch struct {
	raw, ub, outb []byte
	base, u, vals []float32
	mask          []byte
}

// run writes the task's tensors, block by block on every worker.
func (a *emrTask) run(ctx context.Context) error {
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, t := range a.tensors {
		if files[t.base.File] == nil {
			f, err := mmapio.OpenRegular(t.base.File)
			if err != nil {
				return fmt.Errorf("base model: %w", err)
			}
			files[t.base.File] = f
		}
	}
	starts := a.blockStarts()
	count := starts[len(a.tensors)]
	var next atomic.Int64
	var failed atomic.Bool
	errs := make([]error, a.workers)
	var wg sync.WaitGroup
	for wi := range a.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			B := a.block
			sc := &taskScratch{raw: make([]byte, 4*B), ub: make([]byte, 4*B), outb: make([]byte, 4*B),
				base: make([]float32, B), u: make([]float32, B), vals: make([]float32, B), mask: make([]byte, B/8+1)}
			for !failed.Load() {
				i := next.Add(1) - 1
				if i >= count {
					return
				}
				err := ctx.Err()
				if err == nil {
					err = a.write(sc, files, a.blockAt(starts, i))
				}
				if err != nil {
					errs[wi] = err
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// write computes and writes one block.
func (a *emrTask) write(sc *taskScratch, files map[string]*os.File, b taskBlock) error {
	t := &a.tensors[b.tensor]
	f := files[t.base.File]
	if t.copy {
		raw := sc.raw[:b.n]
		if _, err := f.ReadAt(raw, t.base.Offset+b.start); err != nil {
			return &InputError{File: t.base.File, Tensor: t.name, Err: err}
		}
		return a.put(t, b.start, raw)
	}
	n := int(b.n)
	raw := sc.raw[:n*t.baseDT.Size()]
	if _, err := f.ReadAt(raw, t.base.Offset+b.start*int64(t.baseDT.Size())); err != nil {
		return &InputError{File: t.base.File, Tensor: t.name, Err: err}
	}
	base := sc.base[:n]
	a.k.Widen(base, raw, t.baseDT)
	ub := sc.ub[:4*n]
	if err := a.unified(t.name, 4*b.start, ub); err != nil {
		return fmt.Errorf("unified: %w", err)
	}
	u := sc.u[:n]
	for e := range u {
		u[e] = math.Float32frombits(binary.LittleEndian.Uint32(ub[4*e:]))
	}
	mask := sc.mask[:maskRowBytes(b.n)]
	if err := a.masks(t.name, int64(a.task)*maskRowBytes(t.base.Elements())+b.start/8, mask); err != nil {
		return fmt.Errorf("masks: %w", err)
	}
	vals := sc.vals[:n]
	emrTaskValues(vals, base, u, mask, a.lambda)
	out := sc.outb[:n*t.outDT.Size()]
	encodeValues(out, t.outDT, vals)
	return a.put(t, b.start*int64(t.outDT.Size()), out)
}

// put writes a block's bytes at byte offset off of its tensor.
func (a *emrTask) put(t *emrTaskTensor, off int64, p []byte) error {
	if err := a.out.WritePartTensor(a.part, t.name, off, p); err != nil {
		return err
	}
	a.prog.Add(int64(len(p)))
	return nil
}

// emrTaskValues is θ₀ + float32(U·λ) where the mask's bit is set (bit e&7
// of byte e>>3), θ₀ elsewhere: out, base and u of one length.
func emrTaskValues(out, base, u []float32, mask []byte, lambda float32) {
	for e := range out {
		if mask[e>>3]&(1<<(e&7)) != 0 {
			out[e] = base[e] + float32(u[e]*lambda)
		} else {
			out[e] = base[e]
		}
	}
}
