// Package merge owns the merge itself: it turns a method and its parameters
// into a plan over the tensors of a base model and its fine-tunes (every
// check that headers allow, before any data is read), then streams the
// tensors block by block through the kernels into the output, in as many
// passes as the method needs.
package merge

import (
	"fmt"
	"strings"

	"github.com/tiesmm/tiesmm/kernels"
)

// Scope is the set of elements one trim threshold is chosen over.
type Scope uint8

const (
	ScopeTensor Scope = iota // one threshold per tensor and model
	ScopeModel               // one threshold per model over every merged element
)

func (s Scope) String() string {
	if s == ScopeModel {
		return "model"
	}
	return "tensor"
}

// TieRule says how many elements a trim keeps, and which, at the threshold.
type TieRule uint8

const (
	// KeepTies keeps |τ| ≥ the k-th largest with k = ⌊d·density⌋+1, every tie
	// included (the paper's code).
	KeepTies TieRule = iota
	// ExactK keeps exactly k = ⌊n·density⌋, ties broken toward the lowest
	// flat index (mergekit and peft).
	ExactK
)

// Drop is a random sparsification of task vectors, before the vote.
type Drop uint8

const (
	DropNone   Drop = iota
	DropRandom      // DARE: keep each element with probability density
	DropDella       // DELLA: keep with a probability that grows with |τ|'s rank in its row
)

// Rescale makes up for what a sparsification removed.
type Rescale uint8

const (
	RescaleNone    Rescale = iota
	RescaleL1              // scale the kept values so the tensor's L1 norm is unchanged (mergekit)
	RescaleInverse         // divide each kept value by its keep probability (the DARE paper)
)

// Method is a merge method with every detail resolved.
type Method struct {
	Name   string // mergekit's name: ties, dare_ties, linear, ...
	Preset string // "paper", "mergekit", "peft" for the methods that vote
	// Trim keeps the largest |τ| by an exact top-k; with Outliers the
	// largest gamma fraction is dropped first (breadcrumbs).
	Trim     bool
	Outliers bool
	Scope    Scope
	Ties     TieRule
	Drop     Drop
	Rescale  Rescale
	Seed     uint64
	// NoBase merges the models' values rather than their task vectors (linear).
	NoBase bool
	// ModelStock interpolates between the base and the models' mean by the
	// angle between task vectors.
	ModelStock bool
	// Vote carries consensus, aggregate and weighting; its Weights are
	// filled per tensor.
	Vote kernels.VoteParams
	// GlobalMajority settles exact zero sums with the sign of the model-wide
	// sum of elected signs (the paper), instead of +1.
	GlobalMajority bool
	// ApproxTopK stops the model-scope selection after the high-bits pass.
	ApproxTopK bool
	// Slerp interpolates spherically between two vectors (slerp, nuslerp),
	// each vector a tensor or, for nuslerp, a row or column (SlerpAxis).
	Slerp     SlerpKind
	SlerpAxis SlerpAxis
}

// Sparsifies reports whether task vectors lose elements before the vote.
func (m Method) Sparsifies() bool { return m.Trim || m.Drop != DropNone }

// Defaults are the values a parameter takes when the config leaves it unset.
type Defaults struct {
	Density float64
	Lambda  float64
	Weight  float64
	Gamma   float64
	Epsilon float64
}

var methods = []string{"task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
	"breadcrumbs_ties", "della", "della_linear", "linear", "model_stock", "slerp", "nuslerp"}

// NewMethod resolves a method name and (for the methods that vote) a preset
// to its details, with mergekit's defaults, before any explicit override.
func NewMethod(name, preset string) (Method, Defaults, error) {
	d := Defaults{Density: 1, Lambda: 1, Weight: 1, Gamma: 0.01, Epsilon: 0.15}
	m := Method{Name: name, Ties: ExactK}
	linear := kernels.VoteParams{Consensus: kernels.ConsensusNone, Aggregate: kernels.AggregateSum}
	votes := false
	switch name {
	case "task_arithmetic":
		m.Vote = linear
	case "linear":
		m.NoBase, m.Vote = true, linear
		m.SetNormalize(true)
	case "model_stock":
		m.ModelStock = true
	case "slerp":
		m.Slerp, m.Vote = SlerpPair, linear
	case "nuslerp":
		m.Slerp, m.Vote = SlerpNu, linear
	case "ties":
		m.Trim, votes = true, true
	case "dare_ties":
		m.Drop, m.Rescale, votes = DropRandom, RescaleL1, true
	case "dare_linear":
		m.Drop, m.Rescale, m.Vote = DropRandom, RescaleL1, linear
	case "breadcrumbs":
		m.Trim, m.Outliers, m.Vote = true, true, linear
	case "breadcrumbs_ties":
		m.Trim, m.Outliers, votes = true, true, true
	case "della":
		m.Drop, m.Rescale, votes = DropDella, RescaleL1, true
	case "della_linear":
		m.Drop, m.Rescale, m.Vote = DropDella, RescaleL1, linear
	default:
		return Method{}, d, fmt.Errorf("merge method %q is not supported (supported: %s)", name, strings.Join(methods, ", "))
	}
	if !votes {
		return m, d, nil
	}
	m.Preset = preset
	switch preset {
	case "paper":
		m.Scope, m.Ties, m.GlobalMajority = ScopeModel, KeepTies, true
		m.Vote = kernels.VoteParams{Consensus: kernels.ConsensusSum, Aggregate: kernels.AggregateMean}
		if name == "ties" {
			d.Density = 0.2
		}
	case "mergekit":
		m.Scope = ScopeTensor
		m.Vote = kernels.VoteParams{Consensus: kernels.ConsensusSum, WeightedVote: true}
		// mergekit normalizes ties and della by default, not the others.
		m.SetNormalize(name == "ties" || name == "della")
	case "peft":
		m.Scope = ScopeTensor
		m.Vote = kernels.VoteParams{Consensus: kernels.ConsensusSum, Aggregate: kernels.AggregateMean}
	default:
		return Method{}, d, fmt.Errorf("preset %q is unknown (want paper, mergekit or peft)", preset)
	}
	if m.Outliers || m.Drop != DropNone {
		m.Scope = ScopeTensor // breadcrumbs, DARE and DELLA work per tensor
	}
	return m, d, nil
}

// SetNormalize applies mergekit's normalize: true divides the sum by the
// agreeing weights (voting methods) or by all weights (the others).
func (m *Method) SetNormalize(on bool) {
	if on {
		m.Vote.Aggregate, m.Vote.DivideByWeights = kernels.AggregateMean, true
	} else {
		m.Vote.Aggregate, m.Vote.DivideByWeights = kernels.AggregateSum, false
	}
}

// ParseScope, ParseConsensus and ParseAggregate read the config's names.
func ParseScope(s string) (Scope, error) {
	switch s {
	case "model":
		return ScopeModel, nil
	case "tensor":
		return ScopeTensor, nil
	}
	return 0, fmt.Errorf("trim_scope %q: want model or tensor", s)
}

func ParseConsensus(s string) (kernels.Consensus, error) {
	switch s {
	case "sum", "mass", "total":
		return kernels.ConsensusSum, nil
	case "count", "frequency":
		return kernels.ConsensusCount, nil
	}
	return 0, fmt.Errorf("consensus %q: want sum or count", s)
}

// ParseRescale reads mergekit's rescale (true, false) or tiesmm's l1 and inverse.
func ParseRescale(s string) (Rescale, error) {
	switch s {
	case "false":
		return RescaleNone, nil
	case "true", "l1":
		return RescaleL1, nil
	case "inverse":
		return RescaleInverse, nil
	}
	return 0, fmt.Errorf("rescale %q: want true, false, l1 or inverse", s)
}

func ParseAggregate(s string) (kernels.Aggregate, error) {
	switch s {
	case "mean":
		return kernels.AggregateMean, nil
	case "sum":
		return kernels.AggregateSum, nil
	case "max":
		return kernels.AggregateMax, nil
	}
	return 0, fmt.Errorf("aggregate %q: want mean, sum or max", s)
}

// TensorParams are the per-tensor values of the parameters, one per model.
type TensorParams struct {
	Density []float64
	Weights []float32
	Gamma   []float64 // breadcrumbs
	Epsilon []float64 // della
	Lambda  float32
	T       float64 // slerp's t; nuslerp's w1/(w0+w1)
}

// Resolver gives the parameters of one tensor (layer < 0 outside numbered layers).
type Resolver func(tensor string, layer, layers int) (TensorParams, error)
