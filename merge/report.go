package merge

import (
	"fmt"
	"io"
	"strings"

	"github.com/tiesmm/tiesmm/internal/units"
	"github.com/tiesmm/tiesmm/kernels"
)

// Describe prints the method's details in words.
func (m Method) Describe() string {
	if m.Name == "passthrough" {
		return "passthrough: x·scale, or x copied as it is"
	}
	if m.Slerp != SlerpNone {
		return m.describeSlerp()
	}
	if m.OwnPath == PathEMR {
		return "emr: U = γ·max |τ| of the tasks agreeing with γ = sign Σ τ (−1 at 0); a mask and a rescaler per task"
	}
	if m.OwnPath == PathPCB {
		return m.describePCB()
	}
	if !m.Trim {
		if m.Vote.DivideByWeights {
			return m.Name + ": Σ w·τ / Σ w"
		}
		return m.Name + ": Σ w·τ"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s (preset %s): trim per %s", m.Name, m.Preset, m.Scope)
	if m.Ties == KeepTies {
		b.WriteString(" keeping ties at the threshold")
	} else {
		b.WriteString(" keeping exactly k")
	}
	if m.ApproxTopK {
		b.WriteString(" (approximate: high-bits threshold)")
	}
	cons := map[kernels.Consensus]string{kernels.ConsensusSum: "sum", kernels.ConsensusCount: "count"}[m.Vote.Consensus]
	agg := map[kernels.Aggregate]string{kernels.AggregateMean: "mean", kernels.AggregateSum: "sum", kernels.AggregateMax: "max"}[m.Vote.Aggregate]
	on := "τ"
	if m.Vote.WeightedVote {
		on = "w·τ"
	}
	fmt.Fprintf(&b, "; vote by %s of %s; %s", cons, on, agg)
	if m.Vote.DivideByWeights {
		b.WriteString(" over agreeing weights")
	}
	if m.GlobalMajority {
		b.WriteString("; zero sums take the model-wide majority sign")
	} else {
		b.WriteString("; zero sums take +")
	}
	return b.String()
}

// Describe prints the plan (the --dry-run output).
func (p *Plan) Describe(w io.Writer) {
	copied := 0
	for _, j := range p.Jobs {
		if j.Copy {
			copied++
		}
	}
	fmt.Fprintf(w, "method:   %s\n", p.Method.Describe())
	fmt.Fprintf(w, "base:     %s (%d files)%s\n", p.Base.Path, len(p.Base.Files), p.adapterNote(0))
	for i, m := range p.Models {
		fmt.Fprintf(w, "model %d:  %s (%d files)%s\n", i+1, m.Path, len(m.Files), p.adapterNote(i+1))
	}
	from := " from the base"
	if p.slices != nil {
		from = "" // from the slices' sources
	}
	fmt.Fprintf(w, "tensors:  %d (%d merged, %d copied%s), %d layers\n", len(p.Jobs), len(p.Jobs)-copied, copied, from, p.Layers)
	p.describeLayers(w)
	if vm := p.vocab; vm != nil {
		fmt.Fprintf(w, "vocab:    %s", vm.describe(p.Opts.Vocab.Source))
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "inputs:   %s to read; output %s in %d shard(s) at %s\n", units.FormatDecimal(p.InputBytes), units.FormatDecimal(p.OutputBytes), len(p.Layout.Shards), p.Opts.Out)
	if p.emr != nil {
		p.describeEMR(w)
	}
	if p.Method.Trim {
		if p.Method.Scope == ScopeModel {
			for i, k := range p.Need {
				fmt.Fprintf(w, "trim:     model %d keeps %s of %d elements (density %v)\n", i+1, keptWords(k, p.Merged, p.Method.Ties), p.Merged, p.Density[i])
			}
		} else {
			asked, _ := p.askedPerTensor()
			for i := range p.Models {
				fmt.Fprintf(w, "trim:     model %d keeps %d of %d elements, tensor by tensor\n", i+1, asked[i], p.MergedOf(i))
			}
		}
	}
	fmt.Fprintf(w, "passes:   %s\n", strings.Join(p.Passes(), " → "))
	fmt.Fprintf(w, "strategy: %s (tensors; --explain lists them)\n", p.strategyCounts())
	fmt.Fprintf(w, "memory:   blocks of %d elements, %d workers: at most %s resident", p.BlockElems, p.Workers, units.FormatBinary(p.MemoryBound))
	if p.Opts.MaxMemory > 0 {
		fmt.Fprintf(w, " (--max-memory %s)", units.FormatBinary(p.Opts.MaxMemory))
	}
	fmt.Fprintf(w, "\nkernels:  %s\n", p.Opts.Kernels.Name)
}

func keptWords(k uint64, n int64, rule TieRule) string {
	if k > uint64(n) {
		return "all"
	}
	if rule == KeepTies {
		return fmt.Sprintf("%d (plus ties at the threshold)", k)
	}
	return fmt.Sprint(k)
}

// askedPerTensor sums the tensor-scope k over tensors, per model.
func (p *Plan) askedPerTensor() (asked []uint64, total int64) {
	asked = make([]uint64, len(p.Models))
	for _, j := range p.Jobs {
		if j.Copy {
			continue
		}
		total += j.Elements
		for i, k := range j.Need {
			s := j.slot(i)
			asked[s] += min(k, uint64(j.Elements))
			if j.NeedTop != nil { // breadcrumbs: the top is dropped too
				asked[s] -= j.NeedTop[i]
			}
		}
	}
	return asked, total
}

// AskedFor is what the trim was asked to keep per model, summed over
// tensors (nil when nothing is trimmed).
func (s *Summary) AskedFor(p *Plan) []uint64 {
	if !p.Method.Trim {
		return nil
	}
	if p.Method.Scope == ScopeTensor {
		asked, _ := p.askedPerTensor()
		return asked
	}
	return s.Asked
}

// PrintDetails writes what the engine did, in its own terms (--verbose).
func (s *Summary) PrintDetails(w io.Writer, p *Plan) {
	fmt.Fprintf(w, "passes:   %d (%s)\n", len(s.Passes), strings.Join(s.Passes, " → "))
	fmt.Fprintf(w, "memory:   blocks of %d elements, %d workers; kernels %s\n", p.BlockElems, p.Workers, s.Kernel)
	if s.Sampled > 0 {
		fmt.Fprintf(w, "single:   sampled %d elements per model; %d positions spilled and settled", s.Sampled, s.Spilled)
		if s.FellBack > 0 {
			fmt.Fprintf(w, "; in %d scope(s) the sample missed a threshold, so the exact two-pass select ran", s.FellBack)
		}
		fmt.Fprintln(w)
	} else if s.FellBack > 0 {
		fmt.Fprintf(w, "select:   in %d tensor(s) the sample missed a threshold, so the radix select ran\n", s.FellBack)
	}
	if s.Crowded > 0 {
		fmt.Fprintf(w, "select:   in %d tensor(s) the sample's band held more values than the select's lists take (see --max-memory), so the radix select ran\n", s.Crowded)
	}
	if s.OnePass > 0 {
		fmt.Fprintf(w, "select:   %d tensor(s) merged in one pass (each threshold on a tie group); %d elements merged again at a tie cut\n", s.OnePass, s.Remerged)
	}
	if s.Votes.ZeroSum > 0 {
		sign := "+"
		if s.Majority < 0 {
			sign = "−"
		}
		fmt.Fprintf(w, "votes:    %d exact zero sums took the sign %s\n", s.Votes.ZeroSum, sign)
	}
}
