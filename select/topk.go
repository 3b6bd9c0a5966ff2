// Package topk finds exact magnitude thresholds for trimming task vectors
// without sorting them: a radix select over float32 magnitude bit patterns,
// first on the high 16 bits, then on the low 16 bits inside the chosen bin.
// Memory is a few 65,536-bin histograms whatever the number of elements, and
// each pass streams its input once, in any order and in parallel.
//
// The folder keeps the design card's name "select"; Go reserves that word,
// so the package is topk.
package topk

import (
	"fmt"
	"math"
)

// Bins is the number of bins of one radix pass.
const Bins = 1 << 16

// Hist counts magnitudes by 16 bits of their pattern. Magnitude patterns
// (bits & 0x7fffffff) order like |x|, with NaN above +Inf.
type Hist [Bins]uint64

// AddHigh counts each |x| in its high-16-bit bin.
func (h *Hist) AddHigh(xs []float32) {
	for _, x := range xs {
		h[(math.Float32bits(x)&0x7fffffff)>>16]++
	}
}

// AddLow counts, for each |x| whose high 16 bits equal hi, its low 16 bits.
func (h *Hist) AddLow(xs []float32, hi uint32) {
	for _, x := range xs {
		b := math.Float32bits(x) & 0x7fffffff
		if b>>16 == hi {
			h[b&0xffff]++
		}
	}
}

// Take adds o into h and empties o, touching only o's nonzero bins.
func (h *Hist) Take(o *Hist) {
	for i, c := range o {
		if c != 0 {
			h[i] += c
			o[i] = 0
		}
	}
}

// Reset zeroes h.
func (h *Hist) Reset() { *h = Hist{} }

// Total is the number of values counted.
func (h *Hist) Total() uint64 {
	var t uint64
	for _, c := range h {
		t += c
	}
	return t
}

// Pick finds the bin holding the k-th largest counted value (k ≥ 1) and
// returns it with the number of values in higher bins.
func (h *Hist) Pick(k uint64) (bin uint32, above uint64, err error) {
	if k == 0 {
		return 0, 0, fmt.Errorf("topk: rank 0")
	}
	// Eight bins at a time while the rank is not reached: most of the
	// high bins of a magnitude histogram are empty.
	for g := Bins - 8; g >= 0; g -= 8 {
		sum := h[g] + h[g+1] + h[g+2] + h[g+3] + h[g+4] + h[g+5] + h[g+6] + h[g+7]
		if above+sum < k {
			above += sum
			continue
		}
		for b := g + 7; b >= g; b-- {
			c := h[b]
			if above+c >= k {
				return uint32(b), above, nil
			}
			above += c
		}
	}
	return 0, 0, fmt.Errorf("topk: rank %d beyond the %d values counted", k, above)
}

// Threshold is an exact magnitude threshold: Bits is the magnitude pattern of
// the k-th largest value, Greater counts values strictly above it and Equal
// those equal to it (so Greater < k ≤ Greater+Equal).
type Threshold struct {
	Bits    uint32
	Greater uint64
	Equal   uint64
}

// Exact combines the two passes: high is the high-bit histogram of every
// value, hi and aboveHi come from high.Pick(k), and low is the low-bit
// histogram of the values in bin hi.
func Exact(k uint64, hi uint32, aboveHi uint64, low *Hist) (Threshold, error) {
	lo, aboveLo, err := low.Pick(k - aboveHi)
	if err != nil {
		return Threshold{}, err
	}
	return Threshold{Bits: hi<<16 | lo, Greater: aboveHi + aboveLo, Equal: low[lo]}, nil
}

// Approx stops after the high pass: the threshold is the lower edge of bin hi,
// so every value of that bin is kept; Equal is then the bin's population and
// the kept count Greater+Equal exceeds k by less than that.
func Approx(hi uint32, aboveHi uint64, high *Hist) Threshold {
	return Threshold{Bits: hi << 16, Greater: aboveHi, Equal: high[hi]}
}
