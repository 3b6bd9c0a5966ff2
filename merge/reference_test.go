package merge

import (
	"math"
	"sort"

	"github.com/tiesmm/tiesmm/kernels"
)

// A plain in-memory implementation of SEMANTICS.md, written without the
// kernels, the radix select or blocks: the property tests hold the engine to it.

type refTensor struct {
	base   []float32   // widened base values
	models [][]float32 // widened model values
	params TensorParams
	outDT  kernels.DType
}

// refMerge returns each tensor's merged float32 values (before rounding) and
// the elements kept per model.
func refMerge(m Method, ts []refTensor) ([][]float32, []uint64) {
	n := len(ts[0].models)
	taus := make([][][]float32, len(ts)) // tensor, model, element
	for t, rt := range ts {
		taus[t] = make([][]float32, n)
		for i := range n {
			taus[t][i] = make([]float32, len(rt.base))
			for e := range rt.base {
				taus[t][i][e] = rt.models[i][e] - rt.base[e]
			}
		}
	}
	kept := make([]uint64, n)
	if m.Trim {
		for i := range n {
			if m.Scope == ScopeModel {
				var all [][]float32
				for t := range ts {
					all = append(all, taus[t][i])
				}
				kept[i] += refTrim(all, ts[0].params.Density[i], m.Ties)
			} else {
				for t := range ts {
					kept[i] += refTrim([][]float32{taus[t][i]}, ts[t].params.Density[i], m.Ties)
				}
			}
		}
	}

	// The vote, with zero sums left for later when the majority decides them.
	out := make([][]float32, len(ts))
	type pending struct{ t, e int }
	var zero []pending
	total := 0
	for t, rt := range ts {
		out[t] = make([]float32, len(rt.base))
		for e := range rt.base {
			vals := make([]float32, n)
			votes := make([]float32, n)
			for i := range n {
				vals[i] = rt.params.Weights[i] * taus[t][i][e]
				votes[i] = taus[t][i][e]
				if m.Vote.WeightedVote {
					votes[i] = vals[i]
				}
			}
			var s float32
			any := false
			for _, v := range votes {
				if m.Vote.Consensus == kernels.ConsensusCount {
					if v > 0 {
						s += 1
					} else if v < 0 {
						s -= 1
					}
				} else {
					s += v
				}
				any = any || v != 0
			}
			if m.Vote.Consensus == kernels.ConsensusNone {
				out[t][e] = refAggregate(m, rt.params.Weights, vals, nil, 0)
				continue
			}
			switch {
			case s > 0:
				total++
				out[t][e] = refAggregate(m, rt.params.Weights, vals, votes, 1)
			case s < 0 || s != s:
				total--
				out[t][e] = refAggregate(m, rt.params.Weights, vals, votes, -1)
			case any && m.GlobalMajority:
				zero = append(zero, pending{t, e})
			default:
				out[t][e] = refAggregate(m, rt.params.Weights, vals, votes, 1)
			}
		}
	}
	majority := float32(-1) // the paper's code sends a zero total to the negative side
	if total > 0 {
		majority = 1
	}
	for _, z := range zero {
		rt := ts[z.t]
		vals := make([]float32, n)
		for i := range n {
			vals[i] = rt.params.Weights[i] * taus[z.t][i][z.e]
		}
		out[z.t][z.e] = refAggregate(m, rt.params.Weights, vals, vals, majority)
	}
	return out, kept
}

// refTrim zeroes the small magnitudes of the concatenation of parts in place.
func refTrim(parts [][]float32, density float64, rule TieRule) uint64 {
	var mags []uint32
	for _, p := range parts {
		for _, v := range p {
			mags = append(mags, math.Float32bits(v)&0x7fffffff)
		}
	}
	d := len(mags)
	if density >= 1 {
		return uint64(d)
	}
	k := int(float64(d) * density)
	if rule == KeepTies {
		k++
	}
	if k > d {
		return uint64(d)
	}
	sorted := append([]uint32(nil), mags...)
	sort.Slice(sorted, func(a, b int) bool { return sorted[a] > sorted[b] })
	thr := sorted[k-1]
	greater := 0
	for _, m := range mags {
		if m > thr {
			greater++
		}
	}
	ties := k - greater // ExactK: the first ties in flat order
	var kept uint64
	for _, p := range parts {
		for e, v := range p {
			mag := math.Float32bits(v) & 0x7fffffff
			keep := mag > thr || mag == thr && (rule == KeepTies || ties > 0)
			if mag == thr && rule == ExactK && ties > 0 {
				ties--
			}
			if keep {
				kept++
			} else {
				p[e] = 0
			}
		}
	}
	return kept
}

// refAggregate combines the values agreeing with sign g (votes nil: all).
func refAggregate(m Method, w, vals, votes []float32, g float32) float32 {
	var num, den, mx float32
	for i, a := range vals {
		if votes != nil && !(g > 0 && votes[i] > 0 || g < 0 && votes[i] < 0) {
			continue
		}
		num += a
		if m.Vote.DivideByWeights {
			den += w[i]
		} else {
			den += 1
		}
		mx = max(mx, float32(math.Abs(float64(a))))
	}
	switch m.Vote.Aggregate {
	case kernels.AggregateSum:
		return num
	case kernels.AggregateMax:
		return g * mx
	}
	if den == 0 {
		den = 1
	}
	return num / den
}

// refFinish rounds θ₀ + λ·τₘ to the output dtype and widens it back.
func refFinish(base, tm float32, lambda float32, dt kernels.DType) float32 {
	v := base + float32(lambda*tm)
	switch dt {
	case kernels.BF16:
		return kernels.BF16ToF32(kernels.F32ToBF16(v))
	case kernels.F16:
		return kernels.F16ToF32(kernels.F32ToF16(v))
	}
	return v
}
