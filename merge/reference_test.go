package merge

import (
	"fmt"
	"math"
	"math/big"
	"slices"
	"sort"

	"github.com/tiesmm/tiesmm/kernels"
)

// A plain in-memory implementation of SEMANTICS.md, written without the
// kernels, the radix select or blocks: the property tests hold the engine to it.

type refTensor struct {
	name   string
	shape  []int64
	base   []float32   // widened base values
	models [][]float32 // widened model values
	params TensorParams
	outDT  kernels.DType
}

// refMerge returns each tensor's merged float32 values (before rounding) and
// the elements kept per model.
func refMerge(m Method, ts []refTensor) ([][]float32, []uint64) {
	taus := refTaskVectors(m, ts)
	if m.ModelStock {
		return refModelStock(ts, taus), nil
	}
	kept := refSparsifyAll(m, ts, taus)

	// The vote, with zero sums left for later when the majority decides them.
	out := make([][]float32, len(ts))
	type pending struct{ t, e int }
	var zero []pending
	total := 0
	for t, rt := range ts {
		out[t] = make([]float32, len(rt.base))
		for e := range rt.base {
			v, elected, zeroSum := refVote(m, rt.params.Weights, taus[t], e)
			if zeroSum && m.GlobalMajority {
				zero = append(zero, pending{t, e})
				continue
			}
			out[t][e] = v
			total += elected
		}
	}
	majority := float32(-1) // the paper's code sends a zero total to the negative side
	if total > 0 {
		majority = 1
	}
	n := len(ts[0].models)
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

// refTaskVectors is every tensor's task vector per model: the model's values
// minus the base's (minus zero without a base).
func refTaskVectors(m Method, ts []refTensor) [][][]float32 {
	n := len(ts[0].models)
	taus := make([][][]float32, len(ts)) // tensor, model, element
	for t, rt := range ts {
		taus[t] = make([][]float32, n)
		for i := range n {
			taus[t][i] = make([]float32, len(rt.base))
			for e := range rt.base {
				taus[t][i][e] = rt.models[i][e] - rt.base[e]
				if m.NoBase {
					taus[t][i][e] = rt.models[i][e] - 0
				}
			}
		}
	}
	return taus
}

// refSparsifyAll trims or drops the task vectors in place and returns the
// elements kept per model.
func refSparsifyAll(m Method, ts []refTensor, taus [][][]float32) []uint64 {
	n := len(ts[0].models)
	kept := make([]uint64, n)
	switch {
	case m.Outliers || m.Drop != DropNone:
		for t, rt := range ts {
			for i := range n {
				kept[i] += refSparsify(m, rt, i, taus[t][i])
			}
		}
	case m.Trim && m.Scope == ScopeModel:
		for i := range n {
			var all [][]float32
			for t := range ts {
				all = append(all, taus[t][i])
			}
			kept[i] += refTrim(all, ts[0].params.Density[i], m.Ties)
		}
	case m.Trim:
		for i := range n {
			for t := range ts {
				kept[i] += refTrim([][]float32{taus[t][i]}, ts[t].params.Density[i], m.Ties)
			}
		}
	}
	return kept
}

// refVote is element e's vote and aggregate over the models' task vectors
// taus, with the sign elected (+1, −1; 0 without a vote or election) and
// whether the vote was an exact zero sum of some nonzero values (v is then
// the +1 result).
func refVote(m Method, weights []float32, taus [][]float32, e int) (v float32, elected int, zeroSum bool) {
	n := len(taus)
	vals := make([]float32, n)
	votes := make([]float32, n)
	for i := range n {
		vals[i] = weights[i] * taus[i][e]
		votes[i] = taus[i][e]
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
	switch {
	case m.Vote.Consensus == kernels.ConsensusNone:
		return refAggregate(m, weights, vals, nil, 0), 0, false
	case s > 0:
		return refAggregate(m, weights, vals, votes, 1), 1, false
	case s < 0 || s != s:
		return refAggregate(m, weights, vals, votes, -1), -1, false
	}
	return refAggregate(m, weights, vals, votes, 1), 0, any
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

// refSparsify applies breadcrumbs, DARE or DELLA with its rescale to one
// model's task vector of one tensor, in place.
func refSparsify(m Method, rt refTensor, i int, tau []float32) uint64 {
	d := rt.params.Density[i]
	raw := append([]float32(nil), tau...)
	n := len(tau)
	keep := make([]bool, n)
	p := make([]float64, n) // keep probabilities, for the inverse rescale
	key := streamKey(m.Seed, rt.name, i)
	switch {
	case d >= 1:
		for e := range keep {
			keep[e], p[e] = true, 1
		}
	case m.Outliers:
		// Rank by |τ| descending, position ascending; drop the top γ·n,
		// keep the next d·n (the top shrinking if both exceed n).
		order := make([]int, n)
		for e := range order {
			order[e] = e
		}
		sort.SliceStable(order, func(a, b int) bool {
			return math.Float32bits(tau[order[a]])&0x7fffffff > math.Float32bits(tau[order[b]])&0x7fffffff
		})
		target, top := int(d*float64(n)), int(rt.params.Gamma[i]*float64(n))
		top = max(0, min(top, n-target))
		for _, e := range order[top : top+target] {
			keep[e], p[e] = true, 1
		}
	case m.Drop == DropRandom:
		for e := range keep {
			keep[e], p[e] = uniform(key, int64(e)) < d, d
		}
	case m.Drop == DropDella:
		refDella(rt.shape, tau, d, rt.params.Epsilon[i], key, keep, p)
	}
	var kept uint64
	for e := range tau {
		switch {
		case !keep[e]:
			tau[e] = 0
		case m.Rescale == RescaleInverse && d < 1 && m.Drop != DropNone:
			tau[e] /= float32(p[e])
			kept++
		default:
			kept++
		}
	}
	if m.Rescale == RescaleL1 && d < 1 {
		before, after := refAbsSum(raw), refAbsSum(tau)
		if before >= 1e-7 && after >= 1e-7 {
			f := float32(before / after)
			for e := range tau {
				tau[e] *= f
			}
		}
	}
	return kept
}

// refAbsSum is Σ|x| exactly, rounded once.
func refAbsSum(xs []float32) float64 {
	vals := make([]float64, len(xs))
	for e, x := range xs {
		vals[e] = math.Abs(float64(x))
	}
	return refExactSum(vals)
}

func refDot(a, b []float32) float64 {
	vals := make([]float64, len(a))
	for e := range a {
		vals[e] = float64(a[e]) * float64(b[e])
	}
	return refExactSum(vals)
}

// refExactSum adds exactly with big.Float; NaN, or +Inf with −Inf, give NaN.
func refExactSum(vals []float64) float64 {
	s := new(big.Float).SetPrec(2300)
	pinf, ninf := false, false
	for _, v := range vals {
		switch {
		case math.IsNaN(v):
			return math.NaN()
		case math.IsInf(v, 1):
			pinf = true
		case math.IsInf(v, -1):
			ninf = true
		default:
			s.Add(s, new(big.Float).SetFloat64(v))
		}
	}
	switch {
	case pinf && ninf:
		return math.NaN()
	case pinf:
		return math.Inf(1)
	case ninf:
		return math.Inf(-1)
	}
	v, _ := s.Float64()
	return v
}

// refModelStock returns, per tensor, t·mean(θᵢ) + (1−t)·θ₀ as a "merged task
// vector" for refFinish with base (1−t)·θ₀ and λ = t: out[t][e] holds the
// mean, and the tensor's t and scaled base are returned through ts.
func refModelStock(ts []refTensor, taus [][][]float32) [][]float32 {
	out := make([][]float32, len(ts))
	for t, rt := range ts {
		n := len(rt.models)
		var cos float64
		for i := range n {
			for k := i + 1; k < n; k++ {
				c := refDot(taus[t][i], taus[t][k]) /
					max(math.Sqrt(refDot(taus[t][i], taus[t][i]))*math.Sqrt(refDot(taus[t][k], taus[t][k])), 1e-6)
				cos += max(-1, min(1, c))
			}
		}
		cos /= float64(n * (n - 1) / 2)
		tt := float32(float64(n) * cos / (1 + float64(n-1)*cos))
		out[t] = make([]float32, len(rt.base))
		scaled := make([]float32, len(rt.base))
		for e := range rt.base {
			var s float32
			for i := range n {
				s += rt.models[i][e]
			}
			out[t][e] = s / float32(n)
			scaled[e] = float32((1 - tt) * rt.base[e])
		}
		ts[t].base, ts[t].params.Lambda = scaled, tt
	}
	return out
}

// sameFloat compares bit for bit, except that any two NaNs match: which NaN
// payload survives an operation on two NaNs is the architecture's rule
// (kernels pins it, and its tests hold every set to it); the reference here
// does not model it.
func sameFloat(a, b float32) bool {
	return math.Float32bits(a) == math.Float32bits(b) || a != a && b != b
}

// refDella is mergekit's DELLA rule on one task vector, written from
// coordinates: a vector is one line; otherwise a line is every element that
// shares all indices but that of dimension 1 (for a matrix: its rows). In a
// line of r elements, ranked by |τ| ascending with ties by position, rank k
// keeps with probability d − ε + 2ε·k/(r − 1) (d for r = 1).
func refDella(shape []int64, tau []float32, d, eps float64, key uint64, keep []bool, p []float64) {
	n := len(tau)
	lines := map[string][]int{} // the indices but dimension 1's → the line's flat indices, in order
	var keys []string
	for e := range n {
		id := "vector"
		if len(shape) >= 2 {
			idx := make([]int64, len(shape))
			rest := int64(e)
			for k := len(shape) - 1; k >= 0; k-- {
				idx[k], rest = rest%shape[k], rest/shape[k]
			}
			idx[1] = -1
			id = fmt.Sprint(idx)
		}
		if _, ok := lines[id]; !ok {
			keys = append(keys, id)
		}
		lines[id] = append(lines[id], e)
	}
	for _, id := range keys {
		line := slices.Clone(lines[id])
		r := len(line)
		sort.SliceStable(line, func(a, b int) bool {
			return math.Float32bits(tau[line[a]])&0x7fffffff < math.Float32bits(tau[line[b]])&0x7fffffff
		})
		for rank, e := range line {
			norm := 0.5
			if r > 1 {
				norm = float64(rank) / float64(r-1)
			}
			p[e] = d - eps + norm*2*eps
			keep[e] = uniform(key, int64(e)) < p[e]
		}
	}
}
