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
	mathbits "math/bits"
)

// Bins is the number of bins of one radix pass.
const Bins = 1 << 16

// Hist counts magnitudes by 16 bits of their pattern. Magnitude patterns
// (bits & 0x7fffffff) order like |x|, with NaN above +Inf. It also marks the
// pages (256 bins each) it has touched, so that emptying, merging and
// scanning it visit only those: the values of one tensor or sample fall in a
// few of the 256 pages (bf16 task vectors: one page per exponent), and a
// per-tensor select empties, merges and scans a histogram per model and
// pass, so scanning every bin would cost more than the marks.
type Hist struct {
	bins [Bins]uint64
	// alt counts every other value of AddHigh (high bins are below Bins/2),
	// and altPages marks its pages (bits 0–127); they are folded into bins
	// before any read. With two counters per bin, neighbouring values of one
	// bin (bf16 task vectors fall in a few hundred) do not wait on each
	// other's increment, and marking the pages in registers saves a store
	// per value (BenchmarkAddHigh measures it).
	alt      [Bins / 2]uint64
	altPages [2]uint64
	pages    [Bins / pageBins]bool
}

const pageBins = 256

// Inc counts one value in bin b.
func (h *Hist) Inc(b uint32) {
	h.bins[b]++
	h.pages[b/pageBins] = true
}

// Count is bin b's count.
func (h *Hist) Count(b uint32) uint64 {
	h.fold()
	return h.bins[b]
}

// AddHigh counts each |x| in its high-16-bit bin.
func (h *Hist) AddHigh(xs []float32) {
	// The pages touched, as bits of two words (high bins lie in pages
	// 0–127; pages from 64 on hold |x| ≥ 2, rare in task vectors): no store
	// per value.
	var low, high uint64
	mark := func(p uint32) {
		if p < 64 {
			low |= 1 << p
		} else {
			high |= 1 << (p & 63)
		}
	}
	i := 0
	for ; i+1 < len(xs); i += 2 {
		b0 := (math.Float32bits(xs[i]) & 0x7fffffff) >> 16
		b1 := (math.Float32bits(xs[i+1]) & 0x7fffffff) >> 16
		h.bins[b0]++
		h.alt[b1]++
		if p0, p1 := b0/pageBins, b1/pageBins; p0|p1 < 64 {
			low |= 1<<(p0&63) | 1<<(p1&63)
		} else {
			mark(p0)
			mark(p1)
		}
	}
	if i < len(xs) {
		h.Inc((math.Float32bits(xs[i]) & 0x7fffffff) >> 16)
	}
	h.altPages[0] |= low
	h.altPages[1] |= high
}

// fold adds alt's counts into bins.
func (h *Hist) fold() {
	for w, bits := range h.altPages {
		for ; bits != 0; bits &= bits - 1 {
			p := w*64 + mathbits.TrailingZeros64(bits)
			h.pages[p] = true
			alt := h.alt[p*pageBins : (p+1)*pageBins]
			for j, c := range alt {
				if c != 0 {
					h.bins[p*pageBins+j] += c
					alt[j] = 0
				}
			}
		}
		h.altPages[w] = 0
	}
}

// AddHighSide is AddHigh that also appends to side the magnitude pattern of
// each |x| whose low 16 bits are not all zero, while side has room (its
// capacity); it reports false once one did not fit. With every such value
// listed, LowFrom makes the low histogram of any bin without a second pass:
// the others all have low bits 0. (A difference of two bf16 values mostly
// has at most 8 significant bits, so few τ have low bits.) The list is
// checked eight values at a time, cheaper than the low passes it saves.
func (h *Hist) AddHighSide(xs []float32, side *[]uint32) bool {
	h.AddHigh(xs)
	s, n := (*side)[:cap(*side)], len(*side)
	fits := true
	list := func(g []float32) {
		for _, x := range g {
			if b := math.Float32bits(x) & 0x7fffffff; b&0xffff != 0 {
				if n < len(s) {
					s[n] = b
					n++
				} else {
					fits = false
				}
			}
		}
	}
	i := 0
	for ; i+8 <= len(xs); i += 8 { // a group at a time: values with low bits are rare
		g := xs[i : i+8 : i+8]
		bits := math.Float32bits
		if (bits(g[0])|bits(g[1])|bits(g[2])|bits(g[3])|bits(g[4])|bits(g[5])|bits(g[6])|bits(g[7]))&0xffff != 0 {
			list(g)
		}
	}
	list(xs[i:])
	*side = s[:n]
	return fits
}

// LowFrom sets h to the low-bit histogram of bin hi, from that bin's count
// in the high histogram and a complete list of the values with low bits
// (AddHighSide's).
func (h *Hist) LowFrom(hi uint32, count uint64, side []uint32) {
	h.Reset()
	for _, b := range side {
		if b>>16 == hi {
			h.Inc(b & 0xffff)
			count--
		}
	}
	if count > 0 {
		h.bins[0] += count
		h.pages[0] = true
	}
}

// AddLow counts, for each |x| whose high 16 bits equal hi, its low 16 bits.
func (h *Hist) AddLow(xs []float32, hi uint32) {
	for _, x := range xs {
		b := math.Float32bits(x) & 0x7fffffff
		if b>>16 == hi {
			h.Inc(b & 0xffff)
		}
	}
}

// Take adds o into h and empties o, touching only o's pages.
func (h *Hist) Take(o *Hist) {
	h.fold()
	o.fold()
	for p, used := range o.pages {
		if !used {
			continue
		}
		for i := p * pageBins; i < (p+1)*pageBins; i++ {
			if c := o.bins[i]; c != 0 {
				h.bins[i] += c
				o.bins[i] = 0
			}
		}
		h.pages[p], o.pages[p] = true, false
	}
}

// Reset zeroes h.
func (h *Hist) Reset() {
	h.fold()
	for p, used := range h.pages {
		if used {
			clear(h.bins[p*pageBins : (p+1)*pageBins])
			h.pages[p] = false
		}
	}
}

// Total is the number of values counted.
func (h *Hist) Total() uint64 {
	h.fold()
	var t uint64
	for p, used := range h.pages {
		if used {
			for _, c := range h.bins[p*pageBins : (p+1)*pageBins] {
				t += c
			}
		}
	}
	return t
}

// Pick finds the bin holding the k-th largest counted value (k ≥ 1) and
// returns it with the number of values in higher bins.
func (h *Hist) Pick(k uint64) (bin uint32, above uint64, err error) {
	h.fold()
	return PickPaged(h.bins[:], h.pages[:], pageBins, k)
}

// PickPaged is Pick over any count array kept in pages of pageLen bins,
// pages[p] false where page p holds no count.
func PickPaged(bins []uint64, pages []bool, pageLen int, k uint64) (bin uint32, above uint64, err error) {
	if k == 0 {
		return 0, 0, fmt.Errorf("topk: rank 0")
	}
	for p := len(pages) - 1; p >= 0; p-- {
		if !pages[p] {
			continue
		}
		page := bins[p*pageLen : (p+1)*pageLen]
		var sum uint64
		for _, c := range page {
			sum += c
		}
		if above+sum < k {
			above += sum
			continue
		}
		for b := pageLen - 1; b >= 0; b-- {
			c := page[b]
			if above+c >= k {
				return uint32(p*pageLen + b), above, nil
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
	return Threshold{Bits: hi<<16 | lo, Greater: aboveHi + aboveLo, Equal: low.Count(lo)}, nil
}

// Approx stops after the high pass: the threshold is the lower edge of bin hi,
// so every value of that bin is kept; Equal is then the bin's population and
// the kept count Greater+Equal exceeds k by less than that.
func Approx(hi uint32, aboveHi uint64, high *Hist) Threshold {
	return Threshold{Bits: hi << 16, Greater: aboveHi, Equal: high.Count(hi)}
}

// Order statistics of signed values (PCB-Merging's β) use the same
// histograms on ordered keys: 32-bit patterns that order like the values.

// canonicalNaN is the key of every NaN, whatever its sign and payload:
// above +Inf, as a sort places NaN last.
const canonicalNaN = math.MaxUint32

// OrderedKey maps x to a key that orders like x: negative patterns have
// every bit flipped, positive ones the sign bit set. −0 takes +0's key (the
// two are equal), and every NaN takes one key above +Inf.
func OrderedKey(x float32) uint32 {
	b := math.Float32bits(x)
	switch {
	case x != x:
		return canonicalNaN
	case b == 1<<31: // −0
		return 1 << 31
	case b&(1<<31) != 0:
		return ^b
	}
	return b | 1<<31
}

// OrderedValue is the value of an ordered key (a NaN for canonicalNaN).
func OrderedValue(k uint32) float32 {
	if k&(1<<31) != 0 {
		return math.Float32frombits(k &^ (1 << 31))
	}
	return math.Float32frombits(^k)
}

// AddOrderedHigh counts each x by the high 16 bits of its ordered key, and
// returns the largest key (0 for no x).
func (h *Hist) AddOrderedHigh(xs []float32) (largest uint32) {
	for _, x := range xs {
		k := OrderedKey(x)
		h.Inc(k >> 16)
		largest = max(largest, k)
	}
	return largest
}

// AddOrderedLow counts, for each x whose ordered key's high 16 bits equal
// hi, the key's low 16 bits.
func (h *Hist) AddOrderedLow(xs []float32, hi uint32) {
	for _, x := range xs {
		if k := OrderedKey(x); k>>16 == hi {
			h.Inc(k & 0xffff)
		}
	}
}
