package kernels

import "math"

// EMR-Merging's election (Set.EMRElect) works in chunks of EMRChunk
// elements, the last one possibly shorter. Per element, over N task vectors:
//
//   - S = Σₜ τₜ, float32 additions in task order;
//   - γ = +1 where S > 0, else −1;
//   - Mₜ = [τₜ·γ > 0] (zeros and NaN never agree);
//   - U = γ·maxₜ Mₜ|τₜ|, +0 where no task agrees.
//
// Per task and chunk it also sums |τₜ| (A) and Mₜ·|U| (B) in float64, in a
// fixed order: sixteen partial sums s0..s15 start at +0, element x of the
// chunk is added to s(x mod 16) in increasing x, then for h = 8, 4, 2, 1
// each sj (j < h) becomes sj + s(j+h), and s0 is the chunk's sum; a NaN
// sum is written as SumNaN. Next to each sum it writes the least of (magnitude bits − 1)
// over the chunk's values, unsigned, so 0xffffffff when all are zero:
// EMRExact tells from the two whether the sum is exact.

// EMRChunk is the span of one chunk of EMRElect's sums.
const EMRChunk = 256

// EMRChunks is the number of chunks of n elements.
func EMRChunks(n int) int { return (n + EMRChunk - 1) / EMRChunk }

// EMRBlock is one block of an EMR election (Set.EMRElect) over
// n = len(U) elements.
type EMRBlock struct {
	U      []float32 // out: the unified task vector
	Taus   []float32 // task t at Taus[t*Stride : t*Stride+n]
	Stride int
	Tasks  int    // N ≥ 1
	Mask   []byte // out: task t's bits at Mask[t*Row : t*Row+(n+7)/8], bit e&7 of byte e>>3
	Row    int
	// Out, per chunk c and task t at c*Tasks+t: the chunk sums of
	// |τₜ| (ASum) and of Mₜ·|U| (BSum), and their values' least magnitude
	// bits minus one (AMin, BMin).
	ASum, BSum []float64
	AMin, BMin []uint32
	// Scratch is working memory of EMRChunk values; shorter, the kernel
	// allocates.
	Scratch []float32
}

// EMRExact reports whether a chunk sum of non-negative float32 values
// (EMRElect's ASum or BSum, or sums of such sums) is exact, from it and the
// least of its values' magnitude bits minus one: every nonzero value is a
// multiple of 2^q, q = max(E, 1) − 150 for the least value's biased exponent
// E, so every partial sum is one too, and exact while below 2^(q+53). Were
// any addition inexact, a partial sum would have reached 2^(q+53), and
// the sum (non-negative additions, rounded monotonically) would be at
// least that. NaN and infinite sums are never exact.
func EMRExact(sum float64, min1 uint32) bool {
	e := max((min1+1)>>23, 1) // min1 = 0xffffffff: no nonzero value, any finite sum (0) passes
	return math.Float64bits(sum) < uint64(e+1023-97)<<52
}

func emrSum16(s *[16]float64) float64 {
	for h := 8; h > 0; h /= 2 {
		for j := range h {
			s[j] += s[j+h]
		}
	}
	return pinNaN(s[0])
}

// positive is all ones where x > 0 (not zero, NaN or negative), else 0.
func positive(x float32) uint32 {
	b := int64(math.Float32bits(x))
	return ^uint32(((b - 1) | (0x7f800000 - b)) >> 63)
}
