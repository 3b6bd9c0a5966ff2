//go:build !noasm && !purego && gc

package kernels

import "math"

// The statistics kernels' assembly takes whole chunks; a short last chunk
// goes through the reference, and NaN sums are pinned here.

func init() {
	avx512Set.Norms = func(tau []float32, l1, sq []float64, pos, neg []uint64) int {
		return normsAVX(tau, l1, sq, pos, neg, true)
	}
	avx2Set.Norms = func(tau []float32, l1, sq []float64, pos, neg []uint64) int {
		return normsAVX(tau, l1, sq, pos, neg, false)
	}
	avx512Set.Dot = func(a, b []float32, dot []float64) { dotAVX(a, b, dot, true) }
	avx2Set.Dot = func(a, b []float32, dot []float64) { dotAVX(a, b, dot, false) }
	avx512Set.TrimWords = func(tau []float32, gt uint32, kept, sign []uint64, removed []float64) int {
		return trimWordsAVX(tau, gt, kept, sign, removed, true)
	}
	avx2Set.TrimWords = func(tau []float32, gt uint32, kept, sign []uint64, removed []float64) int {
		return trimWordsAVX(tau, gt, kept, sign, removed, false)
	}
	avx512Set.LowBits = func(tau []float32, list []uint32) int { return lowBitsAVX(tau, list, true) }
	avx2Set.LowBits = func(tau []float32, list []uint32) int { return lowBitsAVX(tau, list, false) }
}

// pinNaNs writes every NaN of s as SumNaN.
func pinNaNs(s []float64) {
	for i, f := range s {
		if f != f {
			s[i] = math.Float64frombits(SumNaN)
		}
	}
}

func normsAVX(tau []float32, l1, sq []float64, pos, neg []uint64, z bool) int {
	n := len(tau)
	nc, nw := Chunks(n), Words(n)
	_, _, _, _ = l1[:nc], sq[:nc], pos[:nw], neg[:nw]
	full, nz := n/SumChunk, 0
	if full > 0 {
		if z {
			nz = normsAVX512(&tau[0], full, &l1[0], &sq[0], &pos[0], &neg[0])
		} else {
			nz = normsAVX2(&tau[0], full, &l1[0], &sq[0], &pos[0], &neg[0])
		}
		pinNaNs(l1[:full])
		pinNaNs(sq[:full])
	}
	if full < nc {
		w := full * SumChunk / 64
		nz += normsGeneric(tau[full*SumChunk:], l1[full:], sq[full:], pos[w:], neg[w:])
	}
	return nz
}

func dotAVX(a, b []float32, dot []float64, z bool) {
	n := len(a)
	_, _ = b[:n], dot[:Chunks(n)]
	full := n / SumChunk
	if full > 0 {
		if z {
			dotAVX512(&a[0], &b[0], full, &dot[0])
		} else {
			dotAVX2(&a[0], &b[0], full, &dot[0])
		}
		pinNaNs(dot[:full])
	}
	if full < Chunks(n) {
		o := full * SumChunk
		dotGeneric(a[o:], b[o:n], dot[full:])
	}
}

func trimWordsAVX(tau []float32, gt uint32, kept, sign []uint64, removed []float64, z bool) int {
	n := len(tau)
	nc, nw := Chunks(n), Words(n)
	_, _, _ = kept[:nw], sign[:nw], removed[:nc]
	full, count := n/SumChunk, 0
	if full > 0 {
		if z {
			count = trimWordsAVX512(&tau[0], full, gt, &kept[0], &sign[0], &removed[0])
		} else {
			// |τ| bits never exceed 0x7fffffff, and the AVX2 code compares signed.
			count = trimWordsAVX2(&tau[0], full, min(gt, 0x7fffffff), &kept[0], &sign[0], &removed[0])
		}
		pinNaNs(removed[:full])
	}
	if full < nc {
		w := full * SumChunk / 64
		count += trimWordsGeneric(tau[full*SumChunk:], gt, kept[w:], sign[w:], removed[full:])
	}
	return count
}

func lowBitsAVX(tau []float32, list []uint32, z bool) int {
	m := len(tau) &^ 63
	done, count := 0, 0
	if m > 0 && len(list) >= 64 {
		if z {
			done, count = lowBitsAVX512(&tau[0], m, &list[0], len(list))
		} else {
			done, count = lowBitsAVX2(&tau[0], m, &list[0], len(list))
		}
	}
	return count + lowBitsGeneric(tau[done:], list[count:])
}
