package kernels

import (
	"math"
	"math/bits"
)

// The statistics kernels (Set.Norms, Set.Dot, Set.TrimWords) sum float64
// values over fixed chunks of SumChunk elements; a slice's last chunk may be
// shorter. Inside a chunk of c elements the order is fixed:
//
//   - four partial sums s0..s3, each starting at +0; element x < c&^3 is
//     added to s(x mod 4), in increasing x;
//   - the last c mod 4 elements are then added to s0, in increasing x;
//   - the chunk's sum is (s0 + s1) + (s2 + s3).
//
// The partial sums are the lanes of a vector of four float64 (two of two on
// NEON), so every set computes the same sum. The values added are |τ| (an
// exact float64), τ² and τᵢτⱼ, whose products of float32 values are exact in
// float64, so a fused multiply-add gives the same bits as a product and a
// sum. A NaN sum is written as SumNaN, whatever the payloads that made it.
//
// The mask words hold 64 elements each, element x of the slice at bit x mod
// 64 of word x/64; a slice's last word may be partial (its high bits 0).

// SumChunk is the span of one chunk sum of the statistics kernels.
const SumChunk = 1024

// SumNaN is the bit pattern every NaN chunk sum is written as.
const SumNaN = 0x7ff8000000000000

// Chunks is the number of chunk sums of n elements.
func Chunks(n int) int { return (n + SumChunk - 1) / SumChunk }

// Words is the number of mask words of n elements.
func Words(n int) int { return (n + 63) / 64 }

// lanes4 is the fixed order of a chunk's sum (see above) over the values
// v(x), x in [0, c).
func lanes4(c int, v func(x int) float64) float64 {
	var s0, s1, s2, s3 float64
	x := 0
	for ; x+4 <= c; x += 4 {
		s0 += v(x)
		s1 += v(x + 1)
		s2 += v(x + 2)
		s3 += v(x + 3)
	}
	for ; x < c; x++ {
		s0 += v(x)
	}
	return pinNaN((s0 + s1) + (s2 + s3))
}

func pinNaN(f float64) float64 {
	if f != f {
		return math.Float64frombits(SumNaN)
	}
	return f
}

// signWords ORs into pos and neg the mask bits of tau's positive and
// negative values (by their bits: the sign bit, and magnitude bits not all
// zero; ±0 is neither, a NaN is one or the other) and returns how many are
// nonzero.
func signWords(tau []float32, pos, neg []uint64) int {
	nz := 0
	for w := range Words(len(tau)) {
		g := tau[w*64 : min(w*64+64, len(tau))]
		var p, q uint64
		for x, t := range g {
			b := math.Float32bits(t)
			sign := uint64(b >> 31)
			nonzero := uint64(((b & 0x7fffffff) + 0x7fffffff) >> 31)
			p |= (nonzero &^ sign) << x
			q |= (nonzero & sign) << x
		}
		pos[w] |= p
		neg[w] |= q
		nz += bits.OnesCount64(p | q)
	}
	return nz
}

func normsGeneric(tau []float32, l1, sq []float64, pos, neg []uint64) int {
	nc, nw := Chunks(len(tau)), Words(len(tau))
	_, _, _, _ = l1[:nc], sq[:nc], pos[:nw], neg[:nw]
	for c := range nc {
		t := tau[c*SumChunk : min(c*SumChunk+SumChunk, len(tau))]
		l1[c] = lanes4(len(t), func(x int) float64 { return math.Abs(float64(t[x])) })
		sq[c] = lanes4(len(t), func(x int) float64 { v := float64(t[x]); return v * v })
	}
	return signWords(tau, pos, neg)
}

func dotGeneric(a, b []float32, dot []float64) {
	_, _ = b[:len(a)], dot[:Chunks(len(a))]
	for c := range Chunks(len(a)) {
		lo, hi := c*SumChunk, min(c*SumChunk+SumChunk, len(a))
		x, y := a[lo:hi], b[lo:hi]
		dot[c] = lanes4(len(x), func(i int) float64 { return float64(x[i]) * float64(y[i]) })
	}
}

func trimWordsGeneric(tau []float32, gt uint32, kept, sign []uint64, removed []float64) int {
	nc, nw := Chunks(len(tau)), Words(len(tau))
	_, _, _ = kept[:nw], sign[:nw], removed[:nc]
	n := 0
	for w := range nw {
		g := tau[w*64 : min(w*64+64, len(tau))]
		var k, s uint64
		for x, t := range g {
			b := math.Float32bits(t)
			if b&0x7fffffff > gt {
				k |= 1 << x
				s |= uint64(b>>31) << x
			}
		}
		kept[w], sign[w] = k, s
		n += bits.OnesCount64(k)
	}
	for c := range nc {
		t := tau[c*SumChunk : min(c*SumChunk+SumChunk, len(tau))]
		removed[c] = lanes4(len(t), func(x int) float64 {
			if a := math.Float32bits(t[x]) & 0x7fffffff; a <= gt {
				return float64(math.Float32frombits(a))
			}
			return 0
		})
	}
	return n
}
