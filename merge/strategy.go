package merge

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// Path is the sequence of passes the engine runs over one tensor.
type Path uint8

const (
	// PathCopy: not a float tensor; copied from the base byte for byte.
	PathCopy Path = iota
	// PathPlain: one merge pass; the tensor has no trim of its own.
	PathPlain
	// PathModelStock: a pass for the task vectors' dot products, then the
	// merge.
	PathModelStock
	// PathSinglePass: the whole-model trim in one pass (singlepass.go): a
	// sample brackets each threshold, the pass merges what it decides and
	// spills the rest, settled after it.
	PathSinglePass
	// PathModelRadix: the whole-model trim's thresholds come from the radix
	// select over every tensor before the merge pass (--two-pass, the
	// approximate mode, exact-k ties, an L1 rescale).
	PathModelRadix
	// PathSpeculate: a per-tensor trim whose sample is read first; if it puts
	// every threshold on a tie group the tensor is merged in one pass
	// (speculate.go), else the sampled select follows with that sample.
	PathSpeculate
	// PathSampled: a per-tensor trim by the sampled select (sampled.go): a
	// sample, one counting pass, then the merge.
	PathSampled
	// PathRadix: a per-tensor trim by the radix select (two histogram
	// passes), then the merge: tensors too small for a sample.
	PathRadix
	// PathGram: a pass for the inputs' Gram matrix, then the merge
	// (multislerp, karcher: gram.go).
	PathGram
	// PathNearSwap: nearswap's one elementwise pass (nearswap.go).
	PathNearSwap
	// PathSCE: sce's variance select and task-vector means, then the merge
	// (sce.go).
	PathSCE
	// PathArceeFusion: arcee_fusion's importance quantiles, then the merge
	// (arceefusion.go).
	PathArceeFusion
	// PathSlerp: slerp or nuslerp; a pass for each vector's norms and dot
	// product, then the merge (rows: one pass, each block holding whole
	// rows).
	PathSlerp
	// PathEMR: EMR-Merging's pass, which writes the unified task vector and
	// the masks (emr.go); integer tensors wait for the tasks' models.
	PathEMR
	// PathPCB: PCB-Merging's selects of clip bounds and drop thresholds
	// (over the whole model first, or per tensor), then the merge (pcb.go).
	PathPCB
	numPaths
)

var pathNames = [numPaths]string{"copy", "plain", "model-stock", "single-pass", "model-radix", "speculate", "sampled", "radix",
	"gram", "nearswap", "sce", "arcee-fusion", "slerp", "emr", "pcb"}

func (p Path) String() string { return pathNames[p] }

// Strategy is how the engine merges one tensor: Plan.Strategy decides it,
// and the engine follows it.
type Strategy struct {
	Path Path
	// Solo: merged whole by one worker, side by side with other small
	// tensors, instead of split across the workers (solo.go).
	Solo bool
	// Rescale: an L1-norm pass before the merge (mergekit's rescale).
	Rescale bool
	// Fused: the fused kernel may merge the tensor's blocks (one dtype, a
	// plain magnitude trim at most); a block whose trim cuts a tie group, or
	// whose rescale factor is not 1, still takes the staged kernels.
	Fused bool
}

// String names the strategy: its path, "solo-" before it when merged solo,
// "+l1" after it with the L1 rescale.
func (s Strategy) String() string {
	name := s.Path.String()
	if s.Solo {
		name = "solo-" + name
	}
	if s.Rescale {
		name += "+l1"
	}
	return name
}

// Strategy is tensor ji's strategy: the one place the engine's choice of
// passes for a tensor is made.
func (p *Plan) Strategy(ji int) Strategy {
	j := &p.Jobs[ji]
	m := p.Method
	if m.OwnPath == PathEMR {
		return Strategy{Path: PathEMR}
	}
	if j.Copy {
		return Strategy{Path: PathCopy}
	}
	s := Strategy{Path: PathPlain, Fused: p.fusable(ji), Rescale: m.Rescale == RescaleL1 && m.Sparsifies()}
	switch {
	case m.ModelStock:
		s.Path = PathModelStock
	case m.Sphere.Kind != SphereNone:
		s.Path = PathGram
	case m.OwnPath != PathCopy:
		s.Path, s.Fused = m.OwnPath, false
	case m.Slerp != SlerpNone:
		s.Path = PathSlerp
	case p.singlePass():
		s.Path = PathSinglePass
	case m.Trim && m.Scope == ScopeModel && p.trims():
		s.Path = PathModelRadix
	case m.Trim && m.Scope == ScopeTensor && p.tensorTrims(ji):
		s.Path = p.tensorPath(ji, s)
	}
	s.Solo = p.solo(ji)
	return s
}

// fusable reports whether the fused kernel can merge job ji's blocks at all:
// task vectors against a base, no random drop or cut of outliers, every
// input in one dtype.
func (p *Plan) fusable(ji int) bool {
	m, j := p.Method, &p.Jobs[ji]
	if m.NoBase || m.Drop != DropNone || m.ModelStock || m.Slerp != SlerpNone {
		return false
	}
	for i, dt := range j.ModelDT {
		if dt != j.BaseDT || j.NeedTop != nil && j.NeedTop[i] > 0 {
			return false
		}
	}
	return true
}

// tensorTrims reports whether a per-tensor trim trims job ji for some model
// (keeps 0 < k ≤ n of its elements, or drops outliers).
func (p *Plan) tensorTrims(ji int) bool {
	j := &p.Jobs[ji]
	for _, need := range [][]uint64{j.Need, j.NeedTop} {
		for _, k := range need {
			if k > 0 && k <= uint64(j.Elements) {
				return true
			}
		}
	}
	return false
}

// tensorPath picks a per-tensor trim's select. The speculative one-pass
// merge needs the fused kernel for every block and no zero-sum records (the
// model-wide majority sign): a block merged again would leave its first
// records stale.
func (p *Plan) tensorPath(ji int, s Strategy) Path {
	m, j := p.Method, &p.Jobs[ji]
	switch {
	case j.Elements < p.tuning.tensorSampled:
		return PathRadix
	case s.Fused && !s.Rescale && !m.GlobalMajority && !m.Outliers && !m.ApproxTopK:
		return PathSpeculate
	}
	return PathSampled
}

// soloMethod reports whether the method lets small tensors be merged solo:
// a plain per-tensor magnitude trim. Random drops, L1 rescales, outlier
// cuts and the global majority sign keep the tensor-by-tensor order.
func (p *Plan) soloMethod() bool {
	m := p.Method
	return m.Trim && m.Scope == ScopeTensor && !m.Outliers && m.Drop == DropNone &&
		m.Rescale != RescaleL1 && !m.GlobalMajority && !m.ModelStock && !m.NoBase
}

// solo reports whether job ji is merged solo: with two workers or more, a
// tensor whose inputs fit soloBytes and the workers' share of the hot bound
// (their tensors are hot at once).
func (p *Plan) solo(ji int) bool {
	j := &p.Jobs[ji]
	if p.Workers < 2 || j.Copy || !p.soloMethod() {
		return false
	}
	return p.jobReadBytes(ji) <= min(p.tuning.soloBytes, p.HotBytes/int64(p.Workers))
}

// Strategies lists every tensor's strategy, by job.
func (p *Plan) Strategies() []Strategy {
	ss := make([]Strategy, len(p.Jobs))
	for ji := range p.Jobs {
		ss[ji] = p.Strategy(ji)
	}
	return ss
}

// strategyCounts counts the tensors of each strategy, as "count name"
// pairs in the order of the paths.
func (p *Plan) strategyCounts() string {
	count := map[string]int{}
	var ss []Strategy // one of each name
	for _, s := range p.Strategies() {
		if count[s.String()] == 0 {
			ss = append(ss, s)
		}
		count[s.String()]++
	}
	slices.SortFunc(ss, func(a, b Strategy) int {
		if a.Path != b.Path {
			return int(a.Path) - int(b.Path)
		}
		return strings.Compare(a.String(), b.String())
	})
	parts := make([]string, len(ss))
	for k, s := range ss {
		parts[k] = fmt.Sprintf("%d %s", count[s.String()], s)
	}
	return strings.Join(parts, ", ")
}

// DescribeStrategies prints each tensor's strategy, one a line (--explain).
func (p *Plan) DescribeStrategies(w io.Writer) {
	width := 0
	for _, j := range p.Jobs {
		width = max(width, len(j.Name))
	}
	fmt.Fprintf(w, "%-*s  strategy\n", width, "tensor")
	for ji, j := range p.Jobs {
		fmt.Fprintf(w, "%-*s  %s\n", width, j.Name, p.Strategy(ji))
	}
}
