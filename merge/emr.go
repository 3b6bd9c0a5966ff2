package merge

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/internal/units"
	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// EMR-Merging (Huang et al. 2024): one pass over the inputs elects the
// unified task vector U and each task's mask, writes both, and sums what the
// rescalers need, exactly; the rescalers are known at its end, and a task's
// model is a second pass over the base, U and the task's mask (emrtask.go),
// at merge time (--materialize) or later (tiesmm emr-apply).

// The parts of an EMR output, in the order CreateOutputParts takes them.
const (
	emrTop       = iota // emr.json, tiesmm_config.yml
	emrUnified          // unified/: U in F32, named and shaped as the base's float tensors
	emrMasks            // masks/: per tensor, U8 [N, ceil(n/8)], row t task t's mask
	emrFirstTask        // task-NAME/: the tasks written as models, in model order
)

// WarnEMRZeroRescaler: a task keeps nothing of U, so its model is the base.
const WarnEMRZeroRescaler = "emr-zero-rescaler"

// EMRFormat and EMRVersion identify emr.json.
const (
	EMRFormat  = "tiesmm-emr"
	EMRVersion = 1
)

// emrPlan is what an EMR merge writes besides the plan's Layout, which is
// one task's model.
type emrPlan struct {
	names       []string // per model, its task's name
	unified     *mmapio.Layout
	masks       *mmapio.Layout
	tasks       []int // the models whose task is written as a model too
	fingerprint string
}

// emrBlock is an EMR block for plan blocks of b elements: a mask byte holds
// 8 elements, so blocks start at multiples of 8.
func emrBlock(b int) int { return (b + 7) &^ 7 }

// planEMR lays out an EMR merge's output: U, the masks and the tasks to
// materialise.
func (p *Plan) planEMR() error {
	if p.Method.OwnPath != PathEMR {
		if p.Opts.Materialize != "" {
			return fmt.Errorf("--materialize %s: only emr writes tasks", p.Opts.Materialize)
		}
		return nil
	}
	if p.vocab != nil {
		return fmt.Errorf("emr: tokenizer_source %s is not supported: a task is rebuilt on the base's own rows (emr-apply adds the unified vector to the base)", p.Opts.Vocab.Source)
	}
	e := &emrPlan{names: emrTaskNames(p.Opts.Models)}
	n := int64(len(p.Models))
	var us, ms []mmapio.OutTensor
	for _, j := range p.Jobs {
		if j.Copy {
			continue
		}
		if j.Rows != nil || !slices.Equal(j.Shape, j.Base.Shape) {
			return fmt.Errorf("emr: tensor %q: the models' embeddings differ in size from the base's %s; a task is rebuilt on the base's own rows, so emr needs them all of its size", j.Name, shapeString(j.Base.Shape))
		}
		us = append(us, mmapio.OutTensor{Name: j.Name, DType: "F32", Shape: j.Shape})
		ms = append(ms, mmapio.OutTensor{Name: j.Name, DType: "U8", Shape: []int64{n, maskRowBytes(j.Elements)}})
	}
	if len(us) == 0 {
		return errors.New("emr: the base has no float tensors to merge")
	}
	var err error
	if e.unified, err = mmapio.PlanLayout(us, p.Opts.ShardBytes); err != nil {
		return fmt.Errorf("emr: unified: %w", err)
	}
	if e.masks, err = mmapio.PlanLayout(ms, p.Opts.ShardBytes); err != nil {
		return fmt.Errorf("emr: masks: %w", err)
	}
	names, err := json.Marshal(e.names)
	if err != nil {
		return err
	}
	e.masks.SetMetadata([][2]string{{"bitorder", "little"}, {"tasks", string(names)}})
	if e.tasks, err = emrMaterialize(p.Opts.Materialize, e.names); err != nil {
		return err
	}
	if e.fingerprint, err = mmapio.HeaderFingerprint(p.Base); err != nil {
		return fmt.Errorf("base model: %w", err)
	}
	p.OutputBytes = e.unified.TotalSize + e.masks.TotalSize + int64(len(e.tasks))*p.OutputBytes
	p.emr = e
	return nil
}

// maskRowBytes is the bytes of one task's mask of a tensor of n elements.
func maskRowBytes(n int64) int64 { return (n + 7) / 8 }

// emrTaskNames names each model's task after the last element of its path
// (without .safetensors); names that repeat get -K, K the model's number.
func emrTaskNames(paths []string) []string {
	names := make([]string, len(paths))
	count := map[string]int{}
	for i, path := range paths {
		name := strings.TrimSuffix(filepath.Base(filepath.Clean(path)), ".safetensors")
		if name == "" || name == "." || name == ".." || name == "/" {
			name = fmt.Sprintf("task%d", i+1)
		}
		names[i] = name
		count[name]++
	}
	for i, name := range names {
		if count[name] > 1 {
			names[i] = fmt.Sprintf("%s-%d", name, i+1)
		}
	}
	return names
}

// emrMaterialize reads --materialize: "" none, "all", or one task's name.
func emrMaterialize(spec string, names []string) ([]int, error) {
	switch spec {
	case "":
		return nil, nil
	case "all":
		all := make([]int, len(names))
		for i := range all {
			all[i] = i
		}
		return all, nil
	}
	for i, name := range names {
		if name == spec {
			return []int{i}, nil
		}
	}
	return nil, fmt.Errorf("--materialize %s: no task of that name (tasks: %s; or all)", spec, strings.Join(names, ", "))
}

// outputParts are the model folders the merge writes: one, or EMR's.
func (p *Plan) outputParts() []mmapio.OutPart {
	e := p.emr
	if e == nil {
		return []mmapio.OutPart{{Layout: p.Layout}}
	}
	parts := []mmapio.OutPart{{}, {Dir: "unified", Layout: e.unified}, {Dir: "masks", Layout: e.masks}}
	for _, t := range e.tasks {
		parts = append(parts, mmapio.OutPart{Dir: "task-" + e.names[t], Layout: p.Layout})
	}
	return parts
}

// parseEMRRescale reads emr's rescale: mean (the default) or l1.
func parseEMRRescale(p config.Param) (Rescale, error) {
	switch {
	case p.Kind == config.KindString && p.Str == "mean":
		return RescaleMean, nil
	case p.Kind == config.KindString && p.Str == "l1":
		return RescaleL1, nil
	}
	return 0, errors.New("emr: rescale: want mean or l1")
}

// absSums adds float32 magnitudes exactly: per exponent, the sum of the
// significands (below 2^24 each), in four interleaved sets so that
// consecutive elements do not wait on one counter. A counter takes 2^40
// values, more than any tensor has. It takes the chunks whose float64 sum
// the kernel cannot show exact (emrSum).
type absSums [4][256]uint64

// addBits adds the magnitude of the float32 with bits u.
func (a *absSums) addBits(set int, u uint32) {
	u &^= 1 << 31
	m := u&(1<<23-1) | min(u>>23, 1)<<23 // the implicit bit, unless subnormal
	a[set&3][u>>23] += uint64(m)
}

// addMasked adds |v| of the values whose bit is set in mask (bit e&7 of
// byte e>>3), or of every value if mask is nil.
func (a *absSums) addMasked(vals []float32, mask []byte) {
	for e, v := range vals {
		keep := ^uint32(0)
		if mask != nil {
			keep = -uint32(mask[e>>3] >> (e & 7) & 1)
		}
		a.addBits(e, math.Float32bits(v)&keep)
	}
}

// fold adds the sums to s and clears them; a NaN or infinity (exponent
// 255) makes s non-finite.
func (a *absSums) fold(s *wideSum) {
	for e := range 256 {
		m := a[0][e] + a[1][e] + a[2][e] + a[3][e]
		switch {
		case m == 0:
		case e == 255:
			s.nan = true
		default:
			// In two parts, each exact in a float64.
			s.add(math.Ldexp(float64(m>>32), max(e, 1)-150+32))
			s.add(math.Ldexp(float64(m&(1<<32-1)), max(e, 1)-150))
		}
	}
	*a = absSums{}
}

// emrSum adds one task's chunk sums (kernels.EMRBlock) exactly, whatever
// their order: a run of chunk sums whose float64 total kernels.EMRExact
// shows exact, flushed into a wideSum when the next would not be; a chunk
// whose own sum it cannot show exact is added again, value by value, in
// an absSums. So a total depends on the values only, not on blocks, threads
// or the kernel set.
type emrSum struct {
	run  float64
	low  uint32 // ^ the run's least magnitude bits minus one: 0 when empty
	wide wideSum
	hist absSums
}

// add adds one chunk's sum and least magnitude bits minus one; vals (with
// mask, or all of them if nil) are the chunk's values.
func (s *emrSum) add(sum float64, min1 uint32, vals []float32, mask []byte) {
	if !kernels.EMRExact(sum, min1) {
		s.hist.addMasked(vals, mask)
		return
	}
	m := min(^s.low, min1)
	if r := s.run + sum; kernels.EMRExact(r, m) {
		s.run, s.low = r, ^m
		return
	}
	s.wide.add(s.run)
	s.run, s.low = sum, ^min1
}

// fold adds the sums to w and clears them.
func (s *emrSum) fold(w *wideSum) {
	s.wide.add(s.run)
	s.hist.fold(&s.wide)
	w.merge(&s.wide)
	*s = emrSum{}
}

// emrWorker is a worker's scratch for the EMR pass.
type emrWorker struct {
	a, b []emrSum // per task: Σ|τₜ| and Σ|Mₜ·U| of the worker's blocks of a tensor
	mask []byte   // per task, one row of the block's mask bits
	blk  kernels.EMRBlock
	sums []float64 // per task and chunk: the kernel's ASum, then BSum
	mins []uint32  // and AMin, BMin
}

// emrWorkerBytes is a worker's EMR scratch with blocks of b elements and n
// models, and its share of a task's pass (emrtask.go).
func emrWorkerBytes(n, b int64) int64 {
	chunks := (b + kernels.EMRChunk - 1) / kernels.EMRChunk
	return 2*n*int64(unsafe.Sizeof(emrSum{})) + n*(b/8+1) + 2*n*chunks*12 + 4*kernels.EMRChunk + emrTaskWorkerBytes(b)
}

// emrTensors runs the EMR pass (PathEMR), tensor by tensor, and keeps the
// sums the rescalers need.
type emrTensors struct {
	perTensor
	models []int
	ws     []emrWorker
	// Per job and task, Σ|τₜ| and Σ|Mₜ·U| over the tensor (rounded once),
	// for the mean rescale; per task, over the model, for l1.
	tensorA, tensorB [][]float64
	modelA, modelB   []wideSum
}

func newEMRTensors(r *run) *emrTensors {
	n := len(r.p.Models)
	s := &emrTensors{models: indices(n), ws: make([]emrWorker, len(r.ws)),
		tensorA: make([][]float64, len(r.p.Jobs)), tensorB: make([][]float64, len(r.p.Jobs)),
		modelA: make([]wideSum, n), modelB: make([]wideSum, n)}
	for k := range s.ws {
		chunks := kernels.EMRChunks(r.stride)
		s.ws[k] = emrWorker{a: make([]emrSum, n), b: make([]emrSum, n), mask: make([]byte, n*(r.stride/8+1)),
			sums: make([]float64, 2*n*chunks), mins: make([]uint32, 2*n*chunks)}
		s.ws[k].blk.Scratch = make([]float32, kernels.EMRChunk)
	}
	return s
}

func (s *emrTensors) merge(ctx context.Context, r *run, jobs []int) error {
	return eachJob(jobs, func(ji int) error {
		j := &r.p.Jobs[ji]
		r.traced(ji, "emr")
		if j.Copy {
			r.prog.Add(j.Base.Size) // only the tasks' models hold it, copied from the base
			return nil
		}
		err := r.parallel(ctx, r.blocks([]int{ji}), func(w *worker, b block) error { return s.block(r, w, b) })
		if err != nil {
			return err
		}
		n := len(j.Models)
		s.tensorA[ji], s.tensorB[ji] = make([]float64, n), make([]float64, n)
		for t := range n {
			var a, b wideSum
			for k := range s.ws {
				s.ws[k].a[t].fold(&a)
				s.ws[k].b[t].fold(&b)
			}
			s.tensorA[ji][t], s.tensorB[ji][t] = a.value(), b.value()
			s.modelA[t].merge(&a)
			s.modelB[t].merge(&b)
		}
		return nil
	})
}

// block elects U over one block, writes it and the block's mask bits, and
// adds the block's sums.
func (s *emrTensors) block(r *run, w *worker, b block) error {
	j := &r.p.Jobs[b.job]
	n, N := int(b.n), len(j.Models)
	r.deltas(w, b, s.models)
	ew := &s.ws[w.id]
	row := int(maskRowBytes(b.n))
	mask := ew.mask[:N*row]
	u := w.tm[:n]
	nc := kernels.EMRChunks(n)
	k := &ew.blk
	k.U, k.Taus, k.Stride, k.Tasks, k.Mask, k.Row = u, w.taus, r.stride, N, mask, row
	k.ASum, k.BSum = ew.sums[:N*nc], ew.sums[N*nc:2*N*nc]
	k.AMin, k.BMin = ew.mins[:N*nc], ew.mins[N*nc:2*N*nc]
	r.k.EMRElect(k)
	for t := range N {
		tau, m := w.taus[t*r.stride:t*r.stride+n], mask[t*row:(t+1)*row]
		for c := range nc {
			lo, hi, i := c*kernels.EMRChunk, min(n, (c+1)*kernels.EMRChunk), c*N+t
			ew.a[t].add(k.ASum[i], k.AMin[i], tau[lo:hi], nil)
			ew.b[t].add(k.BSum[i], k.BMin[i], u[lo:hi], m[lo/8:(hi+7)/8])
		}
	}
	out := w.outb[:4*n]
	for e, v := range u {
		binary.LittleEndian.PutUint32(out[4*e:], math.Float32bits(v))
	}
	if err := r.out.WritePartTensor(emrUnified, j.Name, 4*b.start, out); err != nil {
		return err
	}
	rowOff := b.start / 8 // blocks start at multiples of 8
	for t := range N {
		if err := r.out.WritePartTensor(emrMasks, j.Name, int64(t)*maskRowBytes(j.Elements)+rowOff, mask[t*row:(t+1)*row]); err != nil {
			return err
		}
	}
	r.prog.Add(r.readBytes(j, b.n))
	return nil
}

// emrRescalers are the tasks' λₜ = float32(Aₜ/Bₜ) (0 where Bₜ = 0) and
// the sums: per-tensor means of |τₜ| and |Mₜ·U| added in tensor order
// (mean), or whole-model sums (l1).
func (s *emrTensors) rescalers(p *Plan) (lambda []float32, a, b []float64) {
	n := len(p.Models)
	lambda, a, b = make([]float32, n), make([]float64, n), make([]float64, n)
	for t := range n {
		if p.Method.Rescale == RescaleL1 {
			a[t], b[t] = s.modelA[t].value(), s.modelB[t].value()
		} else {
			for ji, j := range p.Jobs {
				if j.Copy || j.Elements == 0 {
					continue
				}
				a[t] += s.tensorA[ji][t] / float64(j.Elements)
				b[t] += s.tensorB[ji][t] / float64(j.Elements)
			}
		}
		if b[t] != 0 {
			lambda[t] = float32(a[t] / b[t])
		}
	}
	return lambda, a, b
}

// EMRTask is one task of an EMR merge, as emr.json lists it.
type EMRTask struct {
	Name     string  `json:"name"`
	Model    string  `json:"model"`
	Rescaler float32 `json:"-"`
}

// EMRManifest is emr.json: what a task's model is rebuilt from besides
// unified/ and masks/.
type EMRManifest struct {
	Format          string    `json:"format"`
	Version         int       `json:"version"`
	BaseModel       string    `json:"base_model"`
	BaseFingerprint string    `json:"base_fingerprint"`
	Rescale         string    `json:"rescale"`
	Tasks           []EMRTask `json:"tasks"`
}

// emrTaskJSON writes a rescaler with 9 significant digits, which parse
// back (through float64) to the same float32.
type emrTaskJSON struct {
	Name     string      `json:"name"`
	Model    string      `json:"model"`
	Rescaler json.Number `json:"rescaler"`
}

// MarshalJSON writes the manifest with each rescaler's 9 digits.
func (m EMRManifest) MarshalJSON() ([]byte, error) {
	type plain EMRManifest
	tasks := make([]emrTaskJSON, len(m.Tasks))
	for i, t := range m.Tasks {
		tasks[i] = emrTaskJSON{t.Name, t.Model, json.Number(strconv.FormatFloat(float64(t.Rescaler), 'g', 9, 32))}
	}
	return json.Marshal(struct {
		plain
		Tasks []emrTaskJSON `json:"tasks"`
	}{plain(m), tasks})
}

// UnmarshalJSON reads a manifest, each rescaler rounded to float32.
func (m *EMRManifest) UnmarshalJSON(data []byte) error {
	type plain EMRManifest
	var v struct {
		plain
		Tasks []emrTaskJSON `json:"tasks"`
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return err
	}
	*m = EMRManifest(v.plain)
	m.Tasks = make([]EMRTask, len(v.Tasks))
	for i, t := range v.Tasks {
		f, err := strconv.ParseFloat(string(t.Rescaler), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(float64(float32(f))) || math.IsInf(float64(float32(f)), 0) {
			return fmt.Errorf("task %d (%s): rescaler %q is not a finite number", i, t.Name, t.Rescaler)
		}
		m.Tasks[i] = EMRTask{Name: t.Name, Model: t.Model, Rescaler: float32(f)}
	}
	return nil
}

// EMRSummary is what an EMR merge found: per task, its name and rescaler.
type EMRSummary struct {
	Tasks []EMRTask
}

// finishEMR computes the rescalers, writes the tasks asked for and emr.json.
func (r *run) finishEMR(ctx context.Context) error {
	p, e := r.p, r.p.emr
	var s *emrTensors
	for _, impl := range r.paths {
		if x, ok := impl.(*emrTensors); ok {
			s = x
		}
	}
	lambda, a, b := s.rescalers(p)
	m := EMRManifest{Format: EMRFormat, Version: EMRVersion, BaseModel: p.Opts.Base, BaseFingerprint: e.fingerprint, Rescale: "mean"}
	if p.Method.Rescale == RescaleL1 {
		m.Rescale = "l1"
	}
	for t, name := range e.names {
		if math.IsNaN(a[t]+b[t]) || math.IsInf(a[t]+b[t], 0) || math.IsInf(float64(lambda[t]), 0) {
			return fmt.Errorf("emr: task %s (%s): the rescaler is not finite (Σ|τ| %v, Σ|M·U| %v): the model or the base holds NaN or infinite values", name, p.Opts.Models[t], a[t], b[t])
		}
		if b[t] == 0 {
			r.sum.Warnings = append(r.sum.Warnings, Warning{Code: WarnEMRZeroRescaler, Model: p.Opts.Models[t],
				Message: fmt.Sprintf("emr: task %s keeps no element of the unified task vector (its task vector is zero or outvoted everywhere): its rescaler is 0, so its model is the base", name)})
		}
		m.Tasks = append(m.Tasks, EMRTask{Name: name, Model: p.Opts.Models[t], Rescaler: lambda[t]})
	}
	r.sum.EMR = &EMRSummary{Tasks: m.Tasks}
	for k, t := range e.tasks {
		task := &emrTask{k: r.k, tensors: planTaskTensors(p), task: t, lambda: lambda[t],
			unified: func(name string, off int64, b []byte) error { return r.out.ReadPartTensor(emrUnified, name, off, b) },
			masks:   func(name string, off int64, b []byte) error { return r.out.ReadPartTensor(emrMasks, name, off, b) },
			out:     r.out, part: emrFirstTask + k, workers: p.Workers, block: emrBlock(p.BlockElems), prog: r.prog}
		r.prog.StartPass(phaseTask, k+1, len(e.tasks), p.Layout.TotalSize)
		err := task.run(ctx)
		r.prog.EndPass()
		if err != nil {
			return fmt.Errorf("emr: task %s: %w", e.names[t], err)
		}
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return r.out.WritePartFile(emrTop, mmapio.EMRManifestName, append(data, '\n'))
}

// describeEMR prints the output's folders and the tasks written as models.
func (p *Plan) describeEMR(w io.Writer) {
	e := p.emr
	rescale := "mean"
	if p.Method.Rescale == RescaleL1 {
		rescale = "l1"
	}
	fmt.Fprintf(w, "emr:      tasks %s; rescale %s; unified/ F32 %s in %d shard(s), masks/ %s\n", strings.Join(e.names, ", "), rescale,
		units.FormatDecimal(e.unified.TotalSize), len(e.unified.Shards), units.FormatDecimal(e.masks.TotalSize))
	if len(e.tasks) > 0 {
		names := make([]string, len(e.tasks))
		for k, t := range e.tasks {
			names[k] = "task-" + e.names[t] + "/"
		}
		fmt.Fprintf(w, "emr:      then a pass per task: %s, %s each\n", strings.Join(names, ", "), units.FormatDecimal(p.Layout.TotalSize))
	}
}
