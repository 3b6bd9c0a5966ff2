package merge

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/tiesmm/tiesmm/kernels"
	topk "github.com/tiesmm/tiesmm/select"
)

// The paper preset's exact whole-model trim in one pass over the inputs.
// (Per-tensor trims need no such thing: a tensor's histogram passes read it
// hot from the page cache, right after its first read.)
//
// A sample spread over the model gives, per model, a band of
// magnitudes [lo, hi] that holds the k-th largest |τ| with near certainty.
// The merge pass then decides every element whose values all lie outside
// their model's band (kept above it, trimmed below it), counts exactly how
// many lie above and inside, and spills the few positions where some value
// lies inside to a file: the position, the base value and every raw τ. Once
// the pass is over, the exact threshold is the (k − above)-th largest band
// value, and the spilled positions are settled with it, so the result is
// bit-identical to the two-pass radix select. If the sample was wrong (the
// counts show the threshold outside the band) the merge falls back to the
// two passes and says so.

// band is one model's uncertain range of magnitude patterns, inclusive,
// with the counts of the sample's values in it and at its edges.
type band struct {
	lo, hi       uint32
	pop, atEdges uint64
}

// Sampling: one run of sampleChunk elements in every sampleEvery, but at
// least sampleMinElems per model (a narrower band, so a smaller spill). With
// bf16 inputs a first sample of firstSampleElems is tried (Plan.firstSample),
// and if it leaves a band wide, a second of at least twice its size.
const (
	sampleEvery      = 50
	sampleChunk      = 4096
	sampleMinElems   = 1 << 22
	firstSampleElems = 1 << 20
)

// bandSigmas is the band's half-width around the threshold's expected rank in
// a sample, in standard deviations of a binomial count. The sample's runs are
// contiguous, so the real spread is wider than the binomial's
// (docs/performance.md, tuning).
const bandSigmas = 8

// A tensor's band starts narrower: a miss costs that one tensor a radix
// select and a second merge, not the whole model a second pass, and a
// narrower band puts more tensors' thresholds on one tie group (merged in
// one pass, speculate.go) and fewer values inside the others. Each miss
// doubles the width for the tensors after it, up to bandSigmas twice over,
// so a model whose rows differ more than the binomial allows soon stops
// missing.
const (
	tensorBandSigmas    = 4
	maxTensorBandSigmas = 2 * bandSigmas
)

// singlePass reports whether the plan's trim is a whole-model one that can
// be done in one pass: every tie at the threshold kept (the paper's rule),
// no second cut (breadcrumbs), no L1 rescale (which needs the trim first),
// not the approximate mode.
func (p *Plan) singlePass() bool {
	m := p.Method
	return m.Trim && m.Scope == ScopeModel && m.Ties == KeepTies && !m.Outliers && !m.ApproxTopK &&
		!p.Opts.TwoPass && m.Rescale != RescaleL1 && p.trims()
}

// scope is the set of elements one threshold per model is chosen over: the
// jobs merged.
type scope struct {
	jobs      []int
	every     int   // sample one run in every
	sampleMin int64 // sample at least this many elements (all if fewer)
	// firstSample: try a sample of about this many elements first (0: no).
	firstSample int64
	total       int64    // elements per model
	need        []uint64 // elements kept per model (more than total: no trim)
	models      []int    // the models trimmed
	bands       []band
	trims       []bool  // per model: trimmed at all
	sample      []block // the sample the bands come from
	sampleSize  int64   // its elements per model
	sigmas      float64 // the bands' half-width, in standard deviations (bandSigmas)
}

func (r *run) newScope(jobs []int, need []uint64) *scope {
	sc := &scope{jobs: jobs, sigmas: bandSigmas, every: r.p.sampleEvery, sampleMin: r.p.sampleMin, firstSample: r.p.firstSample, need: need, bands: make([]band, len(r.p.Models)), trims: make([]bool, len(r.p.Models))}
	for _, ji := range jobs {
		sc.total += r.p.Jobs[ji].Elements
	}
	for i, k := range need {
		if k > 0 && k <= uint64(sc.total) {
			sc.models = append(sc.models, i)
			sc.trims[i] = true
		}
	}
	return sc
}

// sampleBlocks picks runs of sampleChunk elements, one every `every` runs of
// the scope's flat element order, so every element has the same chance to be
// read and every tensor is represented in proportion: the estimate is not
// thrown off by tensors of very different scales.
func (r *run) sampleBlocks(sc *scope, every int64) []block {
	p := r.p
	if every <= 1 {
		return r.blocks(sc.jobs)
	}
	step := every * p.sampleChunk
	// Walked twice: to count the runs' pieces, then to list them in a
	// slice of that size.
	walk := func(emit func(b block)) {
		var flat int64 // flat index of the job's first element
		next := step / 2
		for _, ji := range sc.jobs {
			e, B := p.Jobs[ji].Elements, int64(r.blockSize(ji))
			for next < flat+e {
				start := next - flat
				n := min(p.sampleChunk, e-start)
				for n > 0 { // a run never crosses a block of the job
					m := min(n, B-start%B)
					emit(block{job: ji, index: int(start / B), start: start, n: m})
					start, n = start+m, n-m
				}
				next += step
			}
			flat += e
		}
	}
	count := 0
	walk(func(block) { count++ })
	if count == 0 {
		return r.blocks(sc.jobs)
	}
	bs := make([]block, 0, count)
	walk(func(b block) {
		b.seq = len(bs)
		bs = append(bs, b)
	})
	return bs
}

// sampleBands reads a sample of the scope and sets each trimmed model's
// band; it returns the sample's size. A first, smaller sample is kept if it
// puts every band on one value.
func (r *run) sampleBands(ctx context.Context, sc *scope) (int64, error) {
	every := min(int64(sc.every), sc.total/max(1, sc.sampleMin))
	if first := sc.total / max(1, sc.firstSample); sc.firstSample > 0 && first >= 2*every {
		size, err := r.sampleBandsFrom(ctx, sc, r.sampleBlocks(sc, first))
		if err != nil {
			return 0, err
		}
		single := true
		for _, i := range sc.models {
			single = single && sc.bands[i].lo == sc.bands[i].hi
		}
		if single {
			return size, nil
		}
		// The first sample missed one value, mostly by a little: a sample
		// of twice its size, not sampleMin, is then enough.
		every = min(int64(sc.every), sc.total/(2*sc.firstSample))
		more, err := r.sampleBandsFrom(ctx, sc, r.sampleBlocks(sc, every))
		return size + more, err
	}
	return r.sampleBandsFrom(ctx, sc, r.sampleBlocks(sc, every))
}

func (r *run) sampleBandsFrom(ctx context.Context, sc *scope, sample []block) (int64, error) {
	sc.sample = sample
	var size int64
	for _, b := range sample {
		size += b.n
	}
	sc.sampleSize = size
	for _, i := range sc.models {
		sc.bands[i].pop, sc.bands[i].atEdges = 0, 0
	}
	high, err := r.histPass(ctx, sample, sc.models, nil, histHighSide)
	if err != nil {
		return 0, err
	}
	sides := r.sides(sc.models)
	// Ranks in the sample, from the top, that bracket the threshold: its
	// expected rank ± bandSigmas standard deviations of a binomial count,
	// plus a little for the runs being contiguous.
	nm := len(r.p.Models)
	type edge struct {
		rank  uint64
		hi    uint32
		high  uint64
		count uint64 // values in bin hi
	}
	edges := make([][2]edge, nm)
	for _, i := range sc.models {
		q := float64(sc.need[i]) / float64(sc.total)
		r0 := q * float64(size)
		d := sc.sigmas*math.Sqrt(float64(size)*q*(1-q)) + 0.0002*float64(size) + 64
		if size == sc.total {
			d = 0 // the whole scope was read: the band is the threshold itself
		}
		top, bot := uint64(max(1, r0-d)), uint64(max(1, min(float64(size), r0+d)))
		for s, rank := range []uint64{top, bot} {
			bin, above, err := high[i].Pick(rank)
			if err != nil {
				return 0, err
			}
			edges[i][s] = edge{rank: rank, hi: bin, high: above, count: high[i].Count(bin)}
		}
	}
	same := true // both edges in one high bin for every model: one low pass
	for _, i := range sc.models {
		same = same && edges[i][0].hi == edges[i][1].hi
	}
	var low []*topk.Hist
	for s := range 2 {
		his := make([]uint32, nm)
		for _, i := range sc.models {
			his[i] = edges[i][s].hi
		}
		switch {
		case s == 1 && same:
		case sides != nil:
			low = make([]*topk.Hist, nm)
			for _, i := range sc.models {
				low[i] = &r.ws[0].hists[i]
				low[i].LowFrom(his[i], edges[i][s].count, sides[i])
			}
		default:
			var err error
			if low, err = r.histPass(ctx, sample, sc.models, his, histLow); err != nil {
				return 0, err
			}
		}
		for _, i := range sc.models {
			e := edges[i][s]
			th, err := topk.Exact(e.rank, e.hi, e.high, low[i])
			if err != nil {
				return 0, err
			}
			if s == 0 {
				sc.bands[i].hi = th.Bits
				sc.bands[i].pop -= th.Greater
				sc.bands[i].atEdges = th.Equal
			} else {
				sc.bands[i].lo = th.Bits
				sc.bands[i].pop += th.Greater + th.Equal
				if sc.bands[i].lo != sc.bands[i].hi {
					sc.bands[i].atEdges += th.Equal
				}
			}
		}
	}
	return size, nil
}

// sides gathers the workers' lists of the last histHighSide pass, per
// model; nil if one overflowed (the low histograms then take passes).
func (r *run) sides(models []int) [][]uint32 {
	all := make([][]uint32, len(r.p.Models))
	for _, w := range r.ws {
		if w.sideFull {
			return nil
		}
	}
	for _, i := range models {
		n := 0
		for _, w := range r.ws {
			n += len(w.side[i])
		}
		all[i] = make([]uint32, 0, n) // the exact size: the plan counts one copy
		for _, w := range r.ws {
			all[i] = append(all[i], w.side[i]...)
		}
	}
	return all
}

// spill holds the positions a pass could not decide. Each worker fills a
// buffer block by block and appends it to the file under the lock, so the
// records of one block stay together and in order.
type spill struct {
	mu    sync.Mutex
	f     *os.File
	w     *bufio.Writer
	count int64
	rec   int // bytes per record: job, element, base value, one τ per model
	chunk int // bytes per read when streaming back
}

func newSpill(dir string, models int) (*spill, error) { return newRecordFile(dir, 4+8+4+4*models) }

// newRecordFile makes a file of fixed-size records that start with a job
// (uint32) and an element (uint64).
func newRecordFile(dir string, rec int) (*spill, error) {
	f, err := os.CreateTemp(dir, ".tiesmm-spill-*")
	if err != nil {
		return nil, fmt.Errorf("spill file: %w", err)
	}
	return &spill{f: f, w: bufio.NewWriterSize(f, recordBuffer), rec: rec, chunk: spillChunk}, nil
}

func (s *spill) append(buf []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count += int64(len(buf) / s.rec)
	_, err := s.w.Write(buf)
	return err
}

func (s *spill) close() {
	s.f.Close()
	os.Remove(s.f.Name())
}

// each streams the records back a block at a time (a block's records are
// contiguous, in element order: workers append whole blocks); block tells a
// record's job and block. fn may keep recs: each read gets a fresh buffer.
func (s *spill) each(block func(rec []byte) [2]int64, fn func(recs []byte) error) error {
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("spill file: %w", err)
	}
	var carry []byte // the records of a block the last read cut
	chunk := max(1, s.chunk/s.rec) * s.rec
	for off, size := int64(0), s.count*int64(s.rec); off < size || len(carry) > 0; {
		n := int(min(int64(chunk), size-off))
		buf := make([]byte, len(carry)+n)
		copy(buf, carry)
		if _, err := s.f.ReadAt(buf[len(carry):], off); err != nil {
			return fmt.Errorf("spill file: %w", err)
		}
		off += int64(n)
		carry = nil
		for len(buf) > 0 {
			first := block(buf)
			end := s.rec
			for end < len(buf) && block(buf[end:]) == first {
				end += s.rec
			}
			if end == len(buf) && off < size {
				carry = buf // the block may go on in the next read
				break
			}
			if err := fn(buf[:end:end]); err != nil {
				return err
			}
			buf = buf[end:]
		}
	}
	return nil
}

// spillChunk is how much of a record file one read takes; recordBuffer is
// a record file's write buffer, and recordFlush how many bytes of records a
// worker gathers before it appends them to a file.
const (
	spillChunk   = 1 << 20
	recordBuffer = 1 << 20
	recordFlush  = 1 << 20
)

// eachParallel runs fn over the records of every block, as each does, with
// the blocks spread over the workers; blocks are disjoint, so are their
// writes.
func (r *run) eachParallel(ctx context.Context, s *spill, fn func(w *worker, recs []byte) error) error {
	groups := make(chan []byte, len(r.ws)) // a read each queued, each in work: the plan counts them
	errs := make([]error, len(r.ws)+1)
	var failed atomic.Bool
	var wg sync.WaitGroup
	for k, w := range r.ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for recs := range groups {
				if failed.Load() {
					continue // drain, so the reader never blocks
				}
				if err := fn(w, recs); err != nil {
					errs[k] = err
					failed.Store(true)
				}
			}
		}()
	}
	errs[len(r.ws)] = s.each(r.recordBlock, func(recs []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if failed.Load() {
			return errStopped
		}
		groups <- recs
		return nil
	})
	close(groups)
	wg.Wait()
	if errors.Is(errs[len(r.ws)], errStopped) {
		errs[len(r.ws)] = nil // a worker's error says why
	}
	return errors.Join(errs...)
}

var errStopped = errors.New("stopped")

// reset empties the spill for the next scope.
func (s *spill) reset() error { return s.truncate(0) }

// truncate keeps the first n records, dropping what is still buffered.
func (s *spill) truncate(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count = n
	s.w.Reset(s.f)
	if err := s.f.Truncate(n * int64(s.rec)); err != nil {
		return fmt.Errorf("spill file: %w", err)
	}
	_, err := s.f.Seek(n*int64(s.rec), io.SeekStart)
	return err
}

// bandState is what the single pass counts, per worker.
type bandState struct {
	above, inside []uint64 // per model: values above the band, and spilled in it
	atHi          []uint64 // per model: values at a wide band's upper edge (kept, not spilled)
	mark          []bool   // positions of the block with some value in a band
	pos           []int32  // the same positions, listed
	buf           []byte   // this worker's spill records not yet appended
}

// mergeBlockBand merges one block deciding every position it can; the
// others are spilled and merged as if all their values were zero.
func (r *run) mergeBlockBand(w *worker, b block) error {
	if r.fusedBands(w, b) {
		// Every band is one value: nothing to spill, and the fused kernel
		// counts the values at it.
		err := r.mergeBlockFused(w, b, w.equal)
		for _, i := range r.scope.models {
			at := uint64(w.equal[i])
			w.band.inside[i] += at
			w.band.above[i] += uint64(w.fused.Kept[i]) - at
		}
		return err
	}
	j := &r.p.Jobs[b.job]
	sc := r.scope
	n, nm := int(b.n), len(j.Models)
	base := r.widenBase(w, b)
	bs := w.band
	mark := bs.mark[:n]
	ge := make([]int, nm)
	for i := range nm {
		tau := w.taus[i*r.stride : i*r.stride+n]
		t, dt := j.Models[i], j.ModelDT[i]
		// Below the band is trimmed for sure: the kernel does that.
		ge[i] = r.k.DeltaTrim(tau, r.src(w, t, dt, b.start, b.n), dt, base, sc.bands[i].lo)
	}
	bs.pos = bs.pos[:0]
	for _, i := range sc.models {
		// Values below lo are zero by now, so with lo > 0 no zero is in
		// the band; with lo = 0 zeros are (the threshold may be zero).
		lo, hi := sc.bands[i].lo, sc.bands[i].hi
		tau := w.taus[i*r.stride : i*r.stride+n]
		if lo == hi {
			// A band of one value: the threshold is that value or the
			// sample missed (settle checks), so every position is decided;
			// only the values at it need counting.
			at := uint64(r.k.Range(tau, lo, lo, nil))
			bs.inside[i] += at
			bs.above[i] += uint64(ge[i]) - at
			continue
		}
		// Every tie at the threshold is kept, and the threshold is at most
		// hi: the values at hi are kept whatever it is, so only [lo, hi)
		// is undecided (a bf16 band's edges hold big tie groups).
		atHi := r.k.Range(tau, hi, hi, nil)
		in := w.idx[:r.k.Range(tau, lo, hi-1, w.idx)]
		for _, e := range in {
			if !mark[e] {
				mark[e] = true
				bs.pos = append(bs.pos, e)
			}
		}
		bs.inside[i] += uint64(len(in))
		bs.atHi[i] += uint64(atHi)
		bs.above[i] += uint64(ge[i] - len(in) - atHi)
	}
	// Spill the undecided positions, then merge them as zeros for now.
	slices.Sort(bs.pos)
	for _, e := range bs.pos {
		mark[e] = false
		var rec [16]byte
		binary.LittleEndian.PutUint32(rec[0:], uint32(b.job))
		binary.LittleEndian.PutUint64(rec[4:], uint64(b.start)+uint64(e))
		binary.LittleEndian.PutUint32(rec[12:], math.Float32bits(base[e]))
		bs.buf = append(bs.buf, rec[:]...)
		for i := range nm {
			v := &w.taus[i*r.stride+int(e)]
			bs.buf = binary.LittleEndian.AppendUint32(bs.buf, math.Float32bits(*v))
			if kernels.AbsBits(*v) >= sc.bands[i].lo {
				ge[i]--
			}
			*v = 0
		}
	}
	if len(bs.buf) >= recordFlush {
		if err := r.spill.append(bs.buf); err != nil {
			return err
		}
		bs.buf = bs.buf[:0]
	}
	for i := range nm {
		w.kept[i] += uint64(ge[i])
	}
	return r.voteAndFinish(w, b, base)
}

// fusedBands reports whether block b can be merged by the fused kernel in
// the single pass (its strategy allows it, and every band is one value) and
// sets the kernel's thresholds to the bands.
func (r *run) fusedBands(w *worker, b block) bool {
	if !r.strategy[b.job].Fused {
		return false
	}
	for i, bd := range r.scope.bands {
		if bd.lo != bd.hi {
			return false
		}
		w.fused.Thr[i] = bd.lo
	}
	return true
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

// settle finds the exact thresholds from the counts and the spilled band
// values, then merges the spilled positions with them. It reports false when
// the sample's bands missed a threshold.
func (r *run) settle(ctx context.Context) (bool, error) {
	p, sc := r.p, r.scope
	nm := len(p.Models)
	above, inside, atHi := make([]uint64, nm), make([]uint64, nm), make([]uint64, nm)
	for _, w := range r.ws {
		if err := r.spill.append(w.band.buf); err != nil {
			return false, err
		}
		w.band.buf = w.band.buf[:0]
		for i := range nm {
			above[i] += w.band.above[i]
			inside[i] += w.band.inside[i]
			atHi[i] += w.band.atHi[i]
			w.band.above[i], w.band.inside[i], w.band.atHi[i] = 0, 0, 0
		}
	}
	for _, i := range sc.models {
		if !(above[i] < sc.need[i] && sc.need[i] <= above[i]+atHi[i]+inside[i]) {
			return false, nil
		}
	}
	// A one-value band that passed the check is the threshold, and so is a
	// wide band's upper edge if the values at it reach k. Otherwise the
	// threshold is the (k − above − at hi)-th largest spilled band value,
	// found by the same two radix passes, over the spill file instead of
	// the inputs.
	thr := make([]uint32, nm)
	var wide []int
	for _, i := range sc.models {
		if bd := sc.bands[i]; bd.lo == bd.hi || sc.need[i] <= above[i]+atHi[i] {
			thr[i] = bd.hi
		} else {
			above[i] += atHi[i]
			wide = append(wide, i)
		}
	}
	inBand := func(i int, m uint32) bool { return m >= sc.bands[i].lo && m < sc.bands[i].hi }
	mag := func(rec []byte, i int) uint32 { return binary.LittleEndian.Uint32(rec[16+4*i:]) & 0x7fffffff }
	rec := r.spill.rec
	high := make([]topk.Hist, nm)
	err := r.spill.each(r.recordBlock, func(recs []byte) error {
		for o := 0; o < len(recs); o += rec {
			for _, i := range wide {
				if m := mag(recs[o:], i); inBand(i, m) {
					high[i].Inc(m >> 16)
				}
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	his, ups := make([]uint32, nm), make([]uint64, nm)
	for _, i := range wide {
		if his[i], ups[i], err = high[i].Pick(sc.need[i] - above[i]); err != nil {
			return false, err
		}
	}
	low := make([]topk.Hist, nm)
	err = r.spill.each(r.recordBlock, func(recs []byte) error {
		for o := 0; o < len(recs); o += rec {
			for _, i := range wide {
				if m := mag(recs[o:], i); inBand(i, m) && m>>16 == his[i] {
					low[i].Inc(m & 0xffff)
				}
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	for _, i := range wide {
		th, err := topk.Exact(sc.need[i]-above[i], his[i], ups[i], &low[i])
		if err != nil {
			return false, err
		}
		thr[i] = th.Bits // every tie at it is kept
	}

	// Merge the spilled positions, a block at a time on every worker:
	// gather, trim exactly, vote, patch the output.
	return true, r.eachParallel(ctx, r.spill, func(w *worker, recs []byte) error {
		cnt := len(recs) / rec
		for g := 0; g < cnt; g += r.stride {
			m := min(cnt-g, r.stride)
			if err := r.settleGroup(w, recs[g*rec:(g+m)*rec], thr); err != nil {
				return err
			}
		}
		return nil
	})
}

// settleGroup merges up to one stride of spilled records of one block.
func (r *run) settleGroup(w *worker, recs []byte, thr []uint32) error {
	nm := len(r.p.Models)
	sc := r.scope
	m := len(recs) / r.spill.rec
	ji := int(binary.LittleEndian.Uint32(recs))
	j := &r.p.Jobs[ji]
	elems := make([]int64, m)
	for g := range m {
		rec := recs[g*r.spill.rec:]
		elems[g] = int64(binary.LittleEndian.Uint64(rec[4:]))
		w.base[g] = math.Float32frombits(binary.LittleEndian.Uint32(rec[12:]))
		for i := range nm {
			v := math.Float32frombits(binary.LittleEndian.Uint32(rec[16+4*i:]))
			if sc.trims[i] && kernels.AbsBits(v) < thr[i] {
				v = 0
			} else {
				w.kept[i]++
			}
			w.taus[i*r.stride+g] = v
		}
	}
	vp := &r.votes[ji]
	st := r.k.Vote(w.tm[:m], w.taus, r.stride, vp)
	w.votes.Add(st)
	sz := j.OutDT.Size()
	out := w.outb[:m*sz]
	r.k.Finish(out, j.OutDT, w.base[:m], w.tm[:m], j.Params.Lambda)
	if r.p.Method.GlobalMajority && st.ZeroSum > 0 {
		if err := r.recordZeroSums(w, ji, m, func(e int) int64 { return elems[e] }, vp, j.Params.Lambda); err != nil {
			return err
		}
	}
	return r.patch(j, elems, func(g int) []byte { return out[g*sz : (g+1)*sz] })
}

// spillDir is where the spill file goes: in the output's hidden temporary
// directory, on its disk, so a killed merge leaves it only there.
func (r *run) spillDir() string { return r.out.TempDir() }

// recordBlock is the job and block of a spill record.
func (r *run) recordBlock(rec []byte) [2]int64 {
	ji := int(binary.LittleEndian.Uint32(rec))
	e := int64(binary.LittleEndian.Uint64(rec[4:]))
	return [2]int64{int64(ji), e / int64(r.blockSize(ji))}
}

// workerStats is what workers have counted, to undo a scope that falls back.
type workerStats struct {
	kept   []uint64
	votes  kernels.VoteStats
	fixups int
}

type snapshot struct {
	workers []workerStats
	fixed   int64 // fixup records in the file
}

func (r *run) snapshot() snapshot {
	s := snapshot{workers: make([]workerStats, len(r.ws))}
	for k, w := range r.ws {
		s.workers[k] = workerStats{kept: slices.Clone(w.kept), votes: w.votes, fixups: len(w.fixups)}
	}
	if r.fixFile != nil {
		s.fixed = r.fixFile.count
	}
	return s
}

func (r *run) restore(s snapshot) error {
	for k, w := range r.ws {
		copy(w.kept, s.workers[k].kept)
		w.votes, w.fixups = s.workers[k].votes, w.fixups[:min(len(w.fixups), s.workers[k].fixups)]
	}
	if r.fixFile != nil {
		return r.fixFile.truncate(s.fixed)
	}
	return nil
}

// singlePassMerge merges the whole model in one pass.
func (r *run) singlePassMerge(ctx context.Context, sum *Summary) error {
	p := r.p
	nm := len(p.Models)
	var err error
	if r.spill, err = newSpill(r.spillDir(), nm); err != nil {
		return err
	}
	defer r.spill.close()
	for _, w := range r.ws {
		w.band = &bandState{above: make([]uint64, nm), inside: make([]uint64, nm), atHi: make([]uint64, nm), mark: make([]bool, r.stride)}
	}
	sum.Asked = make([]uint64, nm)
	for i, k := range p.Need {
		sum.Asked[i] = min(k, uint64(p.Merged))
	}
	r.prog.StartPass(phaseMerge, 1, 1, p.InputBytes)
	defer r.prog.EndPass()
	if err := r.copyJobs(); err != nil {
		return err
	}
	return r.scopePass(ctx, r.newScope(r.mergeJobs(), p.Need), sum, func() error {
		if err := r.selectThresholds(ctx, sum); err != nil {
			return err
		}
		return r.parallel(ctx, r.blocks(r.mergeJobs()), r.mergeBlock)
	})
}

// scopePass samples the scope, merges it in one pass and settles it; if the
// sample missed, it undoes the counts and runs fallback instead.
func (r *run) scopePass(ctx context.Context, sc *scope, sum *Summary, fallback func() error) error {
	for _, ji := range sc.jobs {
		r.traced(ji, "single-pass")
	}
	if len(sc.models) == 0 {
		r.scope = sc
		return r.parallel(ctx, r.blocks(sc.jobs), r.mergeBlockBand)
	}
	size, err := r.sampleBands(ctx, sc)
	if err != nil {
		return err
	}
	sum.Sampled += size
	if err := r.spill.reset(); err != nil {
		return err
	}
	before := r.snapshot()
	r.scope = sc
	if err := r.parallel(ctx, r.blocks(sc.jobs), r.mergeBlockBand); err != nil {
		return err
	}
	ok, err := r.settle(ctx)
	sum.Spilled += r.spill.count
	if err != nil || ok {
		return err
	}
	sum.FellBack++
	if err := r.restore(before); err != nil {
		return err
	}
	return fallback()
}
