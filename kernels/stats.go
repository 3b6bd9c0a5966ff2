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

// sum4 is a chunk's sum in the fixed order (see above) from its four
// partial sums, the last c mod 4 values already in s0.
func sum4(s0, s1, s2, s3 float64) float64 { return pinNaN((s0 + s1) + (s2 + s3)) }

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
		var a0, a1, a2, a3, q0, q1, q2, q3 float64
		x := 0
		for ; x+4 <= len(t); x += 4 {
			v0, v1, v2, v3 := float64(t[x]), float64(t[x+1]), float64(t[x+2]), float64(t[x+3])
			a0 += math.Abs(v0)
			a1 += math.Abs(v1)
			a2 += math.Abs(v2)
			a3 += math.Abs(v3)
			q0 += v0 * v0
			q1 += v1 * v1
			q2 += v2 * v2
			q3 += v3 * v3
		}
		for ; x < len(t); x++ {
			v := float64(t[x])
			a0 += math.Abs(v)
			q0 += v * v
		}
		l1[c], sq[c] = sum4(a0, a1, a2, a3), sum4(q0, q1, q2, q3)
	}
	return signWords(tau, pos, neg)
}

func dotGeneric(a, b []float32, dot []float64) {
	_, _ = b[:len(a)], dot[:Chunks(len(a))]
	for c := range Chunks(len(a)) {
		lo, hi := c*SumChunk, min(c*SumChunk+SumChunk, len(a))
		p, q := a[lo:hi], b[lo:hi]
		q = q[:len(p)]
		var d0, d1, d2, d3 float64
		x := 0
		for ; x+4 <= len(p); x += 4 {
			d0 += float64(p[x]) * float64(q[x])
			d1 += float64(p[x+1]) * float64(q[x+1])
			d2 += float64(p[x+2]) * float64(q[x+2])
			d3 += float64(p[x+3]) * float64(q[x+3])
		}
		for ; x < len(p); x++ {
			d0 += float64(p[x]) * float64(q[x])
		}
		dot[c] = sum4(d0, d1, d2, d3)
	}
}

func trimWordsGeneric(tau []float32, gt uint32, kept, sign []uint64, removed []float64) int {
	nc, nw := Chunks(len(tau)), Words(len(tau))
	_, _, _ = kept[:nw], sign[:nw], removed[:nc]
	n := 0
	for c := range nc {
		c0, c1 := c*SumChunk, min(c*SumChunk+SumChunk, len(tau))
		last := c0 + (c1-c0)&^3 // from here on, values go to the first partial sum
		var r [4]float64
		for w0 := c0; w0 < c1; w0 += 64 {
			g := tau[w0:min(w0+64, c1)]
			var k, s uint64
			for x, t := range g {
				b := math.Float32bits(t)
				a := b & 0x7fffffff
				lane := x & 3
				if w0+x >= last {
					lane = 0
				}
				if a > gt {
					k |= 1 << x
					s |= uint64(b>>31) << x
				} else {
					r[lane] += float64(math.Float32frombits(a))
				}
			}
			kept[w0/64], sign[w0/64] = k, s
			n += bits.OnesCount64(k)
		}
		removed[c] = sum4(r[0], r[1], r[2], r[3])
	}
	return n
}

func lowBitsGeneric(tau []float32, list []uint32) int {
	n := 0
	for _, t := range tau {
		if b := math.Float32bits(t) & 0x7fffffff; b&0xffff != 0 {
			if n < len(list) {
				list[n] = b
			}
			n++
		}
	}
	return n
}
