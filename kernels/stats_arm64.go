//go:build !noasm && !purego && gc

package kernels

import "math"

// The statistics kernels' assembly takes whole chunks, at most
// neonCallMax elements a call (lane counters); a short last chunk goes
// through the reference, and NaN sums are pinned here.

func init() {
	neonSet.Norms, neonSet.Dot, neonSet.TrimWords = neonNorms, neonDot, neonTrimWords
	neonSet.LowBits = neonLowBits
}

// pinNaNs writes every NaN of s as SumNaN.
func pinNaNs(s []float64) {
	for i, f := range s {
		if f != f {
			s[i] = math.Float64frombits(SumNaN)
		}
	}
}

// neonStatsCall is the most chunks one call takes.
func neonStatsCall() int { return max(1, neonCallMax/SumChunk) }

func neonNorms(tau []float32, l1, sq []float64, pos, neg []uint64) int {
	n := len(tau)
	nc, nw := Chunks(n), Words(n)
	_, _, _, _ = l1[:nc], sq[:nc], pos[:nw], neg[:nw]
	full, nz := n/SumChunk, 0
	const words = SumChunk / 64
	for c := 0; c < full; c += neonStatsCall() {
		k := min(neonStatsCall(), full-c)
		nz += normsNEON(&tau[c*SumChunk], k, &l1[c], &sq[c], &pos[c*words], &neg[c*words])
	}
	pinNaNs(l1[:full])
	pinNaNs(sq[:full])
	if full < nc {
		nz += normsGeneric(tau[full*SumChunk:], l1[full:], sq[full:], pos[full*words:], neg[full*words:])
	}
	return nz
}

func neonDot(a, b []float32, dot []float64) {
	n := len(a)
	_, _ = b[:n], dot[:Chunks(n)]
	full := n / SumChunk
	for c := 0; c < full; c += neonStatsCall() {
		k := min(neonStatsCall(), full-c)
		dotNEON(&a[c*SumChunk], &b[c*SumChunk], k, &dot[c])
	}
	pinNaNs(dot[:full])
	if full < Chunks(n) {
		o := full * SumChunk
		dotGeneric(a[o:], b[o:n], dot[full:])
	}
}

func neonTrimWords(tau []float32, gt uint32, kept, sign []uint64, removed []float64) int {
	n := len(tau)
	nc, nw := Chunks(n), Words(n)
	_, _, _ = kept[:nw], sign[:nw], removed[:nc]
	full, count := n/SumChunk, 0
	const words = SumChunk / 64
	for c := 0; c < full; c += neonStatsCall() {
		k := min(neonStatsCall(), full-c)
		count += trimWordsNEON(&tau[c*SumChunk], k, gt, &kept[c*words], &sign[c*words], &removed[c])
	}
	pinNaNs(removed[:full])
	if full < nc {
		count += trimWordsGeneric(tau[full*SumChunk:], gt, kept[full*words:], sign[full*words:], removed[full:])
	}
	return count
}

func neonLowBits(tau []float32, list []uint32) int {
	m := len(tau) &^ 15
	done, count := 0, 0
	if m > 0 && len(list) >= 16 {
		done, count = lowBitsNEON(&tau[0], m, &list[0], len(list))
	}
	return count + lowBitsGeneric(tau[done:], list[count:])
}
