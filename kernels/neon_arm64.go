//go:build !noasm

package kernels

import "unsafe"

//go:generate go run neon_asmgen_arm64.go

// neonSet runs the kernels with Advanced SIMD (base ARMv8.0: f16 conversion
// included, no FP16 or BF16 arithmetic extensions). The assembly takes whole
// groups of 16 elements (8 for Vote); the rest goes through the Go code,
// which is the same arithmetic.
var neonSet = &Set{
	Name:      "neon",
	Widen:     neonWiden,
	DeltaTrim: neonDeltaTrim,
	Vote:      neonVote,
	Finish:    neonFinish,
}

func init() {
	neonSet.Range = rangeGeneric
	neonSet.Ties = stagedTies(neonSet)
}

// The assembly counts in 32-bit lanes: calls stay well below 2³² elements.
const neonChunk = 1 << 24

//go:noescape
func widenF16NEON(dst *float32, src *byte, n int)

//go:noescape
func widenBF16NEON(dst *float32, src *byte, n int)

//go:noescape
func deltaTrimF32NEON(tau *float32, src *byte, base *float32, n int, thr uint32) (kept int)

//go:noescape
func deltaTrimF16NEON(tau *float32, src *byte, base *float32, n int, thr uint32) (kept int)

//go:noescape
func deltaTrimBF16NEON(tau *float32, src *byte, base *float32, n int, thr uint32) (kept int)

// voteNEON votes groups×8 elements; it returns, summed over them, how many
// vote sums are > 0, ≥ 0 (up), exactly zero with a nonzero value, and how
// many elements saw both signs. stride is in elements, n ≥ 1.
//
//go:noescape
func voteNEON(out *float32, taus *float32, stride int, w *float32, n int, groups int, flags int) (pos, up, zero, conflicts int)

//go:noescape
func finishF32NEON(dst *byte, base *float32, tm *float32, n int, lambda float32)

//go:noescape
func finishF16NEON(dst *byte, base *float32, tm *float32, n int, lambda float32)

//go:noescape
func finishBF16NEON(dst *byte, base *float32, tm *float32, n int, lambda float32)

// Vote flag bits, as neon_asmgen_arm64.go numbers them.
const (
	voteWeighted = 1 << iota
	voteCount
	voteNone
	voteSum
	voteMax
	voteDivW
)

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
