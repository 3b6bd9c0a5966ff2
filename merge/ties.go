package merge

import (
	"github.com/tiesmm/tiesmm/kernels"
	topk "github.com/tiesmm/tiesmm/select"
)

// Exact-k trims keep the lowest-indexed ties at the threshold, so they need
// the count of ties in every block. The low-bits pass collects, besides its
// histogram, the low bits of each value in the chosen high bin with its
// block: once the threshold is known, the tie counts come from that list
// instead of another pass over the tensor. A list that outgrows its memory
// share is dropped and the counting pass runs instead.

// The memory all the lists may take: an eighth of --max-memory, within these.
const (
	minLowsBytes = 4 << 20
	maxLowsBytes = 256 << 20
)

// addLow counts the low bits of the |τ| in the high bin hi in model i's
// histogram and, for seq ≥ 0, collects them with the block's seq.
func (w *worker) addLow(k *kernels.Set, i int, tau []float32, hi uint32, seq int) {
	h := &w.hists[i]
	in := w.idx[:k.Range(tau, hi<<16, hi<<16|0xffff, w.idx)]
	collect := seq >= 0 && !w.lowsFull
	for _, e := range in {
		low := kernels.AbsBits(tau[e]) & 0xffff
		h.Inc(low)
		if collect {
			w.lows[i] = append(w.lows[i], uint64(seq)<<16|uint64(low))
		}
	}
	if len(w.lows[i]) > w.lowsCap {
		w.lowsFull = true
	}
}

// countCollected fills counts.at(seq)[i] with the ties at each split model's
// threshold from the workers' lists, and empties them. It reports false if
// a list was dropped.
func (r *run) countCollected(counts blockCounts, split []int, th []topk.Threshold) bool {
	full := false
	for _, w := range r.ws {
		full = full || w.lowsFull
	}
	defer r.dropLows()
	if full {
		return false
	}
	for _, w := range r.ws {
		for _, i := range split {
			low := uint64(th[i].Bits & 0xffff)
			for _, e := range w.lows[i] {
				if e&0xffff == low {
					counts.at(int(e >> 16))[i]++
				}
			}
		}
	}
	return true
}

// dropLows empties the lists, before a low-bits pass and once they are used.
func (r *run) dropLows() {
	for _, w := range r.ws {
		for i := range w.lows {
			w.lows[i] = w.lows[i][:0]
		}
		w.lowsFull = false
	}
}
