package merge

import (
	"errors"
	"fmt"
	"os"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// Reads of the inputs inside a pass: views of the mappings (or copies of
// sampled runs), with faults and read errors turned into errors that name
// the file and tensor, and pages released behind the workers.

// src is elements [start, start+n) of t: a view of the mapping, which stays
// until the pass's last block reading the file is done (parallel counts
// them), or, in a pass over sampled runs whose pages would be released right
// after, a copy read into one of the worker's run buffers. A copy costs the
// sample's few bytes; a mapped run costs a fault and a release, each
// interrupting every core. The buffers are used in turn, one per input of a
// block, so a block's inputs never share one.
func (r *run) src(w *worker, t *mmapio.Tensor, dt kernels.DType, start, n int64) []byte {
	if iv, ok := r.views[t]; ok {
		return r.viewSrc(w, iv, start, n)
	}
	if a := r.p.adapted[t]; a != nil {
		return r.materialise(w, a, start, n)
	}
	sz := int64(dt.Size())
	off := t.Offset + start*sz
	f := r.files[t.File]
	if w.copyRuns && n <= r.p.tuning.sampleChunk {
		if w.runs == nil {
			w.runs = make([][]byte, len(r.p.Models)+1)
			for i := range w.runs {
				w.runs[i] = make([]byte, r.p.tuning.sampleChunk*4)
			}
		}
		buf := w.runs[w.nextRun][:n*sz]
		w.nextRun = (w.nextRun + 1) % len(w.runs)
		if err := f.readAt(buf, off); err != nil {
			panic(mapError{&InputError{File: f.path, Tensor: t.Name, Err: err}}) // inside Guard: parallel returns it
		}
		return buf
	}
	data, err := f.data()
	if err != nil {
		panic(mapError{&InputError{File: f.path, Tensor: t.Name, Err: err}}) // inside Guard: parallel returns it
	}
	return data[off : off+n*sz]
}

// guarded runs fn over block b with the faults of mapped reads and the
// failures of src turned into errors naming the file and tensor.
func (r *run) guarded(w *worker, b block, fn func(w *worker, b block) error) error {
	err := mmapio.Guard(func() (err error) {
		defer func() {
			if e := recover(); e != nil {
				me, ok := e.(mapError)
				if !ok {
					panic(e) // a fault: Guard turns it into an error
				}
				err = me.err
			}
		}()
		w.fit(len(r.p.Jobs[b.job].Models), r.stride)
		return fn(w, b)
	})
	if fe := (*mmapio.FaultError)(nil); errors.As(err, &fe) {
		err = r.faultError(b, fe)
	}
	return err
}

// mapError carries a mapping or read failure out of a kernel call site.
type mapError struct{ err error }

// faultError names the input file and tensor of block b that a memory
// fault was in (a file truncated under its mapping); the block's files are
// still mapped, as parallel closes them only after. A fault outside them
// names the tensor alone.
func (r *run) faultError(b block, fe *mmapio.FaultError) error {
	var found *InputError
	r.eachTensor(b.job, func(t *mmapio.Tensor, _ int64) {
		if f := r.files[t.File]; found == nil && f != nil && f.contains(fe.Addr) {
			found = &InputError{File: f.path, Tensor: t.Name, Err: fe}
		}
	})
	if found != nil {
		return found
	}
	return fmt.Errorf("tensor %q: %w", r.p.Jobs[b.job].Name, fe)
}

// release drops the input pages of blocks bs from this process once read.
// parallel calls it a few blocks behind the workers, and each range reaches
// back by the most a single page fault maps (a PMD-sized folio of the page
// cache on recent kernels, or fault-around's 64 KiB): a fault in a block can
// map pages of the block before it, already released, which would
// otherwise stay resident for good. Dropping a page still being read is
// harmless for a read-only file mapping: it faults back from the page cache.
func (r *run) release(bs []block) {
	pad := max(int64(faultSpan), int64(os.Getpagesize()))
	r.eachInput(bs, func(f *mappedFile, off, n int64) { f.dontNeed(off-pad, n+pad) })
}

// readsBase reports whether job j reads its base tensor: unless the method
// has no base, and always for a copy (a passthrough copies its one model).
func (r *run) readsBase(j *Job) bool { return !r.p.Method.NoBase || j.Copy }

// eachTensor calls f with job ji's mapped input tensors (the base's unless
// the method has none, then each model's) and their stored element sizes.
func (r *run) eachTensor(ji int, f func(t *mmapio.Tensor, sz int64)) {
	j := &r.p.Jobs[ji]
	if j.Rows != nil {
		return // read with pread (rowview.go): no mapped pages
	}
	if r.readsBase(j) {
		f(j.Base, int64(j.BaseDT.Size()))
	}
	for i, t := range j.Models {
		f(t, int64(j.ModelDT[i].Size()))
	}
}

// eachInput calls f with the input byte range of every run of consecutive
// blocks of one tensor in bs, once per input file.
func (r *run) eachInput(bs []block, f func(file *mappedFile, off, n int64)) {
	for len(bs) > 0 {
		k := 1
		for k < len(bs) && bs[k].job == bs[0].job && bs[k].start == bs[k-1].start+bs[k-1].n {
			k++
		}
		start, n := bs[0].start, bs[k-1].start+bs[k-1].n-bs[0].start
		r.eachTensor(bs[0].job, func(t *mmapio.Tensor, sz int64) {
			sz = r.p.storedSize(t, sz)
			f(r.files[t.File], t.Offset+start*sz, n*sz)
		})
		bs = bs[k:]
	}
}

func (r *run) readBytes(j *Job, n int64) int64 {
	total := n * int64(j.BaseDT.Size())
	for _, dt := range j.ModelDT {
		total += n * int64(dt.Size())
	}
	return total
}

// runCopies: in a pass that copies its sampled runs (copyRuns), a worker's
// buffers for them, one per input read in turn, instead of mapping them
// (see src).
type runCopies struct {
	copyRuns bool
	runs     [][]byte
	nextRun  int
}
