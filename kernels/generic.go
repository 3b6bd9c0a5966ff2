package kernels

import (
	"encoding/binary"
	"math"
	"runtime"
)

// Generic is the portable Go set: always compiled, the reference every
// assembly set is tested against. Its arithmetic order is the contract:
// per element, models are visited in order 0..n−1, each operation rounds to
// float32, and nothing is fused (float32(a*b)+c stops Go from emitting FMA).
var Generic = &Set{
	Name:       "go",
	Widen:      widenGeneric,
	DeltaTrim:  deltaTrimGeneric,
	Vote:       voteGeneric,
	Finish:     finishGeneric,
	Range:      rangeGeneric,
	DeltaRange: deltaRangeGeneric,
	Norms:      normsGeneric,
	Dot:        dotGeneric,
	TrimWords:  trimWordsGeneric,
	LowBits:    lowBitsGeneric,
	EMRElect:   emrElectGeneric,
}

func init() { Generic.Ties = stagedTies(Generic) }

func load(src []byte, dt DType, i int) float32 {
	switch dt {
	case BF16:
		return BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	case F16:
		return F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	default:
		return math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func store(dst []byte, dt DType, i int, f float32) {
	switch dt {
	case BF16:
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(f))
	case F16:
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(f))
	default:
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(f))
	}
}

func widenGeneric(dst []float32, src []byte, dt DType) {
	_ = src[:len(dst)*dt.Size()]
	for i := range dst {
		dst[i] = load(src, dt, i)
	}
}

func deltaTrimGeneric(tau []float32, src []byte, dt DType, base []float32, thrBits uint32) int {
	_, _ = base[:len(tau)], src[:len(tau)*dt.Size()]
	kept := 0
	for i := range tau {
		t := load(src, dt, i) - base[i]
		if AbsBits(t) < thrBits {
			t = 0
		} else {
			kept++
		}
		tau[i] = t
	}
	return kept
}

// sign is +1, −1 or 0 (NaN counts as 0).
func sign(v float32) float32 {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}

func voteGeneric(out []float32, taus []float32, stride int, p *VoteParams) VoteStats {
	n := len(p.Weights)
	var st VoteStats
	for j := range out {
		// The vote: s sums vote values (or their signs).
		var s float32
		pos, neg, nonzero := false, false, false
		for i := 0; i < n; i++ {
			v := taus[i*stride+j]
			if p.WeightedVote {
				v = float32(p.Weights[i] * v)
			}
			if p.Consensus == ConsensusCount {
				s += sign(v)
			} else {
				s += v
			}
			pos = pos || v > 0
			neg = neg || v < 0
			nonzero = nonzero || v != 0
		}
		if pos && neg {
			st.Conflicts++
		}
		up := !(s < 0) && s == s // s ≥ 0; NaN elects −1
		if p.Consensus != ConsensusNone {
			switch {
			case s > 0:
				st.Positive++
			case !up:
				st.Negative++
			case nonzero: // s is ±0 though some value is not
				st.ZeroSum++
			}
		}

		// The disjoint aggregate over values agreeing with the elected sign.
		var num, den, mx float32
		for i := 0; i < n; i++ {
			t := taus[i*stride+j]
			a := mul(p.Weights[i], t)
			v := t
			if p.WeightedVote {
				v = a
			}
			if p.Consensus != ConsensusNone && !(up && v > 0 || !up && v < 0) {
				continue
			}
			num = add(a, num)
			if p.DivideByWeights {
				den = add(p.Weights[i], den)
			} else {
				den++
			}
			if m := float32(math.Abs(float64(a))); m > mx {
				mx = m
			}
		}
		switch p.Aggregate {
		case AggregateSum:
			out[j] = num
		case AggregateMax:
			if up {
				out[j] = mx
			} else {
				out[j] = -mx
			}
		default:
			if den == 0 {
				den = 1
			}
			out[j] = num / den
		}
	}
	return st
}

func finishGeneric(dst []byte, dt DType, base, tm []float32, lambda float32) {
	_, _ = base[:len(tm)], dst[:len(tm)*dt.Size()]
	for i := range tm {
		store(dst, dt, i, add(base[i], mul(lambda, tm[i])))
	}
}

// mul and add are a·b and a+b rounded to float32 (never fused into an FMA),
// with the NaN that a result carries pinned down. When both operands are NaN
// the hardware keeps one of them by position, and the Go compiler may swap
// the operands of a commutative operation (it does, depending on the target
// and on instrumentation): nanPick applies this architecture's rule to the
// operands in the order written here, which is the order the assembly sets
// use. Only the vote's products and sums that reach the output go through
// them; the vote sum s is only compared, so its payload does not matter.
func mul(a, b float32) float32 {
	r := float32(a * b)
	if r != r {
		return nanPick(a, b, r)
	}
	return r
}

func add(a, b float32) float32 {
	r := float32(a + b)
	if r != r {
		return nanPick(a, b, r)
	}
	return r
}

// nanPick is the NaN an operation on a and b returns, r being what it
// returned: x86 (SSE/AVX) keeps the first NaN operand, arm64 (FPCR.DN = 0, as
// Go runs) a signalling one first, then the first; either is quieted. A NaN
// made from non-NaN operands (∞−∞, 0·∞) is the same whatever the order.
func nanPick(a, b, r float32) float32 {
	const quiet = 0x00400000
	ua, ub := math.Float32bits(a), math.Float32bits(b)
	if runtime.GOARCH == "arm64" {
		if a != a && ua&quiet == 0 {
			return math.Float32frombits(ua | quiet)
		}
		if b != b && ub&quiet == 0 {
			return math.Float32frombits(ub | quiet)
		}
	}
	if a != a {
		return math.Float32frombits(ua | quiet)
	}
	if b != b {
		return math.Float32frombits(ub | quiet)
	}
	return r
}

// rangeGeneric writes an index for every value and advances past it only
// when the value is in range: no branch on the data, which in the engine's
// uses is in range in a few percent of places, scattered.
func rangeGeneric(tau []float32, lo, hi uint32, idx []int32) int {
	if lo > hi {
		return 0
	}
	width := hi - lo
	count := 0
	if idx == nil {
		for _, v := range tau {
			count += b2i(AbsBits(v)-lo <= width)
		}
		return count
	}
	idx = idx[:len(tau)]
	for i, v := range tau {
		idx[count] = int32(i)
		count += b2i(AbsBits(v)-lo <= width)
	}
	return count
}

func deltaRangeGeneric(src []byte, dt DType, base []float32, lo, hi uint32, idx []int32) (above, inside int) {
	_ = src[:len(base)*dt.Size()]
	width := hi - lo
	if idx != nil {
		idx = idx[:len(base)]
	}
	for i, b := range base {
		m := AbsBits(load(src, dt, i) - b)
		above += b2i(m > hi)
		if idx != nil {
			idx[inside] = int32(i)
		}
		inside += b2i(m-lo <= width)
	}
	return above, inside
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func emrElectGeneric(b *EMRBlock) { emrElectChunks(b, 0) }

// emrElectChunks runs EMRElect's reference from chunk c0 on.
func emrElectChunks(b *EMRBlock, c0 int) {
	n, N := len(b.U), b.Tasks
	nc := EMRChunks(n)
	_, _, _, _ = b.ASum[:N*nc], b.BSum[:N*nc], b.AMin[:N*nc], b.BMin[:N*nc]
	_ = b.Taus[(N-1)*b.Stride : (N-1)*b.Stride+n]
	_ = b.Mask[(N-1)*b.Row : (N-1)*b.Row+(n+7)/8]
	var neg [EMRChunk]uint32 // γ's sign bit
	for c := c0; c < nc; c++ {
		lo, hi := c*EMRChunk, min(n, c*EMRChunk+EMRChunk)
		top := b.U[lo:hi]
		for e := lo; e < hi; e++ {
			s := b.Taus[e]
			for t := 1; t < N; t++ {
				s += b.Taus[t*b.Stride+e]
			}
			neg[e-lo] = ^positive(s) & (1 << 31)
			top[e-lo] = 0
		}
		for t := range N {
			tau := b.Taus[t*b.Stride+lo : t*b.Stride+hi]
			mask := b.Mask[t*b.Row+lo/8 : t*b.Row+(hi+7)/8]
			clear(mask)
			var s [16]float64
			m1 := ^uint32(0)
			for x, v := range tau {
				u := math.Float32bits(v)
				p := u ^ neg[x]
				agree := positive(math.Float32frombits(p))
				mask[x>>3] |= byte(agree&1) << (x & 7)
				// Non-negative floats order as their bits do.
				top[x] = math.Float32frombits(max(math.Float32bits(top[x]), p&agree))
				a := u &^ (1 << 31)
				s[x&15] += float64(math.Float32frombits(a))
				m1 = min(m1, a-1)
			}
			b.ASum[c*N+t], b.AMin[c*N+t] = emrSum16(&s), m1
		}
		for t := range N {
			mask := b.Mask[t*b.Row+lo/8 : t*b.Row+(hi+7)/8]
			var s [16]float64
			m1 := ^uint32(0)
			for x, v := range top {
				keep := -uint32(mask[x>>3] >> (x & 7) & 1)
				a := math.Float32bits(v) & keep
				s[x&15] += float64(math.Float32frombits(a))
				m1 = min(m1, a-1)
			}
			b.BSum[c*N+t], b.BMin[c*N+t] = emrSum16(&s), m1
		}
		for x, v := range top {
			u := math.Float32bits(v)
			top[x] = math.Float32frombits(u | neg[x]&-((u|-u)>>31)) // γ's sign unless U = +0
		}
	}
}
