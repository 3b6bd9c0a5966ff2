//go:build !noasm && !purego && gc

package kernels

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
)

// isaSet is the set that runs the kernels of isa, or nil on a CPU without it.
func isaSet(isa string) *Set {
	for _, s := range Available() {
		if s.Name == isa {
			return s
		}
	}
	return nil
}

func sameFunc(a, b any) bool { return reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer() }

// kernelWeights draws weights that select weighting wt: unit for weight1,
// otherwise mixed or non-finite ones with at least one that is not 1.
func kernelWeights(r *rand.Rand, nm, wt, k int) []float32 {
	if wt == weight1 {
		return ones(nm)
	}
	w := randWeights(r, nm, 1+k%2)
	if AbsBits(w[0]) == 0x3f800000 {
		w[0] = 0.5
	}
	return w
}

// TestEveryTiesKernel runs each generated fused kernel, checking the
// dispatch picks it, against the reference bit for bit: every model count,
// both aggregates, with Equal and zero-sum indices, over lengths with every
// tail and inputs full of NaNs, ±0, ±Inf and subnormals.
func TestEveryTiesKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	ns := []int{1, 7, 8, 15, 16, 17, 31, 33, 77, 256 + 13}
	for _, k := range tiesKernels {
		s := isaSet(k.isa)
		if s == nil {
			t.Logf("%s: no %s here", k.name, k.isa)
			continue
		}
		for nm := 1; nm <= tiesMaxModels; nm++ {
			for q, n := range ns {
				in := randTiesInputs(r, k.dt, nm, n)
				if q%2 == 1 {
					in.thresholdsAt(r)
				}
				for _, agg := range []Aggregate{AggregateMean, AggregateSum} {
					p := VoteParams{Weights: kernelWeights(r, nm, k.wt, q), WeightedVote: k.wt == weightW,
						Aggregate: agg, DivideByWeights: k.wt == weight1 && q%3 == 0}
					b := &TiesBlock{OutDT: k.dt, DT: k.dt, Models: in.models, Thr: in.thr, Vote: &p,
						Kept: make([]int, nm)}
					fn, flags := tiesFused(b, k.isa == "avx512")
					if !sameFunc(fn, k.fn) || (flags&tiesFlagMean != 0) != (agg == AggregateMean) {
						t.Fatalf("%s: %d models %+v picks another kernel or flags %#x", k.name, nm, p, flags)
					}
					checkTies(t, s, in, k.dt, &p, []float32{1, 0.7, -1.5}[q%3])
				}
			}
		}
	}
}

// TestEveryVoteKernel runs each generated vote kernel, checking the dispatch
// picks it, against the reference bit for bit over lengths with every tail.
func TestEveryVoteKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(43, 44))
	for _, k := range voteKernels {
		s := isaSet(k.isa)
		if s == nil {
			t.Logf("%s: no %s here", k.name, k.isa)
			continue
		}
		for _, nm := range []int{1, 2, 3, 5, 8, 9} {
			for q, n := range []int{1, 7, 8, 16, 17, 33, 100} {
				p := VoteParams{Weights: kernelWeights(r, nm, k.wt, q), WeightedVote: k.wt == weightW, Consensus: k.cons}
				switch k.agg {
				case voteAggMeanW:
					p.DivideByWeights = true
				case voteAggSum:
					p.Aggregate = AggregateSum
				case voteAggMax:
					p.Aggregate = AggregateMax
				}
				if fn := voteKernelFor(&p, k.isa == "avx512"); !sameFunc(fn, k.fn) {
					t.Fatalf("%s: %+v picks another kernel", k.name, p)
				}
				stride := n + q%3
				taus := randFloats(r, stride*(nm-1)+n)
				checkVote(t, []*Set{s}, fmt.Sprintf("%s models=%d", k.name, nm), taus, stride, n, &p)
			}
		}
	}
}
