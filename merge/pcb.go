package merge

import (
	"context"
	"errors"
	"fmt"
	"math"
	"unsafe"

	"github.com/tiesmm/tiesmm/config"
	topk "github.com/tiesmm/tiesmm/select"
)

// PCB-Merging (Du et al. 2024, parameter competition balancing): each
// element of each task vector gets a weight β from its clipped magnitude
// within its task (intra) and its agreement with the other tasks (inter);
// each task keeps the elements whose β lies above its order statistic at
// 1 − ratio, scaled into (0, 1], and the clipped task vectors are averaged
// with those weights. The clip bounds and the drop threshold are exact
// order statistics over a group, the whole model or one tensor: radix
// selects over |τ|, then over β's ordered keys.

// Inter is how PCB-Merging balances each task against the others.
type Inter uint8

const (
	InterSum      Inter = iota // tanh(τᵢ·Σⱼ τⱼ)
	InterNormSum               // tanh(τᵢ·Σⱼ nⱼ), n = sign(τ)·u
	InterPairwise              // Σⱼ tanh(nᵢ·nⱼ)
)

var interNames = [...]string{"sum", "normsum", "pairwise"}

func (i Inter) String() string { return interNames[i] }

// PCB is PCB-Merging's settings for the whole merge.
type PCB struct {
	Ratio          float64 // fraction of each task's elements kept
	ClipLo, ClipHi float64 // fractions of the smallest and largest |τ| clipped
	Scope          Scope   // the group the order statistics run over
	Inter          Inter
}

func defaultPCB() PCB { return PCB{Ratio: 0.1, ClipLo: 1e-4, ClipHi: 1e-4, Scope: ScopeModel} }

// indices are the ranks (0-based, ascending) of a group of d elements' clip
// bounds in the sorted |τ| and of the drop threshold in the sorted β, each
// computed in float64 and truncated toward zero. The threshold's rank is at
// most d − 1 (the maximum: nothing kept).
func (c PCB) indices(d int64) (lo, hi, t int64) {
	lo = int64(float64(d) * c.ClipLo)
	hi = int64(float64(d)*(1-c.ClipHi) - 1)
	t = min(int64(float64(d)*(1-c.Ratio)), d-1)
	return lo, hi, t
}

// pcbRecipe reads pcb's whole-merge settings: ratio, clip (one number for
// lo and hi, or a list of two), scope and inter.
func pcbRecipe(c *config.Config, m *Method) error {
	if m.OwnPath != PathPCB {
		return nil
	}
	ps := c.Parameters
	if p, ok := ps["ratio"]; ok {
		if p.Kind != config.KindNumber {
			return fmt.Errorf("%s: ratio: want one number", c.File)
		}
		m.PCB.Ratio = p.Num
	}
	if p, ok := ps["clip"]; ok {
		switch {
		case p.Kind == config.KindNumber:
			m.PCB.ClipLo, m.PCB.ClipHi = p.Num, p.Num
		case p.Kind == config.KindGradient && len(p.Gradient) == 2:
			m.PCB.ClipLo, m.PCB.ClipHi = p.Gradient[0], p.Gradient[1]
		default:
			return fmt.Errorf("%s: clip: want one number or a list of two, [lo, hi]", c.File)
		}
	}
	word := func(key string) (string, error) {
		p, ok := ps[key]
		if !ok {
			return "", nil
		}
		if p.Kind != config.KindString {
			return "", fmt.Errorf("%s: %s: want a word, got a %s", c.File, key, p.Kind)
		}
		return p.Str, nil
	}
	s, err := word("scope")
	switch {
	case err != nil:
		return err
	case s == "model":
		m.PCB.Scope = ScopeModel
	case s == "tensor":
		m.PCB.Scope = ScopeTensor
	case s != "":
		return fmt.Errorf("%s: scope %q: want model or tensor", c.File, s)
	}
	if s, err = word("inter"); err != nil {
		return err
	}
	if s != "" {
		if m.PCB.Inter, err = ParseInter(s); err != nil {
			return fmt.Errorf("%s: %w", c.File, err)
		}
	}
	return nil
}

// describePCB is pcb's line of --dry-run.
func (m Method) describePCB() string {
	c := m.PCB
	return fmt.Sprintf("pcb: per %s, clip |τ| [%v, %v], β = intra · inter %s, keep ratio %v of β; Σ w·c·s / Σ s",
		c.Scope, c.ClipLo, c.ClipHi, c.Inter, c.Ratio)
}

// ParseInter reads pcb's inter setting.
func ParseInter(s string) (Inter, error) {
	for i, name := range interNames {
		if s == name {
			return Inter(i), nil
		}
	}
	return 0, fmt.Errorf("inter %q: want sum, normsum or pairwise", s)
}

// checkPCB checks pcb's settings against the groups they apply to: the
// ratio, and clip ranks with 0 ≤ lo ≤ hi < d in every group.
func (p *Plan) checkPCB() error {
	m := p.Method
	if m.OwnPath != PathPCB {
		return nil
	}
	c := m.PCB
	if !(c.Ratio > 0 && c.Ratio <= 1) {
		return fmt.Errorf("pcb: ratio %v outside (0, 1]: the fraction of each task vector kept", c.Ratio)
	}
	if !(c.ClipLo >= 0 && c.ClipLo < 1 && c.ClipHi >= 0 && c.ClipHi < 1) {
		return fmt.Errorf("pcb: clip [%v, %v]: each fraction must lie in [0, 1)", c.ClipLo, c.ClipHi)
	}
	check := func(d int64) error {
		lo, hi, _ := c.indices(d)
		if 0 <= lo && lo <= hi && hi < d {
			return nil
		}
		return fmt.Errorf("pcb: clip [%v, %v] puts the clip bounds at ranks %d (lo) and %d (hi) of the sorted |τ| of %d elements; want 0 ≤ lo ≤ hi < %d: lower the clip fractions",
			c.ClipLo, c.ClipHi, lo, hi, d, d)
	}
	var errs []error
	var d int64
	for _, j := range p.Jobs {
		if j.Copy || j.Elements == 0 {
			continue
		}
		d += j.Elements
		if c.Scope == ScopeTensor {
			if err := check(j.Elements); err != nil {
				errs = append(errs, fmt.Errorf("tensor %q: %w", j.Name, err))
			}
		}
	}
	if c.Scope == ScopeModel && d > 0 {
		if err := check(d); err != nil {
			errs = append(errs, fmt.Errorf("the whole model (scope model): %w", err))
		}
	}
	return errors.Join(errs...)
}

// WarnPCBKeepsNothing: a task whose largest β is its drop threshold keeps
// no element (of the model, or of some tensors in tensor scope).
const WarnPCBKeepsNothing = "pcb-keeps-nothing"

// pcbTask is one task's bounds over its group.
type pcbTask struct {
	lo, hi, span float32 // clip bounds of |τ| and hi − lo
	t, drop      float32 // drop threshold of β, and top − t (its maximum's distance)
	none         bool    // the maximum is the threshold: the task keeps nothing
	// below: t is finite and drop not NaN, so β ≤ t gives s = +0, and the
	// division can be skipped there.
	below bool
}

// pcbTensors merges tensors with PCB-Merging (PathPCB). In model scope,
// prepare finds every task's bounds over the whole model (four passes)
// and each tensor is then merged with them; in tensor scope each tensor
// runs the four passes over itself, kept mapped if it fits, then its merge.
type pcbTensors struct {
	ws    []pcbScratch // per worker
	model []pcbTask    // model scope: the tasks' bounds
	// Tensor scope: the tensors that keep no element of any task, those
	// where some tasks keep nothing, and the warning that counts them (an
	// index into the summary's warnings, −1 before the first).
	empty, partial []string
	warning        int
}

// pcbScratch is a worker's: per task two histograms (the clip's lo and hi;
// β's select uses the first), the largest ordered key of β seen, a block's
// β, n = sign(τ)·u and (pairwise) tanh(n·n), one element's pairwise tanh
// values; and per task a table of what depends on |τ| alone (u, intra and
// tanh(u·u)) by the high 16 bits of |τ|, for the |τ| whose low 16 bits are
// zero (most of a bf16 task vector's: exp and tanh are the costly part of
// β), valid for the clip bounds it was filled with.
type pcbScratch struct {
	hists  []topk.Hist
	top    []uint32
	beta   []float32
	n      []float32 // task-major, as beta
	diag   []float32 // task-major, as beta
	pair   []float32
	slots  [][]pcbSlot // per task, by |τ|'s high bits
	bounds [][2]uint32
}

// pcbSlot is one |τ|'s u, intra = exp(N·u²) and (pairwise) tanh(u²).
type pcbSlot struct {
	u, intra, diag float32
	known          bool
}

// intraSlots is the size of a task's table.
const intraSlots = 1 << 16

func newPCB(workers, models, stride int) *pcbTensors {
	pc := &pcbTensors{ws: make([]pcbScratch, workers), warning: -1}
	for k := range pc.ws {
		pc.ws[k] = pcbScratch{hists: make([]topk.Hist, 2*models), top: make([]uint32, models),
			beta: make([]float32, models*stride), n: make([]float32, models*stride), diag: make([]float32, models*stride),
			pair: make([]float32, models*models), slots: make([][]pcbSlot, models), bounds: make([][2]uint32, models)}
		for i := range models {
			pc.ws[k].slots[i] = make([]pcbSlot, intraSlots)
		}
	}
	return pc
}

// pcbWorkerBytes is a worker's pcbScratch for n models and blocks of b
// elements.
func pcbWorkerBytes(n, b int64) int64 {
	return 2*n*histBytes + 4*n + 12*n*b + 4*n*n + n*(int64(unsafe.Sizeof(pcbSlot{}))*intraSlots+8)
}

func (pc *pcbTensors) batch() bool { return false }

func (pc *pcbTensors) prepare(ctx context.Context, r *run, jobs []int) error {
	if r.p.Method.PCB.Scope != ScopeModel || len(jobs) == 0 {
		return nil
	}
	var d int64
	for _, ji := range jobs {
		d += r.p.Jobs[ji].Elements
		r.traced(ji, "pcb-select")
	}
	tasks, err := pc.selectGroup(ctx, r, r.blocks(jobs), d)
	if err != nil {
		return fmt.Errorf("pcb: %w", err)
	}
	pc.model = tasks
	for i, t := range tasks {
		if t.none {
			r.sum.Warnings = append(r.sum.Warnings, Warning{Code: WarnPCBKeepsNothing, Model: r.p.Models[r.p.Jobs[jobs[0]].slot(i)].Path,
				Message: fmt.Sprintf("pcb: the largest β of model %d is its drop threshold (%v at rank ⌊d·(1 − ratio)⌋ of %d), so it keeps no element: its task vector takes no part", i+1, t.t, d)})
		}
	}
	return nil
}

func (pc *pcbTensors) merge(ctx context.Context, r *run, jobs []int) error {
	return eachJob(jobs, func(ji int) error {
		if r.p.Method.PCB.Scope == ScopeModel {
			return pc.mergeJob(ctx, r, ji, pc.model)
		}
		j := &r.p.Jobs[ji]
		if j.Elements == 0 {
			return nil // nothing to select or write
		}
		if r.readBytes(j, j.Elements) <= r.p.HotBytes {
			r.hot = true
			defer r.cool(ji)
		}
		r.traced(ji, "pcb-select")
		tasks, err := pc.selectGroup(ctx, r, r.blocks([]int{ji}), j.Elements)
		if err != nil {
			return err
		}
		pc.count(r, j.Name, tasks)
		return pc.mergeJob(ctx, r, ji, tasks)
	})
}

// count notes a tensor (tensor scope) where tasks keep nothing, in one
// warning for them all.
func (pc *pcbTensors) count(r *run, name string, tasks []pcbTask) {
	none := 0
	for _, t := range tasks {
		if t.none {
			none++
		}
	}
	switch none {
	case 0:
		return
	case len(tasks):
		pc.empty = append(pc.empty, name)
	default:
		pc.partial = append(pc.partial, name)
	}
	var msg string
	if len(pc.empty) > 0 {
		stays := "stays"
		if len(pc.empty) > 1 {
			stays = "stay"
		}
		msg = fmt.Sprintf("pcb: %s kept no element of any model (each task's largest β is its drop threshold, as where d·ratio ≤ 1) and %s the base's: %s",
			plural(len(pc.empty), "tensor", "tensors"), stays, listed(pc.empty))
	}
	if len(pc.partial) > 0 {
		if msg != "" {
			msg += "; "
		} else {
			msg = "pcb: "
		}
		msg += fmt.Sprintf("in %s some models kept no element: %s", plural(len(pc.partial), "tensor", "tensors"), listed(pc.partial))
	}
	w := Warning{Code: WarnPCBKeepsNothing, Message: msg}
	if pc.warning < 0 {
		pc.warning = len(r.sum.Warnings)
		r.sum.Warnings = append(r.sum.Warnings, w)
	} else {
		r.sum.Warnings[pc.warning] = w
	}
}

// pass runs fn over the blocks with every task's τ in w.taus; in model
// scope it is pass k of the merge's, with progress.
func (pc *pcbTensors) pass(ctx context.Context, r *run, bs []block, k int, fn func(sc *pcbScratch, w *worker, b block)) error {
	for i := range pc.ws {
		for h := range pc.ws[i].hists {
			pc.ws[i].hists[h].Reset()
		}
	}
	model := r.p.Method.PCB.Scope == ScopeModel
	if model {
		r.prog.StartPass(phaseSelect, k, len(r.p.Passes()), r.p.InputBytes)
		defer r.prog.EndPass()
	}
	return r.parallel(ctx, bs, func(w *worker, b block) error {
		r.deltas(w, b, nil)
		fn(&pc.ws[w.id], w, b)
		if model {
			r.prog.Add(r.readBytes(&r.p.Jobs[b.job], b.n))
		}
		return nil
	})
}

// merged adds every worker's histogram h into the first worker's, which it
// returns.
func (pc *pcbTensors) merged(h int) *topk.Hist {
	m := &pc.ws[0].hists[h]
	for k := 1; k < len(pc.ws); k++ {
		m.Take(&pc.ws[k].hists[h])
	}
	return m
}

// selectGroup finds every task's bounds over the blocks bs, a group of d
// elements: the clip bounds, then the drop threshold.
func (pc *pcbTensors) selectGroup(ctx context.Context, r *run, bs []block, d int64) ([]pcbTask, error) {
	n := r.p.width()
	if len(bs) > 0 {
		n = len(r.p.Jobs[bs[0].job].Models) // a group's jobs merge as many models
	}
	tasks := make([]pcbTask, n)
	loRank, hiRank, tRank := r.p.Method.PCB.indices(d)
	if tRank == d-1 { // the threshold is the maximum for every task
		for i := range tasks {
			tasks[i].none = true
		}
		return tasks, nil
	}
	if err := pc.clipBounds(ctx, r, bs, uint64(d-loRank), uint64(d-hiRank), tasks); err != nil {
		return nil, err
	}
	if err := pc.dropThresholds(ctx, r, bs, uint64(d-tRank), tasks); err != nil {
		return nil, err
	}
	return tasks, nil
}

// clipBounds sets every task's lo and hi, the kLo-th and kHi-th largest
// |τ| over bs, by a radix select (both in the same two passes).
func (pc *pcbTensors) clipBounds(ctx context.Context, r *run, bs []block, kLo, kHi uint64, tasks []pcbTask) error {
	n := len(tasks)
	B := r.stride
	tau := func(w *worker, i int, b block) []float32 { return w.taus[i*B : i*B+int(b.n)] }
	err := pc.pass(ctx, r, bs, 1, func(sc *pcbScratch, w *worker, b block) {
		for i := range n {
			sc.hists[2*i].AddHigh(tau(w, i, b))
		}
	})
	if err != nil {
		return err
	}
	binLo, aboveLo, binHi, aboveHi := make([]uint32, n), make([]uint64, n), make([]uint32, n), make([]uint64, n)
	for i := range n {
		h := pc.merged(2 * i)
		if binLo[i], aboveLo[i], err = h.Pick(kLo); err == nil {
			binHi[i], aboveHi[i], err = h.Pick(kHi)
		}
		if err != nil {
			return fmt.Errorf("model %d: clip bounds: %w", i+1, err)
		}
	}
	err = pc.pass(ctx, r, bs, 2, func(sc *pcbScratch, w *worker, b block) {
		for i := range n {
			x := tau(w, i, b)
			for h, bin := range [2]uint32{binLo[i], binHi[i]} {
				// The bin's values, located by the kernel's band search.
				at := w.idx[:r.k.Range(x, bin<<16, bin<<16|0xffff, w.idx)]
				for _, e := range at {
					sc.hists[2*i+h].Inc(math.Float32bits(x[e]) & 0xffff)
				}
			}
		}
	})
	if err != nil {
		return err
	}
	for i := range n {
		lo, err := topk.Exact(kLo, binLo[i], aboveLo[i], pc.merged(2*i))
		if err != nil {
			return fmt.Errorf("model %d: clip lo: %w", i+1, err)
		}
		hi, err := topk.Exact(kHi, binHi[i], aboveHi[i], pc.merged(2*i+1))
		if err != nil {
			return fmt.Errorf("model %d: clip hi: %w", i+1, err)
		}
		t := &tasks[i]
		t.lo, t.hi = math.Float32frombits(lo.Bits), math.Float32frombits(hi.Bits)
		t.span = float32(t.hi - t.lo)
	}
	return nil
}

// dropThresholds sets every task's t, the kT-th largest β over bs, and its
// distance to β's maximum, by a radix select over β's ordered keys whose
// first pass also finds the maximum. The tasks' clip bounds are set.
func (pc *pcbTensors) dropThresholds(ctx context.Context, r *run, bs []block, kT uint64, tasks []pcbTask) error {
	n := len(tasks)
	B := r.stride
	inter := r.p.Method.PCB.Inter
	for k := range pc.ws {
		clear(pc.ws[k].top)
	}
	err := pc.pass(ctx, r, bs, 3, func(sc *pcbScratch, w *worker, b block) {
		pcbBetas(sc, w.taus, B, int(b.n), tasks, inter)
		for i := range n {
			sc.top[i] = max(sc.top[i], sc.hists[2*i].AddOrderedHigh(sc.beta[i*B:i*B+int(b.n)]))
		}
	})
	if err != nil {
		return err
	}
	binT, aboveT, top := make([]uint32, n), make([]uint64, n), make([]uint32, n)
	for i := range n {
		if binT[i], aboveT[i], err = pc.merged(2 * i).Pick(kT); err != nil {
			return fmt.Errorf("model %d: drop threshold: %w", i+1, err)
		}
		for k := range pc.ws {
			top[i] = max(top[i], pc.ws[k].top[i])
		}
	}
	err = pc.pass(ctx, r, bs, 4, func(sc *pcbScratch, w *worker, b block) {
		pcbBetas(sc, w.taus, B, int(b.n), tasks, inter)
		for i := range n {
			sc.hists[2*i].AddOrderedLow(sc.beta[i*B:i*B+int(b.n)], binT[i])
		}
	})
	if err != nil {
		return err
	}
	for i := range n {
		th, err := topk.Exact(kT, binT[i], aboveT[i], pc.merged(2*i))
		if err != nil {
			return fmt.Errorf("model %d: drop threshold: %w", i+1, err)
		}
		t := &tasks[i]
		t.t = topk.OrderedValue(th.Bits)
		t.drop = float32(topk.OrderedValue(top[i]) - t.t)
		t.none = th.Bits == top[i]
		t.below = !math.IsInf(float64(t.t), 0) && t.t == t.t && t.drop == t.drop
	}
	return nil
}

// mergeJob is tensor ji's merge pass with the tasks' bounds.
func (pc *pcbTensors) mergeJob(ctx context.Context, r *run, ji int, tasks []pcbTask) error {
	r.hot = r.shared // the merge releases behind itself
	r.traced(ji, "pcb-merge")
	j := &r.p.Jobs[ji]
	keeps := false
	for _, t := range tasks {
		keeps = keeps || !t.none
	}
	inter := r.p.Method.PCB.Inter
	all := r.allModels(ji)
	B := r.stride
	return r.parallel(ctx, r.blocks([]int{ji}), func(w *worker, b block) error {
		n := int(b.n)
		out := w.tm[:n]
		if !keeps {
			clear(out)
			return r.finish(w, b, r.widenBase(w, b), out, j.Params.Lambda)
		}
		base := r.deltas(w, b, all)
		sc := &pc.ws[w.id]
		pcbBetas(sc, w.taus, B, n, tasks, inter)
		for e := range out {
			out[e] = pcbValue(w.taus[e:], sc.beta[e:], B, tasks, j.Params.Weights)
		}
		return r.finish(w, b, base, out, j.Params.Lambda)
	})
}

// pcbClamp is a task's clipped magnitude a = min(max(|τ|, lo), hi).
func pcbClamp(tau float32, t *pcbTask) float32 {
	return min(max(math.Float32frombits(math.Float32bits(tau)&^(1<<31)), t.lo), t.hi)
}

// pcbPlace is u = (a − lo)/(hi − lo), the place of the clipped magnitude
// between the bounds (0 if they are equal).
func pcbPlace(tau float32, t *pcbTask) float32 {
	if t.hi == t.lo {
		return 0
	}
	return float32(pcbClamp(tau, t)-t.lo) / t.span
}

// pcbSign is sign(x): 1, −1, 0, or NaN for NaN.
func pcbSign(x float32) float32 {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	case x == 0:
		return 0
	}
	return x
}

// exp32 and tanh32 evaluate in float64 and round once to float32.
func exp32(x float32) float32 { return float32(math.Exp(float64(x))) }

// tanh32 skips the evaluation where its rounding is known: for |x| < 2⁻¹³,
// tanh x lies within x³/3 of x, less than half the float32 spacing below x,
// so it rounds to x; for |x| ≥ 10, 1 − tanh|x| < 2e⁻²⁰ is below half the
// spacing below 1, so it rounds to ±1 (TestTanh32 checks both edges).
func tanh32(x float32) float32 {
	if math.Float32bits(x)&^(1<<31) < 0x39000000 { // |x| < 2⁻¹³
		return x
	}
	return tanhRounded(x)
}

func tanhRounded(x float32) float32 {
	if math.Abs(float64(x)) >= 10 {
		return float32(math.Copysign(1, float64(x)))
	}
	return float32(math.Tanh(float64(x)))
}

// pcbBetas fills sc.beta (task-major, stride B) with every task's β of a
// block's n elements, from their task vectors (same layout):
// β = exp(N·u²)·inter, every step rounded to float32, sums in task order.
// Task by task first (intra, and n = sign(τ)·u where inter reads it), then
// element by element across the tasks (inter).
func pcbBetas(sc *pcbScratch, taus []float32, B, n int, tasks []pcbTask, inter Inter) {
	N := len(tasks)
	for i := range tasks {
		var nv, diag []float32 // sum reads τ, not n; pairwise tanh(n·n)
		if inter != InterSum {
			nv = sc.n[i*B : i*B+n]
		}
		if inter == InterPairwise {
			diag = sc.diag[i*B : i*B+n]
		}
		sc.intraOf(i, &tasks[i], N, taus[i*B:i*B+n], sc.beta[i*B:i*B+n], nv, diag)
	}
	switch inter {
	case InterSum, InterNormSum:
		src := taus // S sums τ (sum) or n (normsum)
		if inter == InterNormSum {
			src = sc.n
		}
		for e := range n {
			s := src[e]
			for i := 1; i < N; i++ {
				s += src[i*B+e]
			}
			for i := range N {
				sc.beta[i*B+e] = float32(sc.beta[i*B+e] * tanh32(float32(taus[i*B+e]*s)))
			}
		}
	case InterPairwise:
		pair := sc.pair
		for e := range n {
			for i := range N {
				pair[i*N+i] = sc.diag[i*B+e]
				for j := i + 1; j < N; j++ {
					v := tanh32(float32(sc.n[i*B+e] * sc.n[j*B+e]))
					pair[i*N+j], pair[j*N+i] = v, v
				}
			}
			for i := range N {
				in := pair[i*N]
				for j := 1; j < N; j++ {
					in += pair[i*N+j]
				}
				sc.beta[i*B+e] = float32(sc.beta[i*B+e] * in)
			}
		}
	}
}

// intraOf fills beta with task i's intra = exp(N·(u·u)) of each τ, nv, if
// not nil, with n = sign(τ)·u, and diag, if not nil, with tanh(n·n), which
// is tanh(u·u): n is ±u or, where τ = 0, u = 0. They come from the task's
// table where |τ|'s low 16 bits are zero.
func (sc *pcbScratch) intraOf(i int, t *pcbTask, N int, tau, beta, nv, diag []float32) {
	if b := [2]uint32{math.Float32bits(t.lo), math.Float32bits(t.hi)}; sc.bounds[i] != b {
		clear(sc.slots[i])
		sc.bounds[i] = b
	}
	fN := float32(N)
	tab := sc.slots[i]
	of := func(x float32) pcbSlot {
		u := pcbPlace(x, t)
		sl := pcbSlot{u: u, intra: exp32(float32(fN * float32(u*u))), known: true}
		if diag != nil {
			sl.diag = tanh32(float32(u * u))
		}
		return sl
	}
	for e, x := range tau {
		var sl pcbSlot
		mag := math.Float32bits(x) &^ (1 << 31)
		switch slot := &tab[mag>>16]; {
		case mag&0xffff != 0:
			sl = of(x)
		case slot.known:
			sl = *slot
		default:
			sl = of(x)
			*slot = sl
		}
		beta[e] = sl.intra
		if nv != nil {
			nv[e] = float32(pcbSign(x) * sl.u)
		}
		if diag != nil {
			diag[e] = sl.diag
		}
	}
}

// pcbValue is one element's merged task vector m from its τ and β
// (taus[i·B], beta[i·B] for task i): s = (max(β, t) − t)/(top − t) per task
// (0 for a task that keeps nothing), m = Σ (c·wᵢ)·s / max(Σ s, 1e-12) with
// c = sign(τ)·a. A task with s = 0 adds nothing, not even a NaN of its c.
func pcbValue(taus, beta []float32, B int, tasks []pcbTask, weights []float32) float32 {
	var num, den float32
	first := true
	for i := range tasks {
		t := &tasks[i]
		if t.none || t.below && beta[i*B] <= t.t {
			continue
		}
		s := float32(max(beta[i*B], t.t)-t.t) / t.drop
		if s == 0 {
			continue
		}
		tau := taus[i*B]
		a := pcbClamp(tau, t)
		term := float32(float32(float32(pcbSign(tau)*a)*weights[i]) * s)
		if first {
			num, den, first = term, s, false
		} else {
			num, den = num+term, den+s
		}
	}
	return num / max(den, float32(1e-12))
}
