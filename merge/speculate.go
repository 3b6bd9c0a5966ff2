package merge

import (
	"context"

	"github.com/tiesmm/tiesmm/kernels"
)

// A per-tensor trim in one pass over the tensor, when its sample puts every
// trimmed model's threshold on one value v (a tie group: the usual case for
// bf16 task vectors, whose |τ| take few distinct values).
//
// Every |τ| above v is kept and every one below trimmed; of the ties at v the
// exact-k rule keeps the lowest flat indices, as many as k minus the count
// above v, a count known only once the whole tensor has been read. So the
// sample also estimates where the kept ties end (the cut, rounded to a block
// boundary), and the merge keeps every tie before the estimated cut and none
// after it while counting, per block, the values kept and the ties. Then the
// true cut is known: the few blocks between it and the estimate are merged
// again, their first results replaced in the file and in the counts. If the
// counts show that v is not the threshold (the sample missed), the radix
// select runs and the tensor is merged again.
//
// The select's own pass over the tensor (sampled.go) is the one this saves.

// blockRecords are what the fused kernel counted in each block of a
// speculative merge, to be taken back if the block is merged again.
type blockRecords struct {
	votes       []kernels.VoteStats
	kept, equal blockCounts // per model: values kept, values at the threshold
}

// speculate is a per-tensor trim whose sample is read first
// (PathSpeculate): if it puts every threshold on a tie group, the tensor is
// merged in one pass; else the sampled select follows with that sample.
type speculate struct {
	perTensor
	sampled *sampledSelect
}

func (s *speculate) merge(ctx context.Context, r *run, jobs []int) error {
	return eachJob(jobs, func(ji int) error {
		return r.selectAndMerge(ctx, ji, func() (bool, error) {
			sc, done, err := s.onePass(ctx, r, ji)
			if err != nil || done {
				return done, err
			}
			return false, r.selectTensor(ctx, ji, s.sampled, sc)
		})
	})
}

// onePass merges tensor ji in one pass if its sample allows (done);
// otherwise it returns the sample, if it read one, for the select to use.
func (s *speculate) onePass(ctx context.Context, r *run, ji int) (_ *scope, done bool, _ error) {
	r.traced(ji, "speculate")
	j := &r.p.Jobs[ji]
	sc, err := r.sampleTensor(ctx, ji, j.Need)
	if err != nil || len(sc.models) == 0 {
		return nil, false, err
	}
	for _, i := range sc.models {
		if sc.bands[i].lo != sc.bands[i].hi {
			return sc, false, nil
		}
	}
	for _, i := range sc.models {
		r.ws[0].hists[i].Reset() // the others were emptied by Take
	}
	bs := r.blocks([]int{ji})
	nm := len(j.Models)
	cut := make([]int, nm) // per model: the first block none of whose ties are kept
	for i := range cut {
		cut[i] = len(bs)
	}
	if r.p.Method.Ties == ExactK {
		if err := s.estimateCuts(ctx, r, sc, cut); err != nil {
			return nil, false, err
		}
	}

	recs := blockRecords{votes: make([]kernels.VoteStats, len(bs)), kept: newBlockCounts(len(bs), nm), equal: newBlockCounts(len(bs), nm)}
	r.hot = r.shared // read once: release behind (a solo tensor: once done)
	if err := r.parallel(ctx, bs, func(w *worker, b block) error {
		// The ties are counted where some model keeps them; past every
		// model's cut the cheaper kernel without the count runs.
		var equal []int
		for i := range j.Models {
			bits := r.trims[ji][i].bits // untrimmed: 0, keep all
			if sc.trims[i] {
				bits = sc.bands[i].lo
				if b.index >= cut[i] {
					bits++ // no ties
				} else {
					equal = w.equal
				}
			}
			w.fused.Thr[i] = bits
		}
		before := w.votes
		if err := r.mergeBlockFused(w, b, equal); err != nil {
			return err
		}
		recs.votes[b.index] = subVotes(w.votes, before)
		kept, eq := recs.kept.at(b.index), recs.equal.at(b.index)
		for i := range nm {
			kept[i] = int64(w.fused.Kept[i])
			if equal != nil && b.index < cut[i] {
				eq[i] = int64(equal[i])
			}
		}
		return nil
	}); err != nil {
		return nil, false, err
	}

	again, ok, err := s.settleCuts(ctx, r, sc, bs, cut, recs)
	if err != nil {
		return nil, false, err
	}
	if !ok {
		// The sample missed: select exactly, merge everything again.
		r.sampleMissed()
		s.takeBack(r, recs, bs)
		th, _, err := r.radixPick(ctx, bs, sc.models, j.Need, false)
		if err == nil {
			err = r.splitTies(ctx, r.trims, bs, sc.models, th, j.Need, blockCounts{})
		}
		if err == nil {
			err = r.uncounted(func() error { return r.parallel(ctx, bs, r.mergeBlock) })
		}
		return nil, true, err
	}
	r.onePass++
	r.traced(ji, "one-pass")
	s.takeBack(r, recs, again)
	for _, b := range again {
		r.remerged += b.n
	}
	return nil, true, r.uncounted(func() error { return r.parallel(ctx, again, r.mergeBlock) })
}

// uncounted runs a pass that merges blocks again without reporting their
// bytes as progress: the first merge of them did.
func (r *run) uncounted(pass func() error) error {
	prog := r.prog
	r.prog = noProgress{}
	defer func() { r.prog = prog }()
	return pass()
}

// estimateCuts sets cut[i], for each model trimmed, to the block boundary
// nearest the position where the sample says the kept ties end: counting
// the sample's values above the threshold and its ties run by run, the
// position where the ties seen so far reach k minus the estimated count
// above, with each run standing for its share of the tensor.
func (s *speculate) estimateCuts(ctx context.Context, r *run, sc *scope, cut []int) error {
	ji := sc.jobs[0]
	counts, err := s.countAtBands(ctx, r, sc, sc.sample, sc.models)
	if err != nil {
		return err
	}
	scale := float64(sc.total) / float64(sc.sampleSize)
	B := int64(r.blockSize(ji))
	blocks := (sc.total + B - 1) / B
	for _, i := range sc.models {
		var above float64
		for s := range sc.sample {
			above += float64(counts.at(s)[2*i])
		}
		want := float64(sc.need[i]) - above*scale // ties to keep
		pos := float64(sc.total)
		var seen float64
		for s, b := range sc.sample {
			t := float64(counts.at(s)[2*i+1]) * scale
			if t > 0 && seen+t >= want {
				share := float64(b.n) * scale // the elements this run stands for
				pos = float64(b.start) + float64(b.n)/2 - share/2 + share*(want-seen)/t
				break
			}
			seen += t
		}
		cut[i] = int(min(blocks, int64(max(0, pos/float64(B)+0.5))))
	}
	return nil
}

// settleCuts works out each model's exact ties per block from the counts of
// the speculative merge, sets the tensor's trims, and returns the blocks
// whose kept ties differ from what was merged; ok is false if some model's
// threshold is not its band's value after all.
func (s *speculate) settleCuts(ctx context.Context, r *run, sc *scope, bs []block, cut []int, recs blockRecords) (again []block, ok bool, _ error) {
	ji := sc.jobs[0]
	nm := len(r.p.Jobs[ji].Models)
	redo := make([]bool, len(bs))
	ties := make([][]int64, nm)
	left := make([]int64, nm) // ties still to keep past the estimated cut
	var forward []int         // models whose kept ties reach past it
	for _, i := range sc.models {
		var above, before int64
		for b := range bs {
			above += recs.kept.at(b)[i]
			if b < cut[i] {
				above -= recs.equal.at(b)[i]
				before += recs.equal.at(b)[i]
			}
		}
		need := int64(sc.need[i])
		if above >= need {
			return nil, false, nil // the threshold is above v
		}
		r.trims[ji][i] = trim{bits: sc.bands[i].lo}
		if r.p.Method.Ties == KeepTies {
			if need > above+before { // cut is len(bs): before counts every tie
				return nil, false, nil
			}
			continue
		}
		ties[i] = make([]int64, len(bs))
		l := need - above
		for b := range cut[i] { // kept, unless the cut is earlier
			c := recs.equal.at(b)[i]
			if c <= l {
				ties[i][b], l = -1, l-c
			} else {
				ties[i][b], l = l, 0
				redo[b] = true
			}
		}
		if l > 0 {
			left[i] = l
			forward = append(forward, i)
		}
		r.trims[ji][i].ties = ties[i]
	}
	// Past the estimated cut the merge kept no ties, and counted none: count
	// them, a window of blocks at a time, until each model has its k.
	from := len(bs)
	for _, i := range forward {
		from = min(from, cut[i])
	}
	for window := 4 * len(r.ws); len(forward) > 0; window *= 2 {
		if from >= len(bs) {
			return nil, false, nil // fewer ties than the tensor needs: v is above the threshold
		}
		to := min(len(bs), from+window)
		counts, err := s.countAtBands(ctx, r, sc, bs[from:to], forward)
		if err != nil {
			return nil, false, err
		}
		still := forward[:0]
		for _, i := range forward {
			for b := max(from, cut[i]); b < to && left[i] > 0; b++ {
				c := counts.at(b - from)[2*i+1]
				if c <= left[i] {
					ties[i][b], left[i] = -1, left[i]-c
					redo[b] = redo[b] || c > 0
				} else {
					ties[i][b], left[i] = left[i], 0
					redo[b] = true
				}
			}
			if left[i] > 0 {
				still = append(still, i)
			}
		}
		forward, from = still, to
	}
	for b, re := range redo {
		if re {
			again = append(again, bs[b])
		}
	}
	for k := range again {
		again[k].seq = k
	}
	return again, true, nil
}

// countAtBands counts, per block of bs (by position: the blocks' seqs are
// consecutive) and per model given, the |τ| above the model's one-value band
// and at it: counts.at(k)[2*i] and counts.at(k)[2*i+1].
func (s *speculate) countAtBands(ctx context.Context, r *run, sc *scope, bs []block, models []int) (blockCounts, error) {
	j := &r.p.Jobs[sc.jobs[0]]
	counts := newBlockCounts(len(bs), 2*len(j.Models))
	err := r.parallel(ctx, bs, func(w *worker, b block) error {
		base := r.widenBase(w, b)
		c := counts.at(b.seq - bs[0].seq)
		for _, i := range models {
			dt, v := j.ModelDT[i], sc.bands[i].lo
			above, at := r.k.DeltaRange(r.src(w, j.Models[i], dt, b.start, b.n), dt, base, v, v, nil)
			c[2*i], c[2*i+1] = int64(above), int64(at)
		}
		return nil
	})
	return counts, err
}

// takeBack removes from the run's counts what the speculative merge counted
// in blocks bs, which are merged again.
func (*speculate) takeBack(r *run, recs blockRecords, bs []block) {
	w := r.ws[0]
	for _, b := range bs {
		w.votes = subVotes(w.votes, recs.votes[b.index])
		for i, k := range recs.kept.at(b.index) {
			w.kept[r.p.Jobs[b.job].slot(i)] -= uint64(k)
		}
	}
}

func subVotes(a, b kernels.VoteStats) kernels.VoteStats {
	return kernels.VoteStats{Positive: a.Positive - b.Positive, Negative: a.Negative - b.Negative,
		ZeroSum: a.ZeroSum - b.ZeroSum, Conflicts: a.Conflicts - b.Conflicts}
}
