package merge

import "context"

// The engine's strategies: each path Plan.Strategy names is a type behind
// tensorStrategy, and the pass driver (mergeAll) hands every implementation
// its tensors.

// tensorStrategy is one way of merging tensors. The driver calls prepare
// once with every tensor the strategy has, in job order, before the merge
// pass; then, within the merge pass, merge: once with all of them for a
// batch strategy (before the others), else once per tensor, in job order.
type tensorStrategy interface {
	// prepare runs the passes over all the strategy's tensors that come
	// before any of them is merged (the whole-model radix select).
	prepare(ctx context.Context, r *run, jobs []int) error
	// merge merges the tensors: a tensor's own passes (selects, L1 norms,
	// dot products) and its merge pass.
	merge(ctx context.Context, r *run, jobs []int) error
	// batch reports whether merge takes all the strategy's tensors at once.
	batch() bool
}

// perTensor is what a strategy that merges tensor by tensor, with nothing
// to prepare, embeds.
type perTensor struct{}

func (perTensor) prepare(context.Context, *run, []int) error { return nil }
func (perTensor) batch() bool                                { return false }

// eachJob calls merge with each job in turn, stopping at the first error.
func eachJob(jobs []int, merge func(ji int) error) error {
	for _, ji := range jobs {
		if err := merge(ji); err != nil {
			return err
		}
	}
	return nil
}

// newStrategies builds each job's implementation, r.paths (its path's) and
// r.impl (the one the driver calls: the solo batch for a solo job): the one
// place a strategy's name is turned into code. Only the paths in use are
// built, with their scratch.
func (r *run) newStrategies() {
	var built [numPaths]tensorStrategy
	var impl func(p Path) tensorStrategy
	impl = func(p Path) tensorStrategy {
		if built[p] != nil {
			return built[p]
		}
		var s tensorStrategy
		switch p {
		case PathCopy:
			s = copyTensor{}
		case PathPlain:
			s = plainTensor{}
		case PathModelStock:
			s = newModelStock(len(r.ws))
		case PathSinglePass:
			s = newSinglePass(r)
		case PathModelRadix:
			s = modelRadix{}
		case PathSpeculate:
			s = &speculate{sampled: impl(PathSampled).(*sampledSelect)}
		case PathSampled:
			s = newSampledSelect(len(r.ws), r.p.width())
		case PathRadix:
			s = radixSelect{}
		case PathGram:
			s = newGramTensor(len(r.ws))
		case PathNearSwap:
			s = nearSwap{}
		case PathSCE:
			s = newSCE(len(r.ws), r.p.width())
		case PathArceeFusion:
			s = newArceeFusion(len(r.ws))
		case PathSlerp:
			s = newSlerpTensors(len(r.ws))
		case PathEMR:
			s = newEMRTensors(r)
		case PathPCB:
			s = newPCB(len(r.ws), r.p.width(), r.stride)
		}
		built[p] = s
		return s
	}
	var solo *soloTensors
	r.paths = make([]tensorStrategy, len(r.strategy))
	r.impl = make([]tensorStrategy, len(r.strategy))
	for ji, s := range r.strategy {
		r.paths[ji] = impl(s.Path)
		r.impl[ji] = r.paths[ji]
		if s.Solo {
			if solo == nil {
				solo = &soloTensors{}
			}
			r.impl[ji] = solo
		}
	}
}

// strategyGroup is one implementation and its tensors, in job order.
type strategyGroup struct {
	s    tensorStrategy
	jobs []int
}

// groups lists the implementations in use, in the order of their first
// tensor, each with its tensors.
func (r *run) groups() []strategyGroup {
	var gs []strategyGroup
	for ji, s := range r.impl {
		k := 0
		for k < len(gs) && gs[k].s != s {
			k++
		}
		if k == len(gs) {
			gs = append(gs, strategyGroup{s: s})
		}
		gs[k].jobs = append(gs[k].jobs, ji)
	}
	return gs
}
