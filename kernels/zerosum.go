package kernels

import (
	"encoding/binary"
	"math"
)

// ZeroSums calls fn for each element j < n whose vote sum is exactly zero
// while some vote value is not: the elements Vote counts in ZeroSum and
// provisionally gives the sign +1. It uses the reference arithmetic, which
// every set matches, so it finds exactly the elements the kernel counted.
func ZeroSums(taus []float32, stride, n int, p *VoteParams, fn func(j int)) {
	for j := 0; j < n; j++ {
		var s float32
		nonzero := false
		for i, w := range p.Weights {
			v := taus[i*stride+j]
			if p.WeightedVote {
				v = float32(w * v)
			}
			if p.Consensus == ConsensusCount {
				s += sign(v)
			} else {
				s += v
			}
			nonzero = nonzero || v != 0
		}
		if s == 0 && nonzero {
			fn(j)
		}
	}
}

// FindZeroSums calls fn for the same elements as ZeroSums, faster: for a
// sum vote, a vote-less sum of the vote values with s's own Vote reproduces
// the vote's sum (same values, same order), a vote-less max of their
// magnitudes says whether any is nonzero, and a scan without data-dependent
// branches picks the elements. scratch must hold 2n values. Count votes
// take the scalar ZeroSums.
func (s *Set) FindZeroSums(taus []float32, stride, n int, p *VoteParams, scratch []float32, fn func(j int)) {
	if p.Consensus != ConsensusSum {
		ZeroSums(taus, stride, n, p, fn)
		return
	}
	sum := VoteParams{Weights: p.Weights, Consensus: ConsensusNone, Aggregate: AggregateSum}
	if !p.WeightedVote {
		sum.Weights = make([]float32, len(p.Weights))
		for i := range sum.Weights {
			sum.Weights[i] = 1
		}
	}
	big := sum
	big.Aggregate = AggregateMax
	sums, mags := scratch[:n], scratch[n:2*n]
	s.Vote(sums, taus, stride, &sum)
	s.Vote(mags, taus, stride, &big)
	for j := range sums {
		// sums[j] == 0 && mags[j] != 0 without branching on the sum, which
		// is zero about as often as not (wherever every value was trimmed).
		zero := uint64(math.Float32bits(sums[j])<<1) - 1        // bit 63 set iff ±0
		some := -uint64(math.Float32bits(mags[j]) & 0x7fffffff) // bit 63 set iff not ±0
		if (zero&some)>>63 != 0 {
			fn(j)
		}
	}
}

// ColumnDeltas computes, for the elements cols of a block stored as dt, the
// base values and each model's trimmed task vector, as Widen and DeltaTrim
// would: base[c] = θ₀ of element cols[c]; taus[i*len(cols)+c] = θ − θ₀ of
// model i, zero where its magnitude bits are below thr[i]. It reads the
// stored values in place, for the few columns a fused kernel reported
// (zero sums), where gathering them first and calling the kernels cost more.
func ColumnDeltas(base, taus []float32, baseSrc []byte, models [][]byte, dt DType, cols []int32, thr []uint32) {
	m := len(cols)
	base = base[:m]
	column(base, baseSrc, dt, cols)
	for i, src := range models {
		t, th := taus[i*m:(i+1)*m], thr[i]
		column(t, src, dt, cols)
		for c, v := range t {
			u := math.Float32bits(v - base[c])
			if u&0x7fffffff < th { // integers, for a conditional move, not a branch
				u = 0
			}
			t[c] = math.Float32frombits(u)
		}
	}
}

// column widens the elements cols of src (stored as dt) into dst, a loop per
// dtype: load's switch per value cost more than the values.
func column(dst []float32, src []byte, dt DType, cols []int32) {
	dst = dst[:len(cols)]
	switch dt {
	case BF16:
		for c, e := range cols {
			dst[c] = BF16ToF32(binary.LittleEndian.Uint16(src[2*int(e):]))
		}
	case F16:
		for c, e := range cols {
			dst[c] = F16ToF32(binary.LittleEndian.Uint16(src[2*int(e):]))
		}
	default:
		for c, e := range cols {
			dst[c] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*int(e):]))
		}
	}
}
