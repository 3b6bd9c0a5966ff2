//go:build !noasm && !purego && gc

package kernels

import "unsafe"

// neonSet runs the kernels with Advanced SIMD (base ARMv8.0: f16 conversion
// included, no FP16 or BF16 arithmetic extensions). The assembly takes whole
// groups of 16 elements (8 for Vote, 4 for Ties); the rest goes through the
// Go code, which is the same arithmetic. Ties is fused in assembly for the
// cases neonTiesFused lists and staged from the other kernels otherwise.
var neonSet = &Set{
	Name:      "neon",
	Widen:     neonWiden,
	DeltaTrim: neonDeltaTrim,
	Vote:      neonVote,
	Finish:    neonFinish,
	Range:     neonRange,
	Ties:      neonTies,

	DeltaRange: neonDeltaRange,
}

// neonStaged is Ties made of the NEON stage kernels: the fallback for the
// cases the fused assembly does not take, and for the tail of a block.
var neonStaged func(b *TiesBlock) VoteStats

func init() { neonStaged = stagedTies(neonSet) }

// The assembly counts in 32-bit lanes: calls stay well below 2³² elements.
const neonChunk = 1 << 24

// neonCallMax is how many elements Range, DeltaRange and Ties pass to one assembly call
// (a multiple of 16); tests lower it to run the chunking.
var neonCallMax = neonChunk

func neonWiden(dst []float32, src []byte, dt DType) {
	n := len(dst)
	_ = src[:n*dt.Size()]
	if n == 0 {
		return
	}
	switch dt {
	case F32:
		// A copy keeps every bit, signalling NaNs included, as the reference does.
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*n), src)
		return
	case F16, BF16:
		m := n &^ 15
		if m > 0 {
			if dt == F16 {
				widenF16NEON(&dst[0], &src[0], m)
			} else {
				widenBF16NEON(&dst[0], &src[0], m)
			}
		}
		widenGeneric(dst[m:], src[2*m:], dt)
	default:
		widenGeneric(dst, src, dt)
	}
}

func neonDeltaTrim(tau []float32, src []byte, dt DType, base []float32, thrBits uint32) int {
	n := len(tau)
	_, _ = base[:n], src[:n*dt.Size()]
	if dt > BF16 {
		return deltaTrimGeneric(tau, src, dt, base, thrBits)
	}
	size := dt.Size()
	m := n &^ 15
	kept := 0
	for off := 0; off < m; off += neonChunk {
		c := min(neonChunk, m-off)
		t, s, b := &tau[off], &src[off*size], &base[off]
		switch dt {
		case F32:
			kept += deltaTrimF32NEON(t, s, b, c, thrBits)
		case F16:
			kept += deltaTrimF16NEON(t, s, b, c, thrBits)
		default:
			kept += deltaTrimBF16NEON(t, s, b, c, thrBits)
		}
	}
	return kept + deltaTrimGeneric(tau[m:], src[m*size:], dt, base[m:], thrBits)
}

func neonVote(out []float32, taus []float32, stride int, p *VoteParams) VoteStats {
	n := len(p.Weights)
	m := len(out) &^ 7
	// The assembly reads taus[i*stride+j] unchecked: anything it could not
	// read in bounds goes to the Go code, which panics where it should.
	if n == 0 || m == 0 || stride < 0 || len(out) > len(taus) ||
		n > 1 && stride > (len(taus)-len(out))/(n-1) {
		return voteGeneric(out, taus, stride, p)
	}
	flags := 0
	if p.WeightedVote {
		flags |= voteWeighted
	}
	switch p.Consensus {
	case ConsensusCount:
		flags |= voteCount
	case ConsensusNone:
		flags |= voteNone
	}
	switch p.Aggregate {
	case AggregateSum:
		flags |= voteSum
	case AggregateMax:
		flags |= voteMax
	}
	if p.DivideByWeights {
		flags |= voteDivW
	}
	var st VoteStats
	for off := 0; off < m; off += neonChunk {
		c := min(neonChunk, m-off)
		pos, up, zero, conflicts := voteNEON(&out[off], &taus[off], stride, &p.Weights[0], n, c/8, flags)
		st.Conflicts += conflicts
		if p.Consensus != ConsensusNone {
			st.Positive += pos
			st.Negative += c - up
			st.ZeroSum += zero
		}
	}
	st.Add(voteGeneric(out[m:], taus[m:], stride, p))
	return st
}

func neonFinish(dst []byte, dt DType, base, tm []float32, lambda float32) {
	n := len(tm)
	_, _ = base[:n], dst[:n*dt.Size()]
	if dt > BF16 {
		finishGeneric(dst, dt, base, tm, lambda)
		return
	}
	size := dt.Size()
	m := n &^ 15
	for off := 0; off < m; off += neonChunk {
		c := min(neonChunk, m-off)
		d, b, t := &dst[off*size], &base[off], &tm[off]
		switch dt {
		case F32:
			finishF32NEON(d, b, t, c, lambda)
		case F16:
			finishF16NEON(d, b, t, c, lambda)
		default:
			finishBF16NEON(d, b, t, c, lambda)
		}
	}
	finishGeneric(dst[m*size:], dt, base[m:], tm[m:], lambda)
}

func neonRange(tau []float32, lo, hi uint32, idx []int32) int {
	n := len(tau)
	if idx != nil {
		_ = idx[:n]
	}
	if lo > hi {
		return 0
	}
	m := n &^ 15
	count := 0
	for off := 0; off < m; off += neonCallMax {
		c := min(neonCallMax, m-off)
		var ip *int32
		if idx != nil {
			ip = &idx[count] // count ≤ off < n
		}
		count += rangeNEON(&tau[off], c, lo, hi, ip, off)
	}
	for i := m; i < n; i++ {
		if v := AbsBits(tau[i]); v >= lo && v <= hi {
			if idx != nil {
				idx[count] = int32(i)
			}
			count++
		}
	}
	return count
}

func neonDeltaRange(src []byte, dt DType, base []float32, lo, hi uint32, idx []int32) (above, inside int) {
	n := len(base)
	_ = src[:n*dt.Size()]
	if idx != nil {
		_ = idx[:n]
	}
	if dt > BF16 {
		return deltaRangeGeneric(src, dt, base, lo, hi, idx)
	}
	size := dt.Size()
	m := n &^ 15
	for off := 0; off < m; off += neonCallMax {
		c := min(neonCallMax, m-off)
		var ip *int32
		if idx != nil {
			ip = &idx[inside] // inside ≤ off < n
		}
		s, b := &src[off*size], &base[off]
		var a, in int
		switch dt {
		case F32:
			a, in = deltaRangeF32NEON(s, b, c, lo, hi, ip, off)
		case F16:
			a, in = deltaRangeF16NEON(s, b, c, lo, hi, ip, off)
		default:
			a, in = deltaRangeBF16NEON(s, b, c, lo, hi, ip, off)
		}
		above += a
		inside += in
	}
	if m == n {
		return above, inside
	}
	// The tail, fewer than 16 elements, with indices from 0 at m:
	// idx[inside:n] holds at least n−m.
	if idx == nil {
		a, in := deltaRangeGeneric(src[m*size:], dt, base[m:], lo, hi, nil)
		return above + a, inside + in
	}
	ti := idx[inside:n]
	a, in := deltaRangeGeneric(src[m*size:], dt, base[m:], lo, hi, ti)
	for k := range ti[:in] {
		ti[k] += int32(m)
	}
	return above + a, inside + in
}

// neonTiesFused reports whether the fused assembly takes b: the same dtype
// in and out, f16 or bf16, consensus sum, aggregate sum or mean (either
// divisor), 1..8 models, any weights, with or without Equal counts, at
// least one group of 4, and inputs long enough (short ones, or an Equal of
// the wrong length, go to the staged form, which panics).
func neonTiesFused(b *TiesBlock) bool {
	p := b.Vote
	nm := len(b.Models)
	n := len(b.Dst) / b.OutDT.Size()
	if b.DT != b.OutDT || b.DT != BF16 && b.DT != F16 || p.Consensus != ConsensusSum ||
		p.Aggregate != AggregateSum && p.Aggregate != AggregateMean ||
		nm < 1 || nm > 8 || len(b.Thr) != nm || len(b.Kept) != nm || len(p.Weights) != nm || n < 4 {
		return false
	}
	if len(b.Base) < 2*n || b.Zero != nil && len(b.Zero) < n || b.Equal != nil && len(b.Equal) != nm {
		return false
	}
	for _, m := range b.Models {
		if len(m) < 2*n {
			return false
		}
	}
	return true
}

func neonTies(b *TiesBlock) VoteStats {
	if !neonTiesFused(b) {
		return neonStaged(b)
	}
	p := b.Vote
	nm := len(b.Models)
	n := len(b.Dst) / 2
	m := n &^ 3
	var a neonTiesArgs
	a.nm = nm
	a.lambda = b.Lambda
	if p.Aggregate == AggregateMean {
		a.flags |= tiesMean
		if p.DivideByWeights {
			a.flags |= tiesDivW
		}
	}
	if b.Zero != nil {
		a.flags |= tiesZero
	}
	if b.Equal != nil {
		a.flags |= tiesEqual
	}
	for i := 0; i < nm; i++ {
		a.thr[i] = b.Thr[i]
		a.w[i] = p.Weights[i]
		a.vw[i] = 1
		if p.WeightedVote {
			a.vw[i] = p.Weights[i]
		}
	}
	clear(b.Kept)
	clear(b.Equal)
	var st VoteStats
	for off := 0; off < m; off += neonCallMax {
		c := min(neonCallMax, m-off)
		a.dst, a.base = &b.Dst[2*off], &b.Base[2*off]
		for i, mdl := range b.Models {
			a.models[i] = &mdl[2*off]
		}
		a.groups = c / 4
		a.start = off
		if b.Zero != nil {
			a.zero = &b.Zero[st.ZeroSum] // ZeroSum ≤ off < n
		}
		tiesSelect(b.DT, &a)
		for i := range b.Kept {
			b.Kept[i] += a.kept[i]
		}
		for i := range b.Equal {
			b.Equal[i] += a.equal[i]
		}
		st.Add(VoteStats{Positive: a.pos, Negative: c - a.up, ZeroSum: a.zeroSum, Conflicts: a.conflicts})
	}
	if m == n {
		return st
	}
	// The tail, fewer than 4 elements, through the staged form.
	var models [8][]byte
	var kept, equal [8]int
	t := *b
	t.Dst, t.Base, t.Models, t.Kept = b.Dst[2*m:2*n], b.Base[2*m:], models[:nm], kept[:nm]
	if b.Equal != nil {
		t.Equal = equal[:nm]
	}
	for i, mdl := range b.Models {
		models[i] = mdl[2*m:]
	}
	if b.Zero != nil {
		t.Zero = b.Zero[st.ZeroSum:]
	}
	ts := neonStaged(&t)
	for i := range b.Kept {
		b.Kept[i] += kept[i]
	}
	for i := range b.Equal {
		b.Equal[i] += equal[i]
	}
	for k := 0; k < ts.ZeroSum && b.Zero != nil; k++ {
		b.Zero[st.ZeroSum+k] += int32(m)
	}
	st.Add(ts)
	return st
}

func tiesSelect(dt DType, a *neonTiesArgs) {
	if dt == F16 {
		tiesF16NEON(a)
	} else {
		tiesBF16NEON(a)
	}
}
