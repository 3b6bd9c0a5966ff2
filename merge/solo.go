package merge

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/tiesmm/tiesmm/mmapio"
)

// Small tensors of a per-tensor trim are merged side by side, each whole by
// one worker. Split across the workers, such a tensor's 4–6 passes (sample,
// select, merge) each end on a barrier, with the select's histogram work
// in between on one core while the others wait.

// soloBytes bounds the input bytes of a tensor merged solo (tuning.soloBytes).
const soloBytes = 64 << 20

// soloTensors is the batch of solo tensors (a strategy's Solo flag): each
// merged whole by one worker, by its path's implementation.
type soloTensors struct{ perTensor }

func (*soloTensors) batch() bool { return true }

// merge merges the solo jobs, each worker taking the next one whole on a
// run of its own that shares the files, then adds up their counts.
func (*soloTensors) merge(ctx context.Context, r *run, jobs []int) error {
	if len(jobs) == 0 {
		return nil
	}
	// A shard is unmapped once no solo tensor left reads it: mapping every
	// shard of every model at once is what some arm64 kernels' 512 GiB of
	// address space cannot hold (a 70B merge's norms lie in every shard).
	// No other pass runs meanwhile, so the files' pending counts are free.
	for _, ji := range jobs {
		for _, f := range r.jobFiles(ji) {
			f.pending.Add(1)
		}
	}
	defer r.clearPending()
	subs := make([]*run, len(r.ws))
	errs := make([]error, len(r.ws))
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	// Read-ahead two tensors in front of the one taken last: the other
	// worker's is being read already.
	for _, ji := range jobs[:min(2, len(jobs))] {
		r.prefetchJob(ji)
	}
	for wi, w := range r.ws {
		s := *r
		s.ws, s.shared = []*worker{w}, true
		s.missed, s.crowded, s.onePass, s.remerged = 0, 0, 0, 0
		subs[wi] = &s
		wg.Go(func() {
			for !failed.Load() {
				k := next.Add(1) - 1
				if k >= int64(len(jobs)) {
					return
				}
				ji := jobs[k]
				s.traced(ji, "solo")
				if k+2 < int64(len(jobs)) {
					s.prefetchJob(jobs[k+2])
				}
				err := ctx.Err()
				if err == nil {
					err = s.paths[ji].merge(ctx, &s, []int{ji})
				}
				s.releaseJob(ji)
				for _, f := range r.jobFiles(ji) {
					if f.pending.Add(-1) == 0 {
						f.close()
					}
				}
				if err != nil {
					errs[wi] = tensorError(r.p.Jobs[ji].Name, err)
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, s := range subs {
		r.missed += s.missed
		r.crowded += s.crowded
		r.onePass += s.onePass
		r.remerged += s.remerged
		r.tensorSigmas = max(r.tensorSigmas, s.tensorSigmas)
	}
	return errors.Join(errs...)
}

// releaseJob drops a solo job's input pages from the process: its files
// stay mapped for the other workers' tensors.
func (r *run) releaseJob(ji int) {
	r.eachTensor(ji, func(t *mmapio.Tensor, sz int64) { r.files[t.File].dontNeed(t.Offset, t.Size) })
	r.releaseFactors(ji)
}
