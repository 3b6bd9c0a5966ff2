package inspect

import (
	"math"

	topk "github.com/tiesmm/tiesmm/select"
)

// The high-bit histograms of the first pass: the count of every |τ| by the
// high 16 bits of its magnitude pattern (bins below 0x8000), as select's
// Hist counts them, and picked the same way; the low-bit histograms and the
// exact thresholds stay select's.

const (
	hiBins    = 1 << 15
	hiPageLen = 256 // bins per page
	hiPages   = hiBins / hiPageLen
	hiWays    = 4
)

// blockHist is a worker's high-bit histogram: four counters per bin, value
// x of a group of four going to counter x, so that neighbouring values of
// one bin (task vectors of bf16 models fall in a few hundred, most of them
// in a few) do not wait on each other's increment. Instead of marking the
// pages it touches (a mark per value costs more than the count), it keeps
// the OR of every bin counted, a bound on the highest, and merging visits
// the bins up to it. It holds fewer than 2³² values (engine.countHigh
// hands them on before).
type blockHist struct {
	c   [hiWays][hiBins]uint32
	top uint32
}

// add counts the magnitudes of tau.
func (h *blockHist) add(tau []float32) {
	c0, c1, c2, c3 := &h.c[0], &h.c[1], &h.c[2], &h.c[3]
	top := h.top
	i := 0
	for ; i+4 <= len(tau); i += 4 {
		b0 := math.Float32bits(tau[i]) << 1 >> 17
		b1 := math.Float32bits(tau[i+1]) << 1 >> 17
		b2 := math.Float32bits(tau[i+2]) << 1 >> 17
		b3 := math.Float32bits(tau[i+3]) << 1 >> 17
		c0[b0]++
		c1[b1]++
		c2[b2]++
		c3[b3]++
		top |= b0 | b1 | b2 | b3
	}
	for ; i < len(tau); i++ {
		b := math.Float32bits(tau[i]) << 1 >> 17
		c0[b]++
		top |= b
	}
	h.top = top
}

// highHist is a tensor's high-bit histogram, the workers' gathered.
type highHist struct {
	bins  [hiBins]uint64
	pages [hiPages]bool
}

// take adds o's counts and empties o.
func (h *highHist) take(o *blockHist) {
	n := int(o.top) + 1
	for p := 0; p*hiPageLen < n; p++ {
		lo, hi := p*hiPageLen, min((p+1)*hiPageLen, n)
		for k := range o.c {
			for b, c := range o.c[k][lo:hi] {
				if c != 0 {
					h.bins[lo+b] += uint64(c)
					h.pages[p] = true
				}
			}
			clear(o.c[k][lo:hi])
		}
	}
	o.top = 0
}

// count is bin b's count.
func (h *highHist) count(b uint32) uint64 { return h.bins[b] }

// reset empties h.
func (h *highHist) reset() {
	for p, used := range h.pages {
		if used {
			clear(h.bins[p*hiPageLen : (p+1)*hiPageLen])
			h.pages[p] = false
		}
	}
}

// pick finds the bin holding the k-th largest counted value (k ≥ 1) and
// returns it with the number of values in higher bins, as select's Pick.
func (h *highHist) pick(k uint64) (bin uint32, above uint64, err error) {
	return topk.PickPaged(h.bins[:], h.pages[:], hiPageLen, k)
}
