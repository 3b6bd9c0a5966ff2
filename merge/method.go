// Package merge owns the merge itself: it turns a method and its parameters
// into a plan over the tensors of a base model and its fine-tunes (every
// check that headers allow, before any data is read), then streams the
// tensors block by block through the kernels into the output, in as many
// passes as the method needs.
package merge

import (
	"fmt"

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

// Method is a merge method with every detail resolved.
type Method struct {
	Name   string // "ties" or "task_arithmetic"
	Preset string // "paper", "mergekit", "peft" for ties
	Trim   bool
	Scope  Scope
	Ties   TieRule
	// Vote carries consensus, aggregate and weighting; its Weights are
	// filled per tensor.
	Vote kernels.VoteParams
	// GlobalMajority settles exact zero sums with the sign of the model-wide
	// sum of elected signs (the paper), instead of +1.
	GlobalMajority bool
	// ApproxTopK stops the model-scope selection after the high-bits pass.
	ApproxTopK bool
}

// Defaults are the values a parameter takes when the config leaves it unset.
type Defaults struct {
	Density float64
	Lambda  float64
	Weight  float64
}

// NewMethod resolves a method name and (for ties) a preset to its details,
// before any explicit override.
func NewMethod(name, preset string) (Method, Defaults, error) {
	d := Defaults{Density: 1, Lambda: 1, Weight: 1}
	switch name {
	case "task_arithmetic":
		return Method{Name: name, Vote: kernels.VoteParams{Consensus: kernels.ConsensusNone, Aggregate: kernels.AggregateSum}}, d, nil
	case "ties":
	default:
		return Method{}, d, fmt.Errorf("merge method %q is not supported (supported: ties, task_arithmetic)", name)
	}
	m := Method{Name: name, Preset: preset, Trim: true}
	switch preset {
	case "paper":
		m.Scope, m.Ties, m.GlobalMajority = ScopeModel, KeepTies, true
		m.Vote = kernels.VoteParams{Consensus: kernels.ConsensusSum, Aggregate: kernels.AggregateMean}
		d.Density = 0.2
	case "mergekit":
		m.Scope, m.Ties = ScopeTensor, ExactK
		m.Vote = kernels.VoteParams{Consensus: kernels.ConsensusSum, Aggregate: kernels.AggregateMean,
			WeightedVote: true, DivideByWeights: true}
	case "peft":
		m.Scope, m.Ties = ScopeTensor, ExactK
		m.Vote = kernels.VoteParams{Consensus: kernels.ConsensusSum, Aggregate: kernels.AggregateMean}
	default:
		return Method{}, d, fmt.Errorf("ties preset %q is unknown (want paper, mergekit or peft)", preset)
	}
	return m, d, nil
}

// SetNormalize applies mergekit's normalize: true divides the sum by the
// agreeing weights (ties) or by all weights (task_arithmetic).
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
	Lambda  float32
}

// Resolver gives the parameters of one tensor (layer < 0 outside numbered layers).
type Resolver func(tensor string, layer, layers int) (TensorParams, error)
