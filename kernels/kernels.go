// Package kernels owns the per-block arithmetic of a merge: widening stored
// values to float32, task vectors with trimming, the sign vote with the disjoint
// aggregate, and the final rounding to the output dtype.
//
// Every kernel exists as portable Go (generic.go), which is always compiled and
// is the reference; assembly versions for AVX2, AVX-512 and NEON must match it
// bit for bit on every input. A Set bundles one implementation of every kernel;
// the set for this CPU is chosen once, at start-up, from cpuid.
package kernels

import (
	"fmt"
	"math"
	"strings"
)

// DType is a stored floating-point format the kernels read and write.
type DType uint8

const (
	F32 DType = iota
	F16
	BF16
)

// Size is the number of bytes per element.
func (d DType) Size() int {
	if d == F32 {
		return 4
	}
	return 2
}

// At is the i-th stored value of src widened to float32, as Widen gives it.
func (d DType) At(src []byte, i int) float32 { return load(src, d, i) }

func (d DType) String() string {
	switch d {
	case F32:
		return "F32"
	case F16:
		return "F16"
	case BF16:
		return "BF16"
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// dtypeNames maps every spelling of a dtype that safetensors, PyTorch and
// mergekit users write, lower-cased and without "torch.", to the dtype.
var dtypeNames = map[string]DType{
	"float32": F32, "fp32": F32, "f32": F32, "float": F32,
	"float16": F16, "fp16": F16, "f16": F16, "half": F16,
	"bfloat16": BF16, "bf16": BF16,
}

// ParseDType reads a dtype in any of its usual spellings, case-insensitively:
// float32, fp32, f32, float, torch.float32, F32; float16, fp16, f16, half,
// torch.float16, F16; bfloat16, bf16, torch.bfloat16, BF16.
func ParseDType(s string) (DType, error) {
	if d, ok := dtypeNames[strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "torch.")]; ok {
		return d, nil
	}
	return 0, fmt.Errorf("unsupported dtype %q (want float32, float16 or bfloat16)", s)
}

// TorchName is the dtype's PyTorch and mergekit name: float32, float16 or
// bfloat16.
func (d DType) TorchName() string {
	switch d {
	case F32:
		return "float32"
	case F16:
		return "float16"
	case BF16:
		return "bfloat16"
	}
	return d.String()
}

// Consensus is how the sign vote sums model values.
type Consensus uint8

const (
	// ConsensusSum elects the sign of the sum of values ("mass", "total").
	ConsensusSum Consensus = iota
	// ConsensusCount elects the sign of the sum of signs ("frequency").
	ConsensusCount
	// ConsensusNone disables the vote: every value takes part (task arithmetic).
	ConsensusNone
)

// Aggregate is how the agreeing values are combined.
type Aggregate uint8

const (
	AggregateMean Aggregate = iota
	AggregateSum
	// AggregateMax takes the largest magnitude among agreeing values, times the sign.
	AggregateMax
)

// VoteParams configures the vote and aggregate of one tensor. Weights apply to
// task vectors as a_i = w_i·τ_i; WeightedVote says whether the vote sees a_i
// (mergekit) or the unweighted τ_i (paper, peft).
type VoteParams struct {
	Weights      []float32 // one per model
	WeightedVote bool
	Consensus    Consensus
	Aggregate    Aggregate
	// DivideByWeights makes the mean Σ m·a / Σ m·w (a zero divisor becomes 1)
	// instead of Σ m·a / max(1, Σ m).
	DivideByWeights bool
}

// VoteStats counts what the vote decided over a block.
// Zero sums of all-zero values count in none of the first three; with
// ConsensusNone only Conflicts counts.
type VoteStats struct {
	Positive  int // vote sum > 0
	Negative  int // vote sum < 0 or NaN (both elect −1)
	ZeroSum   int // vote sum ±0 while some vote value is not 0: sign provisionally +1
	Conflicts int // elements where both a positive and a negative value voted
}

// Add accumulates other into s.
func (s *VoteStats) Add(o VoteStats) {
	s.Positive += o.Positive
	s.Negative += o.Negative
	s.ZeroSum += o.ZeroSum
	s.Conflicts += o.Conflicts
}

// Set is one implementation of every kernel. Slices passed in must not overlap
// unless a kernel says so; lengths are in elements.
type Set struct {
	Name string

	// Widen converts len(dst) stored values from src to float32.
	Widen func(dst []float32, src []byte, dt DType)

	// DeltaTrim computes τ = θ − θ₀ from len(tau) stored values of src and the
	// widened base, then zeroes every τ whose magnitude bit pattern
	// (bits & 0x7fffffff) is below thrBits (an unsigned comparison: NaN
	// magnitudes order above +Inf). It returns how many were kept.
	DeltaTrim func(tau []float32, src []byte, dt DType, base []float32, thrBits uint32) int

	// Vote reads n = len(taus)/stride models' trimmed task vectors, model i at
	// taus[i*stride : i*stride+len(out)], and writes the merged task vector.
	Vote func(out []float32, taus []float32, stride int, p *VoteParams) VoteStats

	// Finish writes θ₀ + float32(λ·τₘ) rounded to dt into dst.
	Finish func(dst []byte, dt DType, base, tm []float32, lambda float32)

	// Range counts the values of tau whose magnitude bit pattern lies in
	// [lo, hi] (unsigned, inclusive) and, if idx is not nil, writes their
	// indices, in order, to idx[:count]. len(idx) must be at least len(tau);
	// idx[count:len(tau)] may be overwritten. The trims use it to count ties
	// and to find the few values in a band or a histogram bin.
	Range func(tau []float32, lo, hi uint32, idx []int32) int

	// DeltaRange computes τ = θ − θ₀ as DeltaTrim does (from len(base)
	// stored values of src and the widened base), without storing it, and
	// returns how many magnitude patterns exceed hi (above) and how many lie
	// in [lo, hi] (inside), unsigned; if idx is not nil it writes the
	// indices of the inside ones, in order, to idx[:inside] (len(idx) ≥
	// len(base); idx[inside:len(base)] may be overwritten). lo ≤ hi. The
	// per-tensor select counts each block with it.
	DeltaRange func(src []byte, dt DType, base []float32, lo, hi uint32, idx []int32) (above, inside int)

	// Ties is Widen of the base, DeltaTrim of every model, Vote and Finish
	// in one sweep over a block's inputs, bit for bit what those four give,
	// without the intermediate float32 blocks.
	Ties func(b *TiesBlock) VoteStats

	// Norms, Dot and TrimWords are the statistics of tiesmm inspect: sums
	// over chunks of SumChunk elements in a fixed order, and mask words of
	// 64 elements (stats.go). The outputs hold a value per chunk (Chunks) or
	// per word (Words) of the input.

	// Norms writes Σ|τ| to l1[c] and Στ² to sq[c] for every chunk c of tau,
	// ORs the mask words of tau's positive values into pos and those of its
	// negative ones into neg, and returns how many values are nonzero.
	Norms func(tau []float32, l1, sq []float64, pos, neg []uint64) (nonzero int)

	// Dot writes Σ aₓ·bₓ to dot[c] for every chunk c of a; len(b) ≥ len(a).
	Dot func(a, b []float32, dot []float64)

	// TrimWords keeps the values of tau whose magnitude pattern exceeds gt
	// (unsigned): it writes their mask words to kept and their sign bits to
	// sign, and the sum of the others' magnitudes to removed[c] for every
	// chunk c. It returns how many it kept.
	TrimWords func(tau []float32, gt uint32, kept, sign []uint64, removed []float64) (count int)

	// LowBits writes to list, in order, the magnitude patterns of tau whose
	// low 16 bits are not all zero, as many as fit, and returns how many
	// there are (more than len(list) when they do not fit). The radix
	// select takes a bin's low-bit histogram from such a list.
	LowBits func(tau []float32, list []uint32) (count int)

	// LowRank sets acc[j] = Σₖ l[k]·r[k·stride+j] for j < len(acc): the
	// columns of one row of a low-rank product (a LoRA delta). The sum runs
	// over k = 0, 1, …, len(l)−1 from the first product, every product and
	// sum rounded to float32, so a value does not depend on how the
	// columns are split into calls.
	LowRank func(acc, l, r []float32, stride int)

	// EMRElect is EMR-Merging's election over one block: the unified task
	// vector, the tasks' masks and the chunk sums the rescalers need
	// (emr.go).
	EMRElect func(b *EMRBlock)
}

// TiesBlock is one block of a fused TIES merge (Set.Ties). The block has
// n = len(Dst)/OutDT.Size() elements; Base and every model hold n values of DT.
type TiesBlock struct {
	Dst    []byte
	OutDT  DType
	Base   []byte
	Models [][]byte
	DT     DType
	Thr    []uint32 // per model: DeltaTrim's thrBits
	Vote   *VoteParams
	Lambda float32
	// Kept receives, per model, the count DeltaTrim returns.
	Kept []int
	// Equal, if not nil, receives per model how many values have the
	// magnitude pattern Thr[i] exactly (kept, at the threshold).
	Equal []int
	// Zero, if not nil (len ≥ n), receives the indices of the elements the
	// vote counts in VoteStats.ZeroSum, in order, in Zero[:ZeroSum].
	Zero []int32
	// Scratch is working memory for the cases a set runs in stages; with
	// fewer than TiesScratch(len(Models), n) values, those allocate.
	Scratch []float32
}

// available lists the sets this CPU can run, best first; the Go set is last.
// It is the dispatch table, filled once at init.
var available = detect()

// Available returns the kernel sets this CPU can run, best first.
func Available() []*Set { return append([]*Set(nil), available...) }

// Best returns the fastest set this CPU runs.
func Best() *Set { return available[0] }

// Lookup returns the named set ("" or "auto" for Best), or an error if this
// CPU or build lacks it.
func Lookup(name string) (*Set, error) {
	if name == "" || name == "auto" {
		return Best(), nil
	}
	var names []string
	for _, s := range available {
		if s.Name == name {
			return s, nil
		}
		names = append(names, s.Name)
	}
	return nil, fmt.Errorf("kernel %q is not available on this CPU or build (available: %s)", name, strings.Join(names, ", "))
}

// AbsBits is the magnitude bit pattern of f, which orders like |f| for
// non-NaN values; the trim thresholds and the top-k selection use it.
func AbsBits(f float32) uint32 { return math.Float32bits(f) & 0x7fffffff }
