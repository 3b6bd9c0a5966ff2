// Package merge owns the merge itself: it turns a method and its parameters
// into a plan over the tensors of a base model and its fine-tunes (every
// check that headers allow, before any data is read), then streams the
// tensors block by block through the kernels into the output, in as many
// passes as the method needs.
package merge

import (
	"fmt"
	"math"
	"strings"

	"github.com/tiesmm/tiesmm/config"
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
	RescaleMean            // emr: rescalers from per-tensor means of |τ| and |M·U| (emr.go)
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
	// Sphere: multislerp or karcher, from the inputs' Gram matrix (gram.go).
	Sphere Sphere
	// OwnPath, if not PathCopy, is the path of a method that neither votes
	// nor trims: nearswap, sce, arcee_fusion, pcb.
	OwnPath Path
	// Vote carries consensus, aggregate and weighting; its Weights are
	// filled per tensor.
	Vote kernels.VoteParams
	// GlobalMajority settles exact zero sums with the sign of the model-wide
	// sum of elected signs (the paper), instead of +1.
	GlobalMajority bool
	// ApproxTopK stops the model-scope selection after the high-bits pass.
	ApproxTopK bool
	// Compute is the dtype the arithmetic rounds to: F32 (every operation
	// in float32, one rounding to the output at the end) or BF16 (each of
	// mergekit's torch operations rounded to bf16, as under its dtype:
	// bfloat16; the methods CheckCompute accepts).
	Compute kernels.DType
	// Slerp interpolates spherically between two vectors (slerp, nuslerp),
	// each vector a tensor or, for nuslerp, a row or column (SlerpAxis).
	Slerp     SlerpKind
	SlerpAxis SlerpAxis
	// PCB: PCB-Merging's settings (pcb.go).
	PCB PCB
}

// Votes reports whether the method elects a sign per element and merges
// only the values that agree with it.
func (m Method) Votes() bool { return m.Vote.Consensus != kernels.ConsensusNone }

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

// NewMethod resolves a method name and (for the methods that vote) a preset
// to its details, with mergekit's defaults, before any explicit override.
func NewMethod(name, preset string) (Method, Defaults, error) {
	d := Defaults{Density: 1, Lambda: 1, Weight: 1, Gamma: 0.01, Epsilon: 0.15}
	// Every method but those that vote sums without electing a sign.
	linear := kernels.VoteParams{Consensus: kernels.ConsensusNone, Aggregate: kernels.AggregateSum}
	m := Method{Name: name, Ties: ExactK, Vote: linear}
	votes := false
	switch name {
	case "task_arithmetic":
	case "linear":
		m.NoBase = true
		m.SetNormalize(true)
	case "model_stock":
		m.ModelStock = true
	case "multislerp":
		m.Sphere = Sphere{Kind: SphereMultislerp, NormalizeWeights: true, Eps: 1e-8}
	case "karcher":
		m.NoBase, m.Sphere = true, Sphere{Kind: SphereKarcher, MaxIter: 10, Tol: 1e-5}
	case "nearswap":
		m.OwnPath = PathNearSwap
	case "sce":
		m.OwnPath = PathSCE
	case "arcee_fusion":
		m.OwnPath = PathArceeFusion
	case "emr":
		m.OwnPath, m.Rescale, m.Vote = PathEMR, RescaleMean, linear
	case "pcb":
		m.OwnPath, m.PCB = PathPCB, defaultPCB()
	case "slerp":
		m.Slerp = SlerpPair
	case "nuslerp":
		m.Slerp = SlerpNu
	case "passthrough":
		// One model: x·scale, or x itself, copied (Plan.passThrough).
		m.NoBase = true
	case "ties":
		m.Trim, votes = true, true
	case "dare_ties":
		m.Drop, m.Rescale, votes = DropRandom, RescaleL1, true
	case "dare_linear":
		m.Drop, m.Rescale = DropRandom, RescaleL1
	case "breadcrumbs":
		m.Trim, m.Outliers = true, true
	case "breadcrumbs_ties":
		m.Trim, m.Outliers, votes = true, true, true
	case "della":
		m.Drop, m.Rescale, votes = DropDella, RescaleL1, true
	case "della_linear":
		m.Drop, m.Rescale = DropDella, RescaleL1
	default:
		return Method{}, d, fmt.Errorf("merge method %q is not supported (supported: %s)", name, strings.Join(config.KnownMethods(), ", "))
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
	// Weights64 are the weights as written, which the bf16 compute rounds
	// to bf16 from float64 as torch does; nil: Weights.
	Weights64 []float64
	Gamma     []float64 // breadcrumbs
	Epsilon   []float64 // della
	// T is slerp's and nearswap's t, nuslerp's w1/(w0+w1); SelectTopK is
	// sce's select_topk (global values).
	T, SelectTopK float64
	Lambda        float32
}

// Resolver gives the parameters of one tensor (layer < 0 outside numbered layers).
type Resolver func(tensor string, layer, layers int) (TensorParams, error)

// SliceResolver gives the parameters of output tensor out of slice k, at
// gradient position t of the slice, its merged models reading the input
// tensors named in (one per model).
type SliceResolver func(k int, out string, in []string, t float64) (TensorParams, error)

// normalizeGuard is mergekit's floor on the divisor of the linear-combination
// methods: with normalize on, a sum of weights smaller in magnitude than this
// divides by 1 instead.
const normalizeGuard = 1e-8

// linearNormalize reports whether the method divides Σ w·τ by Σ w over every
// model (normalize on a method without a vote and with a base): the methods
// whose divisor mergekit guards with normalizeGuard. linear is not among
// them: mergekit divides its sum unguarded.
func (m Method) linearNormalize() bool {
	return !m.NoBase && !m.ModelStock && m.Vote.Consensus == kernels.ConsensusNone &&
		m.Vote.Aggregate == kernels.AggregateMean && m.Vote.DivideByWeights
}

// weightSum is Σ w in float32, in model order, as the vote's divisor sums it.
func weightSum(ws []float32) float32 {
	var s float32
	for _, w := range ws {
		s = float32(s + w)
	}
	return s
}

// guarded reports whether job ji's divisor Σ w falls under mergekit's guard:
// the job then divides by 1.
func (p *Plan) guarded(ji int) bool {
	j := &p.Jobs[ji]
	if j.Copy || !p.Method.linearNormalize() {
		return false
	}
	s := weightSum(j.Params.Weights)
	return math.Abs(float64(s)) < normalizeGuard
}

// jobVote is the vote and aggregate of job ji: the method's with the
// tensor's weights, dividing by 1 where mergekit's guard applies.
func (p *Plan) jobVote(ji int) kernels.VoteParams {
	v := p.Method.Vote
	v.Weights = p.Jobs[ji].Params.Weights
	if p.guarded(ji) {
		v.Aggregate, v.DivideByWeights = kernels.AggregateSum, false
	}
	return v
}

// warnNormalizeGuard names the tensors whose sum of weights is too small
// to divide by.
func (p *Plan) warnNormalizeGuard(add func(code, model, tensor, format string, args ...any)) {
	var names []string
	var sum float32
	for ji, j := range p.Jobs {
		if p.guarded(ji) {
			if len(names) == 0 {
				sum = weightSum(j.Params.Weights)
			}
			names = append(names, j.Name)
		}
	}
	if len(names) == 0 {
		return
	}
	add(WarnNormalizeGuard, "", only(names), "normalize: the sum of weights (%v on %s) is below %v in magnitude, so the sum Σ w·τ is not divided (divided by 1, as mergekit does): %s",
		sum, plural(len(names), "tensor", "tensors"), normalizeGuard, listed(names))
}

// CheckCompute refuses a compute dtype the method has no path for: the
// bf16 compute covers the deterministic linear combinations, linear and
// task_arithmetic (no trim, drop, vote or Model Stock), and the spherical
// interpolations slerp, nuslerp and multislerp.
func (m Method) CheckCompute() error {
	switch m.Compute {
	case kernels.F32:
		return nil
	case kernels.BF16:
	default:
		return fmt.Errorf("compute_dtype %s is not supported (float32 or bfloat16)", m.Compute.TorchName())
	}
	var why string
	switch {
	case m.Slerp != SlerpNone || m.Sphere.Kind == SphereMultislerp:
		return nil
	case m.ModelStock:
		why = "Model Stock's cosines"
	case m.Sphere.Kind == SphereKarcher:
		why = "its iterated mean"
	case m.OwnPath != PathCopy:
		why = "its own passes"
	case m.Trim:
		why = "its trim"
	case m.Drop != DropNone:
		why = "its random drop"
	case m.Votes():
		why = "its sign vote"
	case m.Vote.Aggregate == kernels.AggregateMean && !m.Vote.DivideByWeights,
		m.Vote.Aggregate == kernels.AggregateMax:
		why = "its aggregate"
	default:
		return nil
	}
	return fmt.Errorf("compute_dtype: bfloat16 covers linear, task_arithmetic, slerp, nuslerp and multislerp only; %s (%s) computes in float32: drop compute_dtype or set it to float32", m.Name, why)
}

// rbf16 rounds to bf16 (nearest even), kept as a float32.
func rbf16(f float32) float32 { return kernels.BF16ToF32(kernels.F32ToBF16(f)) }

// bf16Of64 rounds a float64 to bf16 in one step (nearest even), as torch
// makes a bf16 tensor from Python floats: rounding to float32 first could
// land on a bf16 halfway point and round again.
func bf16Of64(v float64) float32 {
	f := float32(v)
	if float64(f) == v || math.IsNaN(v) || math.IsInf(v, 0) {
		return rbf16(f)
	}
	// Round toward zero to float32, keep a sticky bit for what was lost, so
	// that the one rounding to bf16 sees the exact value's side of half.
	u := math.Float32bits(f)
	if math.Abs(float64(f)) > math.Abs(v) {
		u--
	}
	u |= 1
	return rbf16(math.Float32frombits(u))
}

// bf16Weights are a tensor's weights rounded to bf16 from the values
// written.
func bf16Weights(tp *TensorParams) []float32 {
	ws := make([]float32, len(tp.Weights))
	for i, w := range tp.Weights {
		if tp.Weights64 != nil {
			ws[i] = bf16Of64(tp.Weights64[i])
		} else {
			ws[i] = rbf16(w)
		}
	}
	return ws
}

// mergeBlockBF16 merges a block of linear or task_arithmetic in bf16 steps,
// in the order of mergekit's code (torch rounds each operation's float32
// result to bf16; a sum over models accumulates in float32 and rounds once):
//
//	task_arithmetic: τᵢ = bf(θᵢ − θ₀); S = bf(Σ bf(τᵢ·wᵢ)); normalize:
//	S = bf(S / D), D = bf(Σ wᵢ), 1 where |D| < 1e-8; λ ≠ 1: S = bf(S·λ);
//	θ = bf(θ₀ + S)
//	linear: S = bf(Σ bf(wᵢ·θᵢ)); normalize: S = bf(S / D), D = bf(Σ wᵢ)
//	(1 where it is 0); λ ≠ 1: θ = bf(S·λ)
//
// with every input and weight rounded to bf16 first, and θ then converted to
// the output dtype.
func (r *run) mergeBlockBF16(w *worker, b block) error {
	j := &r.p.Jobs[b.job]
	m := r.p.Method
	n := int(b.n)
	base := r.widenBase(w, b)
	for e := range base {
		base[e] = rbf16(base[e])
	}
	thetas := make([][]float32, len(j.Models))
	for i, t := range j.Models {
		theta := w.taus[i*r.stride : i*r.stride+n]
		r.k.Widen(theta, r.src(w, t, j.ModelDT[i], b.start, b.n), j.ModelDT[i])
		thetas[i] = theta
	}
	ws := bf16Weights(&j.Params)
	var div float32 = 1
	normalize := m.Vote.DivideByWeights
	if normalize {
		var s float32
		for _, x := range ws {
			s = float32(s + x)
		}
		div = rbf16(s)
		if m.NoBase && div == 0 || !m.NoBase && math.Abs(float64(div)) < normalizeGuard {
			div = 1
		}
	}
	lambda := j.Params.Lambda
	out := w.tm[:n]
	for e := range out {
		var s float32
		for i, th := range thetas {
			v := rbf16(th[e])
			if !m.NoBase {
				v = rbf16(float32(v - base[e]))
			}
			s = float32(s + rbf16(float32(v*ws[i])))
		}
		v := rbf16(s)
		if normalize {
			v = rbf16(float32(v / div))
		}
		if lambda != 1 {
			v = rbf16(float32(v * lambda))
		}
		if !m.NoBase {
			v = rbf16(float32(base[e] + v))
		}
		out[e] = v
	}
	return r.writeValues(w, b, out)
}
