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
	"path/filepath"
	"slices"
	"sync"

	"github.com/tiesmm/tiesmm/kernels"
	topk "github.com/tiesmm/tiesmm/select"
)

// The paper preset's whole-model trim in one pass over the inputs.
//
// A sample of blocks spread over the model gives, per model, a band of
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

// band is one model's uncertain range of magnitude patterns, inclusive.
type band struct{ lo, hi uint32 }

// sampleEvery is the stride between sampled blocks; small models are
// sampled whole.
const (
	sampleEvery    = 50
	sampleMinElems = 1 << 22
)

// singlePass reports whether the plan's selection can be done in one pass.
func (p *Plan) singlePass() bool {
	m := p.Method
	return m.Trim && m.Scope == ScopeModel && m.Ties == KeepTies && !m.ApproxTopK && !p.Opts.TwoPass && p.trims()
}

// sampleChunk is the length of the sampled runs of elements: a few pages.
const sampleChunk = 4096

// sampleBlocks picks runs of sampleChunk elements, one every sampleEvery
// runs of the model's flat element order, so every element has the same
// chance to be read and every tensor is represented in proportion: the
// estimate is not thrown off by tensors of very different scales.
func (r *run) sampleBlocks() []block {
	p := r.p
	if p.Merged <= p.sampleMin {
		return r.blocks(r.mergeJobs())
	}
	every := max(1, min(int64(p.sampleEvery), p.Merged/p.sampleMin))
	step := every * p.sampleChunk
	var bs []block
	var flat int64 // flat index of the job's first element
	next := step / 2
	for _, ji := range r.mergeJobs() {
		e, B := r.p.Jobs[ji].Elements, int64(r.blockSize(ji))
		for next < flat+e {
			start := next - flat
			n := min(p.sampleChunk, e-start)
			for n > 0 { // a run never crosses a block of the job
				m := min(n, B-start%B)
				bs = append(bs, block{job: ji, index: int(start / B), seq: len(bs), start: start, n: m})
				start, n = start+m, n-m
			}
			next += step
		}
		flat += e
	}
	if len(bs) == 0 {
		return r.blocks(r.mergeJobs())
	}
	return bs
}

// sampleBands reads a sample of the model and returns each trimmed model's band.
func (r *run) sampleBands(ctx context.Context, models []int) ([]band, int64, error) {
	p := r.p
	sample := r.sampleBlocks()
	var size int64
	for _, b := range sample {
		size += b.n
	}
	high, err := r.histPass(ctx, sample, models, nil, false)
	if err != nil {
		return nil, 0, err
	}
	// Ranks in the sample, from the top, that bracket the threshold: its
	// expected rank ± 8 standard deviations of a binomial count, widened
	// for the clustering of whole blocks.
	bands := make([]band, len(p.Models))
	type edge struct {
		rank uint64
		hi   uint32
		high uint64
	}
	edges := make([][2]edge, len(p.Models))
	for _, i := range models {
		q := float64(p.Need[i]) / float64(p.Merged)
		r0 := q * float64(size)
		d := 8*math.Sqrt(float64(size)*q*(1-q)) + 0.0002*float64(size) + 64
		top, bot := uint64(max(1, r0-d)), uint64(min(float64(size), r0+d))
		for s, rank := range []uint64{top, bot} {
			bin, above, err := high[i].Pick(rank)
			if err != nil {
				return nil, 0, err
			}
			edges[i][s] = edge{rank: rank, hi: bin, high: above}
		}
	}
	for s := range 2 {
		his := make([]uint32, len(p.Models))
		for _, i := range models {
			his[i] = edges[i][s].hi
		}
		low, err := r.histPass(ctx, sample, models, his, true)
		if err != nil {
			return nil, 0, err
		}
		for _, i := range models {
			e := edges[i][s]
			th, err := topk.Exact(e.rank, e.hi, e.high, &low[i])
			if err != nil {
				return nil, 0, err
			}
			if s == 0 {
				bands[i].hi = th.Bits
			} else {
				bands[i].lo = th.Bits
			}
		}
	}
	if size == p.Merged { // the whole model: the band is the exact threshold
		for _, i := range models {
			bands[i].hi = bands[i].lo
		}
	}
	return bands, size, nil
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
}

func newSpill(dir string, models int) (*spill, error) {
	f, err := os.CreateTemp(dir, ".tiesmm-spill-*")
	if err != nil {
		return nil, fmt.Errorf("spill file: %w", err)
	}
	return &spill{f: f, w: bufio.NewWriterSize(f, 1<<20), rec: 4 + 8 + 4 + 4*models}, nil
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

// each streams the records back in groups of records of one block (in
// element order) of at most 1 MiB; block tells a record's job and block.
func (s *spill) each(block func(rec []byte) [2]int64, fn func(recs []byte) error) error {
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("spill file: %w", err)
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	rd := bufio.NewReaderSize(s.f, 1<<20)
	buf := make([]byte, 0, 1<<20)
	rec := make([]byte, s.rec)
	for {
		_, err := io.ReadFull(rd, rec)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("spill file: %w", err)
		}
		if len(buf) > 0 && (block(buf) != block(rec) || len(buf) >= 1<<20-s.rec) {
			if err := fn(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		buf = append(buf, rec...)
	}
	if len(buf) > 0 {
		return fn(buf)
	}
	return nil
}

// bandState is what the single pass counts, per worker.
type bandState struct {
	above, inside []uint64 // per model
	mark          []bool   // positions of the block with some value in a band
	pos           []int32  // the same positions, listed
	buf           []byte   // this worker's spill records not yet appended
}

// mergeBlockBand merges one block deciding every position it can; the
// others are spilled and merged as if all their values were zero.
func (r *run) mergeBlockBand(w *worker, b block) error {
	j := &r.p.Jobs[b.job]
	n, nm := int(b.n), len(j.Models)
	base := r.widenBase(w, b)
	bs := w.band
	mark := bs.mark[:n]
	ge := make([]int, nm)
	for i := range nm {
		tau := w.taus[i*r.stride : i*r.stride+n]
		t, dt := j.Models[i], j.ModelDT[i]
		// Below the band is trimmed for sure: the kernel does that.
		ge[i] = r.k.DeltaTrim(tau, r.src(t, dt, b.start, b.n), dt, base, r.bands[i].lo)
		r.release(t, dt, b.start, b.n)
	}
	bs.pos = bs.pos[:0]
	for i := range nm {
		if !r.bandTrims[i] {
			continue
		}
		lo, hi := r.bands[i].lo, r.bands[i].hi
		var inside uint64
		for e, v := range w.taus[i*r.stride : i*r.stride+n] {
			if m := kernels.AbsBits(v); m-lo <= hi-lo && (m != 0 || lo == 0) {
				inside++
				if !mark[e] {
					mark[e] = true
					bs.pos = append(bs.pos, int32(e))
				}
			}
		}
		bs.inside[i] += inside
		bs.above[i] += uint64(ge[i]) - inside
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
			if kernels.AbsBits(*v) >= r.bands[i].lo {
				ge[i]--
			}
			*v = 0
		}
	}
	if len(bs.buf) >= 1<<20 {
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

// voteAndFinish runs the vote over the block's task vectors and writes it.
func (r *run) voteAndFinish(w *worker, b block, base []float32) error {
	j := &r.p.Jobs[b.job]
	n := int(b.n)
	vp := &r.votes[b.job]
	st := r.k.Vote(w.tm[:n], w.taus, r.stride, vp)
	w.votes.Add(st)
	if r.p.Method.GlobalMajority && st.ZeroSum > 0 {
		r.recordZeroSums(w, b.job, n, func(e int) int64 { return b.start + int64(e) }, vp, j.Params.Lambda)
	}
	return r.finish(w, b, base, w.tm[:n], j.Params.Lambda)
}

// settle finds the exact thresholds from the counts and the spilled band
// values, then merges the spilled positions with them. It reports false when
// the sample's bands missed a threshold.
func (r *run) settle(ctx context.Context, models []int) (bool, error) {
	p := r.p
	nm := len(p.Models)
	above, inside := make([]uint64, nm), make([]uint64, nm)
	for _, w := range r.ws {
		if err := r.spill.append(w.band.buf); err != nil {
			return false, err
		}
		w.band.buf = w.band.buf[:0]
		for i := range nm {
			above[i] += w.band.above[i]
			inside[i] += w.band.inside[i]
		}
	}
	for _, i := range models {
		if !(above[i] < p.Need[i] && p.Need[i] <= above[i]+inside[i]) {
			return false, nil
		}
	}
	// The (k − above)-th largest band value, by the same two radix passes,
	// over the spill file instead of the model.
	inBand := func(i int, m uint32) bool { return m >= r.bands[i].lo && m <= r.bands[i].hi }
	tau := func(rec []byte, i int) float32 {
		return math.Float32frombits(binary.LittleEndian.Uint32(rec[16+4*i:]))
	}
	high := make([]topk.Hist, nm)
	err := r.spill.each(r.recordBlock, func(recs []byte) error {
		for o := 0; o < len(recs); o += r.spill.rec {
			for _, i := range models {
				if m := kernels.AbsBits(tau(recs[o:], i)); inBand(i, m) {
					high[i][m>>16]++
				}
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	his, ups := make([]uint32, nm), make([]uint64, nm)
	for _, i := range models {
		if his[i], ups[i], err = high[i].Pick(p.Need[i] - above[i]); err != nil {
			return false, err
		}
	}
	low := make([]topk.Hist, nm)
	err = r.spill.each(r.recordBlock, func(recs []byte) error {
		for o := 0; o < len(recs); o += r.spill.rec {
			for _, i := range models {
				if m := kernels.AbsBits(tau(recs[o:], i)); inBand(i, m) && m>>16 == his[i] {
					low[i][m&0xffff]++
				}
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	thr := make([]uint32, nm)
	for _, i := range models {
		th, err := topk.Exact(p.Need[i]-above[i], his[i], ups[i], &low[i])
		if err != nil {
			return false, err
		}
		thr[i] = th.Bits
	}

	// Merge the spilled positions, a group at a time, in the first worker's
	// scratch: gather, trim with the exact thresholds, vote, patch the output.
	w := r.ws[0]
	return true, r.spill.each(r.recordBlock, func(recs []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		cnt := len(recs) / r.spill.rec
		for g := 0; g < cnt; g += r.stride {
			m := min(cnt-g, r.stride)
			if err := r.settleGroup(w, recs[g*r.spill.rec:(g+m)*r.spill.rec], thr); err != nil {
				return err
			}
		}
		return nil
	})
}

// settleGroup merges up to one stride of spilled records of one job.
func (r *run) settleGroup(w *worker, recs []byte, thr []uint32) error {
	nm := len(r.p.Models)
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
			if r.bandTrims[i] && kernels.AbsBits(v) < thr[i] {
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
		r.recordZeroSums(w, ji, m, func(e int) int64 { return elems[e] }, vp, j.Params.Lambda)
	}
	// Patch the output: one read and one write over the group's span.
	first, last := elems[0], elems[m-1]
	span := make([]byte, (last-first+1)*int64(sz))
	if err := r.out.ReadTensor(j.Name, first*int64(sz), span); err != nil {
		return err
	}
	for g := range m {
		copy(span[(elems[g]-first)*int64(sz):], out[g*sz:(g+1)*sz])
	}
	return r.out.WriteTensor(j.Name, first*int64(sz), span)
}

// spillDir is where the spill file goes: beside the output, on its disk.
func (r *run) spillDir() string { return filepath.Dir(r.out.TempDir()) }

// recordBlock is the job and block of a spill record.
func (r *run) recordBlock(rec []byte) [2]int64 {
	ji := int(binary.LittleEndian.Uint32(rec))
	e := int64(binary.LittleEndian.Uint64(rec[4:]))
	return [2]int64{int64(ji), e / int64(r.blockSize(ji))}
}

// singlePassMerge is the paper preset's merge: sample, one pass, settle; or
// the two-pass radix select when the sample's bands missed.
func (r *run) singlePassMerge(ctx context.Context, sum *Summary) error {
	p := r.p
	nm := len(p.Models)
	sum.Asked = make([]uint64, nm)
	r.bandTrims = make([]bool, nm)
	var models []int
	for i, k := range p.Need {
		sum.Asked[i] = min(k, uint64(p.Merged))
		if k <= uint64(p.Merged) {
			models = append(models, i)
			r.bandTrims[i] = true
		}
	}
	all := r.blocks(r.mergeJobs())
	passes := p.Passes()
	r.prog.StartPass(passes[0], 1, len(passes), p.InputBytes/sampleEvery)
	bands, size, err := r.sampleBands(ctx, models)
	r.prog.EndPass()
	if err != nil {
		return err
	}
	r.bands = bands
	sum.Sampled = size
	if r.spill, err = newSpill(r.spillDir(), nm); err != nil {
		return err
	}
	defer r.spill.close()
	for _, w := range r.ws {
		w.band = &bandState{above: make([]uint64, nm), inside: make([]uint64, nm), mark: make([]bool, r.stride)}
	}
	r.prog.StartPass(passes[1], 2, len(passes), p.InputBytes)
	if err := r.copyJobs(); err != nil {
		return err
	}
	err = r.parallel(ctx, all, r.mergeBlockBand)
	r.prog.EndPass()
	if err != nil {
		return err
	}
	r.prog.StartPass(passes[2], 3, len(passes), 0)
	ok, err := r.settle(ctx, models)
	r.prog.EndPass()
	sum.Spilled = r.spill.count
	if err != nil || ok {
		return err
	}
	// The sample missed: start again with the exact two-pass select.
	sum.FellBack = true
	for _, w := range r.ws {
		clear(w.kept)
		w.votes, w.fixups = kernels.VoteStats{}, w.fixups[:0]
	}
	if err := r.selectThresholds(ctx, sum); err != nil {
		return err
	}
	return r.parallel(ctx, all, r.mergeBlock)
}
