package merge

import (
	"context"
	"slices"

	"github.com/tiesmm/tiesmm/kernels"
	topk "github.com/tiesmm/tiesmm/select"
)

// A per-tensor trim merged in one pass, where the sample allows.
//
// The per-tensor select reads a tensor to count, then the merge reads it
// again. Where the sample puts every model's threshold on a single value
// (a tie group: common in bf16 task vectors), the merge can run first with
// that threshold, every tie kept, while the fused kernel counts per block
// the values at and above it: the counts the select pass would have taken.
// Under the exact-k rule the ties kept are the lowest-indexed ones, so only
// the blocks from the first one that keeps fewer than all its ties on are
// merged again, with their budgets; it is tried only where the sample says
// most ties are kept (specMinKeep). If the counts show the sample missed, the tensor is selected and
// merged as usual (the radix select).

// specMinKeep is the least share of its tie group, as the sample estimates
// it, that each model must keep for the one-pass merge to be tried: the
// blocks past the ties kept (about 1 − specMinKeep of the tensor) are merged
// again, which costs more than the select pass it saves once they pass a
// quarter or so.
const specMinKeep = 0.75

// specBlock is what the one-pass merge of a block counted, per model.
type specBlock struct {
	vote        kernels.VoteStats
	kept, equal []int
}

// speculate merges tensor ji in one pass where the method and the sample
// allow; done reports whether it did. Otherwise sampled is the tensor's
// sample, if one was taken, for the select to use.
func (r *run) speculate(ctx context.Context, ji int) (done bool, sampled *scope, _ error) {
	p, j := r.p, &r.p.Jobs[ji]
	m := p.Method
	if m.NoBase || m.Drop != DropNone || m.Rescale == RescaleL1 || m.ApproxTopK || j.Elements < p.tensorSampled {
		return false, nil, nil
	}
	for i, dt := range j.ModelDT {
		if dt != j.BaseDT || j.NeedTop != nil && j.NeedTop[i] > 0 {
			return false, nil, nil
		}
	}
	sc := r.newScope([]int{ji}, j.Need)
	if len(sc.models) == 0 {
		return false, nil, nil
	}
	if err := r.sampleTensor(ctx, sc); err != nil {
		return false, nil, err
	}
	for _, i := range sc.models {
		b := sc.bands[i]
		if b.lo != b.hi || m.Ties == ExactK && b.keep < specMinKeep {
			return false, sc, nil
		}
	}
	for _, i := range sc.models {
		r.trims[ji][i] = trim{bits: sc.bands[i].lo}
	}
	bs := r.blocks([]int{ji})
	if !r.fusedThresholds(r.ws[0], bs[0]) {
		return false, sc, nil
	}
	spec := make([]specBlock, len(bs))
	nm := len(j.Models)
	err := r.parallel(ctx, bs, func(w *worker, b block) error {
		r.fusedThresholds(w, b)
		st, err := r.mergeBlockFused(w, b, w.equal[:nm])
		spec[b.seq] = specBlock{vote: st, kept: slices.Clone(w.fused.Kept[:nm]), equal: slices.Clone(w.equal[:nm])}
		return err
	})
	if err != nil {
		return false, nil, err
	}
	th := make([]topk.Threshold, nm)
	ties := make([][]int64, len(bs))
	for k := range bs {
		ties[k] = make([]int64, nm)
		for _, i := range sc.models {
			eq := int64(spec[k].equal[i])
			ties[k][i] = eq
			th[i].Greater += uint64(int64(spec[k].kept[i]) - eq)
			th[i].Equal += uint64(eq)
		}
	}
	for _, i := range sc.models {
		th[i].Bits = sc.bands[i].lo
		if !(th[i].Greater < sc.need[i] && sc.need[i] <= th[i].Greater+th[i].Equal) {
			r.unmerge(spec)
			sc.missed = true
			return false, sc, nil
		}
	}
	if err := r.splitTies(ctx, r.trims, bs, sc.models, th, sc.need, ties); err != nil {
		return false, nil, err
	}
	var again []block
	for _, b := range bs {
		for _, i := range sc.models {
			if t := r.trims[ji][i].ties; t != nil && t[b.index] >= 0 {
				again = append(again, b)
				r.unmerge(spec[b.seq : b.seq+1])
				break
			}
		}
	}
	r.remerged += len(again)
	r.onePass++
	if len(again) == 0 {
		return true, nil, nil
	}
	prog := r.prog
	r.prog = noProgress{} // these bytes were counted once
	defer func() { r.prog = prog }()
	return true, nil, r.parallel(ctx, again, r.mergeBlock)
}

// unmerge takes the counts of blocks merged again (or not kept) back out of
// the summary's.
func (r *run) unmerge(spec []specBlock) {
	w := r.ws[0]
	for _, s := range spec {
		v := s.vote
		w.votes.Add(kernels.VoteStats{Positive: -v.Positive, Negative: -v.Negative, ZeroSum: -v.ZeroSum, Conflicts: -v.Conflicts})
		if r.p.Method.Sparsifies() {
			for i, k := range s.kept {
				w.kept[i] -= uint64(k)
			}
		}
	}
}
