package merge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// The merge pass: every tensor in the order and by the strategy the plan
// gives (tensorstrategy.go), each block widened, trimmed, voted and finished
// into the output (by the fused kernel where its trim allows).

// mergeAll is the pass driver: each strategy prepares its tensors (the
// whole-model select), then the merge pass runs the batch strategies (the
// solo tensors side by side, the whole-model single pass) and the other
// tensors one by one, reading each next tensor ahead while one merges.
func (r *run) mergeAll(ctx context.Context) error {
	p := r.p
	groups := r.groups()
	for _, g := range groups {
		if err := g.s.prepare(ctx, r, g.jobs); err != nil {
			return err
		}
	}
	passes := p.Passes()
	count := len(passes)
	if count > 1 && strings.HasPrefix(passes[count-2], "per tensor") {
		count-- // the per-tensor passes run inside this one
	}
	r.prog.StartPass(phaseMerge, count, count, p.InputBytes)
	defer r.prog.EndPass()
	var jobs []int // the tensors merged one by one
	for _, g := range groups {
		if !g.s.batch() {
			jobs = append(jobs, g.jobs...)
		} else if err := g.s.merge(ctx, r, g.jobs); err != nil {
			return err
		}
	}
	slices.Sort(jobs)
	for k, ji := range jobs {
		if k == 0 {
			r.prefetchJob(ji)
		}
		if k+1 < len(jobs) {
			r.prefetchJob(jobs[k+1]) // read while this one merges
		}
		if err := r.impl[ji].merge(ctx, r, []int{ji}); err != nil {
			return tensorError(p.Jobs[ji].Name, err)
		}
	}
	return nil
}

// plainTensor merges a tensor without a trim of its own (PathPlain): its L1
// norms first if rescaled, then the merge pass.
type plainTensor struct{ perTensor }

func (plainTensor) merge(ctx context.Context, r *run, jobs []int) error {
	return eachJob(jobs, func(ji int) error { return r.mergeTensor(ctx, ji) })
}

// selectAndMerge merges a tensor of a per-tensor trim: sel finds its
// thresholds (or merges it, done), then the merge pass. The tensor is read
// more than once before its merge: it is kept mapped if it fits.
func (r *run) selectAndMerge(ctx context.Context, ji int, sel func() (done bool, err error)) error {
	defer r.dropTieCounts(ji)
	j := &r.p.Jobs[ji]
	if r.readBytes(j, j.Elements) <= r.p.HotBytes {
		r.hot = true
		defer r.cool(ji)
	}
	if done, err := sel(); err != nil || done {
		return err
	}
	return r.mergeTensor(ctx, ji)
}

// mergeTensor runs a tensor's L1 rescale pass where its strategy has one,
// then its merge pass.
func (r *run) mergeTensor(ctx context.Context, ji int) error {
	if r.strategy[ji].Rescale {
		if err := r.l1Pass(ctx, ji); err != nil {
			return err
		}
	}
	// The merge releases behind itself, and unmaps at the end; a solo
	// tensor, mapped whole already, is released once when done.
	r.hot = r.shared
	r.traced(ji, "merge")
	return r.parallel(ctx, r.blocks([]int{ji}), r.mergeBlock)
}

// dropTieCounts frees job ji's per-block tie budgets once it is merged:
// the plan counts one tensor's at a time for per-tensor trims.
func (r *run) dropTieCounts(ji int) {
	for i := range r.trims[ji] {
		r.trims[ji][i].ties, r.tops[ji][i].ties = nil, nil
	}
}

// cool ends a hot tensor's stay: its files are unmapped unless a pass
// still reads them.
func (r *run) cool(ji int) {
	r.hot = false
	if r.shared {
		return // the solo job releases the tensor when it is done
	}
	for _, f := range r.jobFiles(ji) {
		if f.pending.Load() == 0 {
			f.close()
		}
	}
}

// copyTensor copies a tensor that is not merged from the base, byte for
// byte (PathCopy).
type copyTensor struct{ perTensor }

func (copyTensor) merge(ctx context.Context, r *run, jobs []int) error {
	return eachJob(jobs, func(ji int) error {
		if _, ok := floatDType(r.p.Jobs[ji].Base.DType); ok {
			return r.copyBlocks(ctx, ji)
		}
		return r.copyJob(ji)
	})
}

// copyBlocks copies a float tensor that is not merged (a passthrough's
// layer) block by block on every worker, its bytes straight from the
// mapping to the output.
func (r *run) copyBlocks(ctx context.Context, ji int) error {
	r.traced(ji, "copy")
	j := &r.p.Jobs[ji]
	sz := int64(j.BaseDT.Size())
	return r.parallel(ctx, r.blocks([]int{ji}), func(w *worker, b block) error {
		err := r.out.WriteTensor(j.Name, b.start*sz, r.src(w, j.Base, j.BaseDT, b.start, b.n))
		if errors.Is(err, syscall.EFAULT) {
			// The write read the mapping in the kernel, which faulted.
			return &InputError{File: j.Base.File, Tensor: j.Name, Err: fmt.Errorf("%w (copying it out: %v)", mmapio.ErrFault, err)}
		}
		r.prog.Add(b.n * sz)
		return err
	})
}

func (r *run) copyJob(ji int) error {
	r.traced(ji, "copy")
	j := &r.p.Jobs[ji]
	const chunk = 8 << 20
	f := r.files[j.Base.File]
	defer f.close()
	all, err := f.data()
	if err != nil {
		return &InputError{File: f.path, Tensor: j.Name, Err: err}
	}
	data := all[j.Base.Offset : j.Base.Offset+j.Base.Size]
	err = mmapio.Guard(func() error {
		for off := int64(0); off < j.Base.Size; off += chunk {
			end := min(off+chunk, j.Base.Size)
			if err := r.out.WriteTensor(j.Name, off, data[off:end]); err != nil {
				return err
			}
			r.prog.Add(end - off)
		}
		return nil
	})
	switch {
	case errors.Is(err, mmapio.ErrFault):
		return &InputError{File: f.path, Tensor: j.Name, Err: err}
	case errors.Is(err, syscall.EFAULT):
		// The write read the mapping in the kernel, which faulted.
		return &InputError{File: f.path, Tensor: j.Name, Err: fmt.Errorf("%w (copying it out: %v)", mmapio.ErrFault, err)}
	}
	return err
}

func (r *run) mergeBlock(w *worker, b block) error {
	if r.p.Method.Compute == kernels.BF16 {
		return r.mergeBlockBF16(w, b)
	}
	if r.fusedThresholds(w, b) {
		return r.mergeBlockFused(w, b, nil)
	}
	p := r.p
	j := &p.Jobs[b.job]
	n := int(b.n)
	base := r.widenBase(w, b)
	for i := range j.Models {
		tau := w.taus[i*r.stride : i*r.stride+n]
		kept := r.taskVector(w, b, i, tau, base)
		if sc := r.scale[b.job][i]; sc != 1 {
			for e := range tau {
				tau[e] *= sc
			}
		}
		if p.Method.Sparsifies() {
			w.kept[j.slot(i)] += uint64(kept)
		}
	}
	return r.voteAndFinish(w, b, base)
}

// dropTies zeroes the elements at the threshold after the first keep of them.
func (w *worker) dropTies(k *kernels.Set, tau []float32, bits uint32, keep int64) int {
	at := w.idx[:k.Range(tau, bits, bits, w.idx)]
	if keep >= int64(len(at)) {
		return 0
	}
	for _, e := range at[keep:] {
		tau[e] = 0
	}
	return len(at) - int(keep)
}

// fusedThresholds reports whether block b's merge is one call of the fused
// kernel (its strategy allows it, and the block's trim cuts no tie group and
// has no rescale) and sets w.fused.Thr.
func (r *run) fusedThresholds(w *worker, b block) bool {
	if !r.strategy[b.job].Fused {
		return false
	}
	for i, tr := range r.trims[b.job] {
		bits := tr.bits
		if tr.ties != nil {
			switch keep := tr.ties[b.index]; {
			case keep == 0:
				bits++
			case keep > 0:
				return false
			}
		}
		if r.scale[b.job][i] != 1 {
			return false
		}
		w.fused.Thr[i] = bits
	}
	return true
}

// mergeBlockFused merges a block in one sweep of the fused kernel. Zero sums
// (paper preset) come back as indices; only their columns are computed
// again, for the record of their −1 outputs. equal, if not nil, receives per
// model the count of values at its threshold.
func (r *run) mergeBlockFused(w *worker, b block, equal []int) error {
	r.traced(b.job, "fused")
	p := r.p
	j := &p.Jobs[b.job]
	n, sz := int(b.n), j.OutDT.Size()
	fb := &w.fused
	fb.Dst, fb.OutDT, fb.DT = w.outb[:n*sz], j.OutDT, j.BaseDT
	fb.Base = r.src(w, j.Base, j.BaseDT, b.start, b.n)
	for i, t := range j.Models {
		fb.Models[i] = r.src(w, t, j.BaseDT, b.start, b.n)
	}
	fb.Vote, fb.Lambda, fb.Equal, fb.Zero = &r.votes[b.job], j.Params.Lambda, equal, nil
	if p.Method.GlobalMajority {
		fb.Zero = w.idx[:n]
	}
	st := r.k.Ties(fb)
	w.votes.Add(st)
	if p.Method.Sparsifies() {
		for i, k := range fb.Kept {
			w.kept[j.slot(i)] += uint64(k)
		}
	}
	if p.Method.GlobalMajority && st.ZeroSum > 0 {
		// Their task vectors, read in place and negated.
		zs := w.idx[:st.ZeroSum]
		nm, m := len(j.Models), len(zs)
		neg, base := w.zneg[:nm*m], w.scratch[r.stride:r.stride+m]
		kernels.ColumnDeltas(base, neg, fb.Base, fb.Models[:nm], j.BaseDT, zs, fb.Thr[:nm])
		for c := range neg {
			neg[c] = -neg[c]
		}
		if err := r.recordNegated(w, b.job, zs, func(e int) int64 { return b.start + int64(e) }, neg, base, fb.Vote, j.Params.Lambda); err != nil {
			return err
		}
	}
	return r.write(b, fb.Dst)
}

// deltas fills w.taus with the untrimmed task vectors of the models selected
// (nil: every model of the block's job).
func (r *run) deltas(w *worker, b block, models []int) []float32 {
	j := &r.p.Jobs[b.job]
	B := r.stride
	base := r.widenBase(w, b)
	delta := func(i int) {
		t, dt := j.Models[i], j.ModelDT[i]
		r.k.DeltaTrim(w.taus[i*B:i*B+int(b.n)], r.src(w, t, dt, b.start, b.n), dt, base, 0)
	}
	if models == nil {
		for i := range j.Models {
			delta(i)
		}
		return base
	}
	for _, i := range models {
		delta(i)
	}
	return base
}

// voteAndFinish runs the vote over the block's task vectors and writes it.
func (r *run) voteAndFinish(w *worker, b block, base []float32) error {
	j := &r.p.Jobs[b.job]
	n := int(b.n)
	vp := &r.votes[b.job]
	st := r.k.Vote(w.tm[:n], w.taus, r.stride, vp)
	w.votes.Add(st)
	if r.p.Method.GlobalMajority && st.ZeroSum > 0 {
		if err := r.recordZeroSums(w, b.job, n, func(e int) int64 { return b.start + int64(e) }, vp, j.Params.Lambda); err != nil {
			return err
		}
	}
	return r.finish(w, b, base, w.tm[:n], j.Params.Lambda)
}

// widenBase fills the worker's base scratch for block b (zeros for methods
// without a base) and releases the base's pages.
func (r *run) widenBase(w *worker, b block) []float32 {
	j := &r.p.Jobs[b.job]
	base := w.base[:b.n]
	if r.p.Method.NoBase {
		clear(base)
		return base
	}
	r.k.Widen(base, r.src(w, j.Base, j.BaseDT, b.start, b.n), j.BaseDT)
	return base
}

// finish rounds θ₀ + λ·τₘ of a block to the output and writes it.
func (r *run) finish(w *worker, b block, base, tm []float32, lambda float32) error {
	j := &r.p.Jobs[b.job]
	sz := j.OutDT.Size()
	out := w.outb[:int(b.n)*sz]
	r.k.Finish(out, j.OutDT, base, tm, lambda)
	return r.write(b, out)
}

// write writes a block's output.
func (r *run) write(b block, out []byte) error {
	j := &r.p.Jobs[b.job]
	if err := r.out.WriteTensor(j.Name, b.start*int64(j.OutDT.Size()), out); err != nil {
		return fmt.Errorf("tensor %q: %w", j.Name, err)
	}
	r.prog.Add(r.readBytes(j, b.n))
	return nil
}
