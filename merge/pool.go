package merge

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// The worker pool: a pass hands the blocks of a list to one goroutine per
// worker, which take them in turn; the first error stops the others.

// block is one unit of work: elements [start, start+n) of a job.
type block struct {
	job      int
	index    int // within the job
	seq      int // within the list of blocks of a pass
	start, n int64
}

// blocks lists the blocks of the jobs, in one allocation of the exact size:
// a list grown by append would hold up to three times its bytes at once.
func (r *run) blocks(jobs []int) []block {
	count := 0
	for _, ji := range jobs {
		count += r.p.jobBlocks(ji, r.p.BlockElems)
	}
	bs := make([]block, 0, count)
	for _, ji := range jobs {
		e, B := r.p.Jobs[ji].Elements, int64(r.blockSize(ji))
		for s, b := int64(0), 0; s < e; s, b = s+B, b+1 {
			bs = append(bs, block{job: ji, index: b, seq: len(bs), start: s, n: min(B, e-s)})
		}
	}
	return bs
}

// blockCounts holds a few counts per block of a pass (by the block's
// position in the pass's list), in one allocation.
type blockCounts struct {
	per int // counts per block
	v   []int64
}

func newBlockCounts(blocks, per int) blockCounts {
	return blockCounts{per: per, v: make([]int64, blocks*per)}
}

// at is block k's counts.
func (c blockCounts) at(k int) []int64 { return c.v[k*c.per : (k+1)*c.per : (k+1)*c.per] }

// releaseLag is how many blocks behind the one just merged pages are
// released: far enough that no worker still reads them.
const releaseLag = 8

// adviseBatch is how many blocks one read-ahead or release call covers: a
// release of mapped pages interrupts every core running this process to
// flush its TLB, and each call has a fixed cost, so they come in runs.
const adviseBatch = 16

// clearPending zeroes the files' counts of blocks (or solo jobs) still to
// read them: they belong to one pass, which may have stopped on an error.
func (r *run) clearPending() {
	for _, f := range r.files {
		f.pending.Store(0)
	}
}

// parallel runs fn over the blocks with one goroutine per worker; the first
// error stops the others.
func (r *run) parallel(ctx context.Context, bs []block, fn func(w *worker, b block) error) error {
	if !r.shared {
		for _, b := range bs {
			for _, f := range r.jobFiles(b.job) {
				f.pending.Add(1)
			}
		}
		defer r.clearPending()
	}
	// Read-ahead runs about prefetchBytes of input ahead of the workers:
	// the page cache holds it, not this process, so it costs no RSS.
	lead := int64(2 * len(r.ws))
	if len(bs) > 0 {
		lead = max(lead, prefetchBytes/max(1, r.readBytes(&r.p.Jobs[bs[0].job], bs[0].n)))
	}
	// Sampled runs (not every block of the tensors) are copied (src), not
	// mapped, unless the tensor is hot: read again soon, from the mapping.
	copyRuns := false
	for k := 1; k < len(bs) && !copyRuns && !r.hot; k++ {
		copyRuns = bs[k].job == bs[k-1].job && bs[k].start != bs[k-1].start+bs[k-1].n
	}
	var next atomic.Int64
	var failed atomic.Bool
	errs := make([]error, len(r.ws))
	var wg sync.WaitGroup
	for wi, w := range r.ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.copyRuns = copyRuns
			defer func() { w.copyRuns = false }()
			for !failed.Load() {
				i := next.Add(1) - 1
				if i >= int64(len(bs)) {
					return
				}
				if err := ctx.Err(); err != nil {
					errs[wi] = err
					failed.Store(true)
					return
				}
				b := bs[i]
				if i == 0 {
					r.prefetch(bs[:min(lead, int64(len(bs)))], copyRuns)
				}
				if ahead := i + lead; i%adviseBatch == 0 && ahead < int64(len(bs)) {
					r.prefetch(bs[ahead:min(ahead+adviseBatch, int64(len(bs)))], copyRuns)
				}
				err := r.guarded(w, b, fn)
				switch end := i + 1 - releaseLag; {
				case r.hot, copyRuns:
				case end%adviseBatch == 0 && end > 0:
					r.release(bs[end-adviseBatch : end])
				}
				for _, f := range r.jobFiles(b.job) {
					if !r.shared && f.pending.Add(-1) == 0 && !r.hot {
						f.close() // unmapping releases the tail of the pass
					}
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

// eachWorker runs f for every worker, each on its own goroutine, and waits.
func (r *run) eachWorker(f func(w *worker)) {
	var wg sync.WaitGroup
	for _, w := range r.ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(w)
		}()
	}
	wg.Wait()
}

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
