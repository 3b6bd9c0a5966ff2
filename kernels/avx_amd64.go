//go:build !noasm && !purego && gc

package kernels

import (
	"math"
	"unsafe"
)

// avx512Set runs the kernels with AVX-512 F/BW/VL (plus AVX2 and F16C):
// 16 lanes, tails through masked loads and stores, so the assembly takes
// every element.
var avx512Set = &Set{
	Name:  "avx512",
	Widen: func(dst []float32, src []byte, dt DType) { widenAVX(dst, src, dt, true) },
	DeltaTrim: func(tau []float32, src []byte, dt DType, base []float32, thr uint32) int {
		return deltaTrimAVX(tau, src, dt, base, thr, true)
	},
	Vote: func(out, taus []float32, stride int, p *VoteParams) VoteStats {
		return voteAVX(out, taus, stride, p, true)
	},
	Finish: func(dst []byte, dt DType, base, tm []float32, lambda float32) {
		finishAVX(dst, dt, base, tm, lambda, true)
	},
}

// avx2Set runs the kernels with AVX2 and F16C: 8 lanes; the last len%8
// elements go through the Go code, which is the same arithmetic.
var avx2Set = &Set{
	Name:  "avx2",
	Widen: func(dst []float32, src []byte, dt DType) { widenAVX(dst, src, dt, false) },
	DeltaTrim: func(tau []float32, src []byte, dt DType, base []float32, thr uint32) int {
		return deltaTrimAVX(tau, src, dt, base, thr, false)
	},
	Vote: func(out, taus []float32, stride int, p *VoteParams) VoteStats {
		return voteAVX(out, taus, stride, p, false)
	},
	Finish: func(dst []byte, dt DType, base, tm []float32, lambda float32) {
		finishAVX(dst, dt, base, tm, lambda, false)
	},
}

func init() {
	avx512Set.Range = func(tau []float32, lo, hi uint32, idx []int32) int { return rangeAVX(tau, lo, hi, idx, true) }
	avx2Set.Range = func(tau []float32, lo, hi uint32, idx []int32) int { return rangeAVX(tau, lo, hi, idx, false) }
	avx512Set.Ties = tiesAVX(avx512Set, true)
	avx2Set.Ties = tiesAVX(avx2Set, false)
	avx512Set.DeltaRange = func(src []byte, dt DType, base []float32, lo, hi uint32, idx []int32) (int, int) {
		return deltaRangeAVX(src, dt, base, lo, hi, idx, true)
	}
	avx2Set.DeltaRange = func(src []byte, dt DType, base []float32, lo, hi uint32, idx []int32) (int, int) {
		return deltaRangeAVX(src, dt, base, lo, hi, idx, false)
	}
}

// asmChunk bounds the elements of one assembly call that counts in 32-bit
// lanes (the AVX2 kept counts, every vote count).
const asmChunk = 1 << 24

// voteClass is how the vote kernels are specialised for p: consensus,
// aggregate (voteAgg…: a mean divided by weights only where some weight is
// not 1, since the mean is the same either way then) and weighting
// (weight…). Values the reference does not name explicitly fall where its
// switches put them.
func voteClass(p *VoteParams) (c Consensus, agg, wt int) {
	c = ConsensusSum
	if p.Consensus == ConsensusCount || p.Consensus == ConsensusNone {
		c = p.Consensus
	}
	unit := true
	for _, w := range p.Weights {
		if math.Float32bits(w) != 0x3f800000 {
			unit = false
			break
		}
	}
	switch {
	case p.Aggregate == AggregateSum:
		agg = voteAggSum
	case p.Aggregate == AggregateMax:
		agg = voteAggMax
	case p.DivideByWeights && !unit:
		agg = voteAggMeanW
	default:
		agg = voteAggMean
	}
	switch {
	case unit:
		wt = weight1
	case p.WeightedVote:
		wt = weightW
	default:
		wt = weightU
	}
	return c, agg, wt
}

// voteKernelFor is the vote kernel for p.
func voteKernelFor(p *VoteParams, z bool) voteFunc {
	c, agg, wt := voteClass(p)
	if z {
		return voteAVX512Kernels[c][agg][wt]
	}
	return voteAVX2Kernels[c][agg][wt]
}

func widenAVX(dst []float32, src []byte, dt DType, z bool) {
	n := len(dst)
	_ = src[:n*dt.Size()]
	if n == 0 || dt > BF16 {
		widenGeneric(dst, src, dt)
		return
	}
	if dt == F32 {
		// A copy keeps every bit, signalling NaNs included, as the reference does.
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*n), src)
		return
	}
	m := n
	if !z {
		m = n &^ 7
	}
	if m > 0 {
		switch {
		case dt == F16 && z:
			widenF16AVX512(&dst[0], &src[0], m)
		case dt == F16:
			widenF16AVX2(&dst[0], &src[0], m)
		case z:
			widenBF16AVX512(&dst[0], &src[0], m)
		default:
			widenBF16AVX2(&dst[0], &src[0], m)
		}
	}
	if m < n {
		widenGeneric(dst[m:], src[2*m:], dt)
	}
}

func deltaTrimAVX(tau []float32, src []byte, dt DType, base []float32, thr uint32, z bool) int {
	n := len(tau)
	_, _ = base[:n], src[:n*dt.Size()]
	if n == 0 || dt > BF16 {
		return deltaTrimGeneric(tau, src, dt, base, thr)
	}
	m := n
	if !z {
		m = n &^ 7
		// |τ| bits never exceed 0x7fffffff: a larger threshold trims
		// everything, as 0x80000000 does, and the AVX2 code compares signed.
		thr = min(thr, 0x80000000)
	}
	sz := dt.Size()
	kept := 0
	for off := 0; off < m; off += asmChunk {
		c := min(asmChunk, m-off)
		t, s, b := &tau[off], &src[off*sz], &base[off]
		switch {
		case dt == F32 && z:
			kept += deltaTrimF32AVX512(t, s, b, c, thr)
		case dt == F16 && z:
			kept += deltaTrimF16AVX512(t, s, b, c, thr)
		case z:
			kept += deltaTrimBF16AVX512(t, s, b, c, thr)
		case dt == F32:
			kept += deltaTrimF32AVX2(t, s, b, c, thr)
		case dt == F16:
			kept += deltaTrimF16AVX2(t, s, b, c, thr)
		default:
			kept += deltaTrimBF16AVX2(t, s, b, c, thr)
		}
	}
	if m < n {
		kept += deltaTrimGeneric(tau[m:], src[m*sz:], dt, base[m:], thr)
	}
	return kept
}

func voteAVX(out, taus []float32, stride int, p *VoteParams, z bool) VoteStats {
	n := len(p.Weights)
	m := len(out)
	if !z {
		m &^= 7
	}
	// The assembly reads taus[i*stride+j] unchecked: anything it could not
	// read in bounds goes to the Go code, which panics where it should.
	if n == 0 || m == 0 || stride < 0 || len(out) > len(taus) ||
		n > 1 && stride > (len(taus)-len(out))/(n-1) {
		return voteGeneric(out, taus, stride, p)
	}
	fn := voteKernelFor(p, z)
	var st VoteStats
	for off := 0; off < m; off += asmChunk {
		c := min(asmChunk, m-off)
		pos, neg, zero, conflicts := fn(&out[off], &taus[off], stride, &p.Weights[0], n, c)
		st.Conflicts += conflicts
		if p.Consensus != ConsensusNone {
			st.Positive += pos
			st.Negative += neg
			st.ZeroSum += zero
		}
	}
	if m < len(out) {
		st.Add(voteGeneric(out[m:], taus[m:], stride, p))
	}
	return st
}

func finishAVX(dst []byte, dt DType, base, tm []float32, lambda float32, z bool) {
	n := len(tm)
	_, _ = base[:n], dst[:n*dt.Size()]
	if n == 0 || dt > BF16 {
		finishGeneric(dst, dt, base, tm, lambda)
		return
	}
	m := n
	if !z {
		m = n &^ 7
	}
	if m > 0 {
		d, b, t := &dst[0], &base[0], &tm[0]
		switch {
		case dt == F32 && z:
			finishF32AVX512(d, b, t, m, lambda)
		case dt == F16 && z:
			finishF16AVX512(d, b, t, m, lambda)
		case z:
			finishBF16AVX512(d, b, t, m, lambda)
		case dt == F32:
			finishF32AVX2(d, b, t, m, lambda)
		case dt == F16:
			finishF16AVX2(d, b, t, m, lambda)
		default:
			finishBF16AVX2(d, b, t, m, lambda)
		}
	}
	if m < n {
		sz := dt.Size()
		finishGeneric(dst[m*sz:], dt, base[m:], tm[m:], lambda)
	}
}

// rangeAVX is Range: [lo, hi] becomes m − lo ≤ hi − lo (unsigned). Counting
// alone goes in chunks (lane counters); AVX2 leaves the last len%8 values
// to the Go reference.
func rangeAVX(tau []float32, lo, hi uint32, idx []int32, z bool) int {
	n := len(tau)
	if idx != nil {
		_ = idx[:n]
	}
	if lo > hi || n == 0 {
		return 0
	}
	m := n
	if !z {
		m = n &^ 7
	}
	width := hi - lo
	count := 0
	switch {
	case m == 0:
	case idx != nil && z:
		count = rangeIdxAVX512(&tau[0], m, lo, width, &idx[0])
	case idx != nil:
		count = rangeIdxAVX2(&tau[0], m, lo, width, &idx[0])
	default:
		for off := 0; off < m; off += asmChunk {
			c := min(asmChunk, m-off)
			if z {
				count += rangeCountAVX512(&tau[off], c, lo, width)
			} else {
				count += rangeCountAVX2(&tau[off], c, lo, width)
			}
		}
	}
	if m < n {
		var t []int32
		if idx != nil {
			t = idx[count:]
		}
		c := rangeGeneric(tau[m:], lo, hi, t)
		if t != nil {
			for j := range c {
				t[j] += int32(m)
			}
		}
		count += c
	}
	return count
}

// deltaRangeAVX is DeltaRange, in chunks (lane counters); AVX2 leaves the
// last len%8 values to the Go code, its indices shifted.
func deltaRangeAVX(src []byte, dt DType, base []float32, lo, hi uint32, idx []int32, z bool) (above, inside int) {
	n := len(base)
	sz := dt.Size()
	_ = src[:n*sz]
	if idx != nil {
		_ = idx[:n]
	}
	if n == 0 || lo > hi || dt > BF16 {
		return deltaRangeGeneric(src, dt, base, lo, hi, idx)
	}
	m := n
	if !z {
		// Magnitudes are at most 0x7fffffff, and the AVX2 code compares
		// signed: a larger lo leaves nothing in or above the band, a
		// larger hi nothing above it, as 0x7fffffff does.
		if lo > 0x7fffffff {
			return 0, 0
		}
		m = n &^ 7
		hi = min(hi, 0x7fffffff)
	}
	var ip *int32
	for off := 0; off < m; off += asmChunk {
		c := min(asmChunk, m-off)
		if idx != nil {
			ip = &idx[inside]
		}
		var a, in int
		if z {
			a, in = deltaRangeAVX512(dt, &src[off*sz], &base[off], c, lo, hi, ip, off)
		} else {
			a, in = deltaRangeAVX2(dt, &src[off*sz], &base[off], c, lo, hi, ip, off)
		}
		above += a
		inside += in
	}
	if m < n {
		var t []int32
		if idx != nil {
			t = idx[inside:]
		}
		a, in := deltaRangeGeneric(src[m*sz:], dt, base[m:], lo, hi, t)
		if t != nil {
			for j := range in {
				t[j] += int32(m)
			}
		}
		above += a
		inside += in
	}
	return above, inside
}

// tiesFused returns the fused kernel for b and its flags, or nil where none
// applies: stored and output dtypes that differ, consensus other than Sum,
// aggregate Max or a mean divided by non-unit weights, no models or more
// than tiesMaxModels, or parameter lengths that do not match (the staged
// path panics on those).
func tiesFused(b *TiesBlock, z bool) (tiesFunc, int) {
	p, nm := b.Vote, len(b.Models)
	if nm < 1 || nm > tiesMaxModels || len(b.Thr) != nm || len(b.Kept) != nm || len(p.Weights) != nm ||
		b.Equal != nil && len(b.Equal) != nm ||
		b.DT != b.OutDT || b.DT > BF16 || p.Consensus != ConsensusSum {
		return nil, 0
	}
	_, agg, wt := voteClass(p)
	flags := 0
	switch agg {
	case voteAggMean:
		flags = tiesFlagMean
	case voteAggSum:
	default:
		return nil, 0
	}
	if b.Equal != nil {
		flags |= tiesFlagEq
	}
	if z {
		return tiesAVX512Kernels[b.DT][wt], flags
	}
	return tiesAVX2Kernels[b.DT][wt], flags
}

// tiesAVX is Ties for s: the fused kernel where one applies (tiesFused),
// s's stage kernels otherwise.
func tiesAVX(s *Set, z bool) func(b *TiesBlock) VoteStats {
	staged := stagedTies(s)
	return func(b *TiesBlock) VoteStats {
		fn, flags := tiesFused(b, z)
		if fn == nil {
			return staged(b)
		}
		sz := b.DT.Size()
		n := len(b.Dst) / sz
		_ = b.Base[:n*sz]
		for _, m := range b.Models {
			_ = m[:n*sz]
		}
		if b.Zero != nil {
			_ = b.Zero[:n]
		}
		clear(b.Kept)
		clear(b.Equal)
		m := n
		switch {
		case z:
		case b.DT == BF16: // AVX2 steps: 16 elements for bf16, 8 otherwise
			m = n &^ 15
		default:
			m = n &^ 7
		}
		var st VoteStats
		if m > 0 {
			var a tiesArgs
			for i, t := range b.Thr {
				a.eq[i] = [8]uint32{t, t, t, t, t, t, t, t}
				if !z {
					// |τ| bits never exceed 0x7fffffff: as deltaTrimAVX.
					t = min(t, 0x80000000) - 1
				}
				a.thr[i] = [8]uint32{t, t, t, t, t, t, t, t}
				a.w[i] = b.Vote.Weights[i]
			}
			a.lambda = b.Lambda
			a.nm, a.flags = len(b.Models), flags
			if b.Zero != nil {
				a.zero = uintptr(unsafe.Pointer(&b.Zero[0]))
			}
			for off := 0; off < m; off += asmChunk {
				c := min(asmChunk, m-off)
				a.base, a.dst = &b.Base[off*sz], &b.Dst[off*sz]
				for i := range a.models {
					a.models[i] = a.base
				}
				for i, mdl := range b.Models {
					a.models[i] = &mdl[off*sz]
				}
				for k := range a.idx {
					a.idx[k] = int32(off + k)
				}
				pos, neg, zero, conflicts := fn(&a, c)
				st.Add(VoteStats{Positive: pos, Negative: neg, ZeroSum: zero, Conflicts: conflicts})
			}
			copy(b.Kept, a.kept[:])
			copy(b.Equal, a.equal[:])
		}
		if m < n {
			// The AVX2 kernels' last partial step: the Go reference, shifted.
			var models [8][]byte
			var kept, equal [8]int
			t := *b
			t.Dst, t.Base = b.Dst[m*sz:], b.Base[m*sz:]
			t.Models = models[:len(b.Models)]
			for i, mdl := range b.Models {
				t.Models[i] = mdl[m*sz:]
			}
			t.Kept = kept[:len(b.Kept)]
			if b.Equal != nil {
				t.Equal = equal[:len(b.Equal)]
			}
			if b.Zero != nil {
				t.Zero = b.Zero[st.ZeroSum:]
			}
			ts := Generic.Ties(&t)
			for i := range b.Kept {
				b.Kept[i] += kept[i]
			}
			for i := range b.Equal {
				b.Equal[i] += equal[i]
			}
			if t.Zero != nil {
				for j := range ts.ZeroSum {
					t.Zero[j] += int32(m)
				}
			}
			st.Add(ts)
		}
		return st
	}
}
