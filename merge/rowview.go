package merge

import (
	"context"
	"fmt"
	"unsafe"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// rowView is an embedding (embed_tokens, lm_head) whose output rows are not
// the inputs' stored rows: rows aligned by token (tokenizer_source), or
// embeddings of different sizes cut to their common submatrix. Each input
// is read row by row with pread and widened to float32, so the method sees
// the rows it merges like any other input, and no embedding is held whole.
type rowView struct {
	cols int64     // output columns
	vm   *vocabMap // nil: output row r is every input's row r
	// srcs and srcDT: per model of vm (or per input of the job when vm is
	// nil), the tensor its rows come from and its stored dtype.
	srcs  []*mmapio.Tensor
	srcDT []kernels.DType
}

// inputView is one input tensor of a job read through its rowView.
type inputView struct {
	job, slot int // slot: 0 the base, 1 + i model i (the worker's buffer)
	model     int // index into the view's srcs
}

// rowScratch is a worker's room for row views: a float32 block per input,
// the stored bytes of a run of rows, and a row segment for the means.
type rowScratch struct {
	rowOut  [][]float32
	rowRaw  []byte
	rowPart []float32
}

// viewWorkerBytes is a worker's rowScratch for blocks of b elements.
func (p *Plan) viewWorkerBytes(b int64) int64 {
	for _, j := range p.Jobs {
		if j.Rows != nil {
			return int64(p.width()+1)*b*4 + b*4 + b*4
		}
	}
	return 0
}

// viewSharedBytes is the memory row views share: the vocabulary map, the
// pad rows' means (a float32 row per model and embedding) and, while they
// are computed, each worker's rows and float64 sums.
func (p *Plan) viewSharedBytes(workers, block int) int64 {
	var total, cols int64
	if p.vocab != nil {
		total += p.vocab.bytes()
	}
	for _, j := range p.Jobs {
		if j.Rows != nil && j.Rows.padded() {
			total += int64(len(j.Rows.srcs)) * j.Rows.cols * 4
			cols = max(cols, j.Rows.cols)
		}
	}
	if cols > 0 {
		total += int64(workers) * (3*4*max(cols, int64(p.stride(block))) + 8*cols)
	}
	return total
}

// padded reports whether the view has pad rows past the vocabulary.
func (v *rowView) padded() bool {
	return v.vm != nil && v.vm.rows > v.vm.realRows()
}

// setupViews indexes the inputs read through row views.
func (r *run) setupViews() {
	r.views = map[*mmapio.Tensor]inputView{}
	for ji, j := range r.p.Jobs {
		if j.Rows == nil {
			continue
		}
		r.views[j.Base] = inputView{job: ji, slot: 0, model: r.p.viewModel(j.Rows, -1)}
		for i, t := range j.Models {
			r.views[t] = inputView{job: ji, slot: 1 + i, model: r.p.viewModel(j.Rows, i)}
		}
	}
}

// viewModel is the index into v.srcs of input i of a job (-1: the base).
func (p *Plan) viewModel(v *rowView, i int) int {
	if v.vm == nil {
		return i + 1
	}
	if i < 0 {
		return p.vocabBase
	}
	return p.vocabModels[i]
}

// viewSrc is src for an input read through a row view: elements
// [start, start+n) of its output rows, as float32.
func (r *run) viewSrc(w *worker, iv inputView, start, n int64) []byte {
	if w.rowOut == nil {
		w.rowOut = make([][]float32, r.p.width()+1)
		for i := range w.rowOut {
			w.rowOut[i] = make([]float32, r.stride)
		}
		w.rowRaw = make([]byte, r.stride*4)
		w.rowPart = make([]float32, r.stride)
	}
	dst := w.rowOut[iv.slot][:n]
	if err := r.readRows(&w.rowScratch, iv, start, dst); err != nil {
		panic(mapError{err}) // inside Guard: parallel returns it
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(dst))), 4*n)
}

// readRows fills dst with elements [start, start+len(dst)) of input iv's
// output rows.
func (r *run) readRows(s *rowScratch, iv inputView, start int64, dst []float32) error {
	v := r.p.Jobs[iv.job].Rows
	end := start + int64(len(dst))
	for pos := start; pos < end; {
		row, c0 := pos/v.cols, pos%v.cols
		c1 := min(v.cols, c0+end-pos)
		out := dst[pos-start : pos-start+c1-c0]
		rows, err := r.readRow(s, iv, row, c0, c1, out, end)
		if err != nil {
			return err
		}
		pos += (rows-1)*v.cols + c1 - c0
	}
	return nil
}

// readRow writes columns [c0, c1) of output row row of input iv to out, and
// when the row is the model's own and whole, the whole rows after it that
// follow it in the model too, up to element end. It returns the rows read.
func (r *run) readRow(s *rowScratch, iv inputView, row, c0, c1 int64, out []float32, end int64) (int64, error) {
	v := r.p.Jobs[iv.job].Rows
	if v.vm == nil {
		return 1, r.readSegment(s, v, iv.model, row, c0, c1, out)
	}
	vm := v.vm
	if row >= vm.realRows() {
		copy(out, r.padMeans[iv.job][iv.model][c0:c1])
		return 1, nil
	}
	if own := vm.own(iv.model, row); own >= 0 {
		n := int64(1)
		if c0 == 0 && c1 == v.cols && v.cols == v.srcs[iv.model].Shape[1] {
			for (row+n+1)*v.cols <= end && row+n < vm.realRows() && vm.own(iv.model, row+n) == own+int32(n) {
				n++
			}
		}
		return n, r.readSegment(s, v, iv.model, int64(own), c0, c0+n*(c1-c0), out[:n*(c1-c0)])
	}
	switch f := vm.fill[row]; f {
	case fillZero:
		clear(out)
	case fillRow:
		fr := vm.over[int(row)].from
		return 1, r.readSegment(s, v, int(fr.model), fr.row, c0, c1, out)
	case fillMean:
		count := float32(0)
		clear(out)
		part := s.rowPart[:len(out)]
		for k := range vm.paths {
			src := vm.perm[k][row]
			if src < 0 {
				continue
			}
			if err := r.readSegment(s, v, k, int64(src), c0, c1, part); err != nil {
				return 1, err
			}
			for i, x := range part {
				out[i] += x
			}
			count++
		}
		for i := range out {
			out[i] /= count
		}
	default:
		return 1, r.readSegment(s, v, int(f), int64(vm.perm[f][row]), c0, c1, out)
	}
	return 1, nil
}

// readSegment widens columns [c0, c1) of stored row row of model k into out;
// c1 may run past the row into the next ones when they are read whole.
func (r *run) readSegment(s *rowScratch, v *rowView, k int, row, c0, c1 int64, out []float32) error {
	t, dt := v.srcs[k], v.srcDT[k]
	sz := int64(dt.Size())
	off := t.Offset + (row*t.Shape[1]+c0)*sz
	raw := s.rowRaw[:(c1-c0)*sz]
	f := r.files[t.File]
	if err := f.readAt(raw, off); err != nil {
		return &InputError{File: f.path, Tensor: t.Name, Err: err}
	}
	r.k.Widen(out, raw, dt)
	return nil
}

// vocabPads works out, per embedding with pad rows and per model, the mean
// of its output rows below the padding: per column a float64 sum in row
// order rounded once, which the pad rows take. The sums of each embedding
// and model are one task, run on as many goroutines as the merge has
// workers.
func (r *run) vocabPads(ctx context.Context) error {
	r.padMeans = make([][][]float32, len(r.p.Jobs))
	type task struct{ job, model int }
	var tasks []task
	for ji, j := range r.p.Jobs {
		if v := j.Rows; v != nil && v.padded() {
			r.padMeans[ji] = make([][]float32, len(v.srcs))
			for k := range v.srcs {
				tasks = append(tasks, task{ji, k})
			}
		}
	}
	if len(tasks) == 0 {
		return nil
	}
	next := make(chan task, len(tasks))
	for _, tk := range tasks {
		next <- tk
	}
	close(next)
	errs := make(chan error, r.p.Workers)
	for range r.p.Workers {
		go func() {
			var err error
			for tk := range next {
				if err == nil {
					r.padMeans[tk.job][tk.model], err = r.padMean(ctx, tk.job, tk.model)
				}
			}
			errs <- err
		}()
	}
	var first error
	for range r.p.Workers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// padMean is model k's mean row of job ji's output rows below the padding.
func (r *run) padMean(ctx context.Context, ji, k int) ([]float32, error) {
	v := r.p.Jobs[ji].Rows
	cols, rows := v.cols, v.vm.realRows()
	chunk := max(1, int64(r.stride)/cols)
	buf := make([]float32, chunk*cols)
	s := &rowScratch{rowRaw: make([]byte, chunk*cols*4), rowPart: make([]float32, chunk*cols)}
	sums := make([]float64, cols)
	for row := int64(0); row < rows; row += chunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(chunk, rows-row)
		if err := r.readRows(s, inputView{job: ji, model: k}, row*cols, buf[:n*cols]); err != nil {
			return nil, fmt.Errorf("pad rows: %w", err)
		}
		for i := range n {
			for c, x := range buf[i*cols : (i+1)*cols] {
				sums[c] += float64(x)
			}
		}
	}
	mean := make([]float32, cols)
	for c, sum := range sums {
		mean[c] = float32(sum / float64(rows))
	}
	return mean, nil
}
