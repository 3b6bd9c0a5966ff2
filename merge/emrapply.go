package merge

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/tiesmm/tiesmm/internal/units"
	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// ApplyOptions are emr-apply's settings: task Task of the EMR output Dir,
// written as a model at Out.
type ApplyOptions struct {
	Dir        string // an EMR merge's output
	Task       string // a task's name, or its row in the masks (from 0)
	Base       string // "" : emr.json's base_model
	Out        string
	Force      bool
	OutDType   string // "" keeps each tensor's base dtype
	ShardBytes int64
	Threads    int   // 0: one per core, as many as MaxMemory allows
	BlockElems int   // 0: emrApplyBlock; a multiple of 8
	MaxMemory  int64 // 0: no bound
	Kernels    *kernels.Set
}

// ApplySummary is what emr-apply wrote.
type ApplySummary struct {
	Task        EMRTask
	Index       int
	Base        string
	OutputBytes int64
	Elapsed     time.Duration
	PeakRSS     int64
}

// emrApplyBlock is emr-apply's default block: its buffers, about 24 bytes
// an element per worker, stay small.
const emrApplyBlock = 1 << 16

// ReadEMRManifest reads and checks dir/emr.json.
func ReadEMRManifest(dir string) (*EMRManifest, error) {
	path := filepath.Join(dir, mmapio.EMRManifestName)
	data, err := mmapio.ReadRegular(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no such file: %s is not an EMR merge's output (tiesmm merge --method emr writes it)", path, dir)
	}
	if err != nil {
		return nil, err
	}
	var m EMRManifest
	if err := m.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("%s: corrupt: %w", path, err)
	}
	switch {
	case m.Format != EMRFormat:
		return nil, fmt.Errorf("%s: format %q, want %q", path, m.Format, EMRFormat)
	case m.Version != EMRVersion:
		return nil, fmt.Errorf("%s: version %d, this tiesmm reads version %d", path, m.Version, EMRVersion)
	case len(m.Tasks) == 0:
		return nil, fmt.Errorf("%s: corrupt: no tasks", path)
	}
	return &m, nil
}

// FindTask finds a task by name, or else by its row in the masks (from 0).
func (m *EMRManifest) FindTask(spec string) (int, error) {
	names := make([]string, len(m.Tasks))
	for i, t := range m.Tasks {
		if t.Name == spec {
			return i, nil
		}
		names[i] = t.Name
	}
	if i, err := strconv.Atoi(spec); err == nil && i >= 0 && i < len(m.Tasks) {
		return i, nil
	}
	return 0, fmt.Errorf("no task %q: the tasks are %v (by name, or by index from 0 to %d)", spec, names, len(m.Tasks)-1)
}

// ApplyEMR writes one task's model from an EMR output: θ₀ + float32(U·λₜ)
// where Mₜ, θ₀ elsewhere, rounded once to the output dtype, with the base's
// config and tokenizer files. The base must be the one the merge read
// (same header fingerprint). Like a merge, the model appears at Out only
// when complete.
func ApplyEMR(ctx context.Context, o ApplyOptions, prog Progress) (_ *ApplySummary, err error) {
	start := time.Now()
	if prog == nil {
		prog = noProgress{}
	}
	if o.Kernels == nil {
		o.Kernels = kernels.Generic
	}
	if o.BlockElems == 0 {
		o.BlockElems = emrApplyBlock
	}
	if o.BlockElems < 8 || o.BlockElems%8 != 0 {
		return nil, fmt.Errorf("--block-size %d: want a positive multiple of 8 (a mask byte holds 8 elements)", o.BlockElems)
	}
	if o.Threads, err = applyWorkers(o); err != nil {
		return nil, err
	}
	m, err := ReadEMRManifest(o.Dir)
	if err != nil {
		return nil, err
	}
	ti, err := m.FindTask(o.Task)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Dir, err)
	}
	if o.Base == "" {
		o.Base = m.BaseModel
	}
	base, err := openEMRBase(o.Base, o.Dir, m)
	if err != nil {
		return nil, err
	}
	unified, masks, err := emrReaders(o.Dir)
	if err != nil {
		return nil, err
	}
	defer unified.close()
	defer masks.close()
	a, layout, err := emrApplyTask(o, m, ti, base, unified.model, masks.model)
	if err != nil {
		return nil, err
	}
	cfg, err := readConfig(base.Dir)
	if err != nil {
		return nil, fmt.Errorf("base model: %w", err)
	}
	if err := checkExtras(base.Dir); err != nil {
		return nil, fmt.Errorf("base model: %w", err)
	}
	a.unified, a.masks, a.prog = unified.read, masks.read, prog
	inputs := append(modelPaths(base), o.Dir)
	out, err := mmapio.CreateOutput(o.Out, o.Force, layout, inputs...)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			aerr := out.Abort()
			if ctx.Err() != nil {
				err = &Interrupted{Partial: out.TempDir(), RemoveErr: aerr, Err: err}
			}
		}
	}()
	a.out = out
	prog.StartPass(phaseTask, 1, 1, layout.TotalSize)
	err = a.run(ctx)
	prog.EndPass()
	if err != nil {
		return nil, fmt.Errorf("emr-apply: task %s: %w", m.Tasks[ti].Name, err)
	}
	dt, one := taskOutDType(a.tensors)
	if err := writeBaseFiles(out, 0, base.Dir, cfg, dt, one, baseEdits{}); err != nil {
		return nil, err
	}
	if err := out.Commit(); err != nil {
		return nil, err
	}
	return &ApplySummary{Task: m.Tasks[ti], Index: ti, Base: o.Base, OutputBytes: layout.TotalSize,
		Elapsed: time.Since(start), PeakRSS: PeakRSS()}, nil
}

// applyWorkers is the workers emr-apply runs: the ones asked for if their
// buffers and the fixed overhead fit MaxMemory (else an error), or one per
// core, fewer if they do not fit.
func applyWorkers(o ApplyOptions) (int, error) {
	per := emrTaskWorkerBytes(int64(o.BlockElems))
	fit := math.MaxInt
	if o.MaxMemory > 0 {
		fit = int(max(0, (o.MaxMemory-fixedOverhead)/per))
	}
	workers := o.Threads
	if workers <= 0 {
		workers = min(runtime.GOMAXPROCS(0), max(fit, 1))
	}
	if workers > fit {
		return 0, fmt.Errorf("--max-memory %s is too small for %d worker(s) with blocks of %d elements: they need at least %s",
			units.FormatBinary(o.MaxMemory), workers, o.BlockElems, units.FormatBinary(fixedOverhead+int64(workers)*per))
	}
	return workers, nil
}

// openEMRBase opens the base and checks its fingerprint against emr.json's.
func openEMRBase(path, dir string, m *EMRManifest) (*mmapio.Model, error) {
	base, err := mmapio.OpenModel(path)
	if err != nil {
		return nil, fmt.Errorf("base model: %w", err)
	}
	fp, err := mmapio.HeaderFingerprint(base)
	if err != nil {
		return nil, fmt.Errorf("base model: %w", err)
	}
	if fp != m.BaseFingerprint {
		return nil, fmt.Errorf("base model %s has header fingerprint %s, but %s was merged from %s (fingerprint %s): give that base with --base",
			path, fp, filepath.Join(dir, mmapio.EMRManifestName), m.BaseModel, m.BaseFingerprint)
	}
	return base, nil
}

// emrApplyTask lists the task's tensors from the base, checks U and the
// masks against them, and lays out the model.
func emrApplyTask(o ApplyOptions, m *EMRManifest, ti int, base, unified, masks *mmapio.Model) (*emrTask, *mmapio.Layout, error) {
	var outDT *kernels.DType
	if o.OutDType != "" {
		dt, err := kernels.ParseDType(o.OutDType)
		if err != nil {
			return nil, nil, fmt.Errorf("--out-dtype: %w", err)
		}
		outDT = &dt
	}
	a := &emrTask{k: o.Kernels, task: ti, lambda: m.Tasks[ti].Rescaler, workers: o.Threads, block: o.BlockElems}
	outs := make([]mmapio.OutTensor, 0, len(base.Names))
	floats := 0
	for _, name := range base.Names {
		bt := base.Tensors[name]
		t := emrTaskTensor{name: name, base: bt}
		out := mmapio.OutTensor{Name: name, DType: bt.DType, Shape: bt.Shape}
		dt, isFloat := floatDType(bt.DType)
		switch {
		case isFloat:
			t.baseDT, t.outDT = dt, dt
			if outDT != nil {
				t.outDT, out.DType = *outDT, outDT.String()
			}
			if err := checkEMRTensor(unified, masks, bt, len(m.Tasks)); err != nil {
				return nil, nil, err
			}
			floats++
		case slices.Contains(copyable, bt.DType):
			t.copy = true
		default:
			return nil, nil, fmt.Errorf("%s: tensor %q: dtype %s is not supported (merged: F32, F16, BF16; copied: integer and bool)", bt.File, name, bt.DType)
		}
		a.tensors = append(a.tensors, t)
		outs = append(outs, out)
	}
	if floats != len(unified.Tensors) || floats != len(masks.Tensors) {
		return nil, nil, fmt.Errorf("%s: unified/ holds %d tensors and masks/ %d, but the base has %d float tensors", o.Dir, len(unified.Tensors), len(masks.Tensors), floats)
	}
	layout, err := mmapio.PlanLayout(outs, o.ShardBytes)
	if err != nil {
		return nil, nil, err
	}
	return a, layout, nil
}

// checkEMRTensor checks a base float tensor's U (F32, the same shape) and
// masks (U8 [N, ceil(n/8)]).
func checkEMRTensor(unified, masks *mmapio.Model, bt *mmapio.Tensor, tasks int) error {
	u, ok := unified.Tensors[bt.Name]
	if !ok {
		return fmt.Errorf("%s: tensor %q: missing from unified/, which the base %s has", unified.Path, bt.Name, bt.File)
	}
	if u.DType != "F32" || !slices.Equal(u.Shape, bt.Shape) {
		return fmt.Errorf("%s: tensor %q: %s %s in unified/, want F32 %s as in the base", u.File, bt.Name, u.DType, shapeString(u.Shape), shapeString(bt.Shape))
	}
	mk, ok := masks.Tensors[bt.Name]
	if !ok {
		return fmt.Errorf("%s: tensor %q: missing from masks/, which the base %s has", masks.Path, bt.Name, bt.File)
	}
	want := []int64{int64(tasks), maskRowBytes(bt.Elements())}
	if mk.DType != "U8" || !slices.Equal(mk.Shape, want) {
		return fmt.Errorf("%s: tensor %q: mask shape mismatch: %s %s, want U8 %s (%d tasks, %d elements)", mk.File, bt.Name, mk.DType, shapeString(mk.Shape), shapeString(want), tasks, bt.Elements())
	}
	return nil
}

// taskOutDType is the dtype of a task's float tensors when they share one.
func taskOutDType(ts []emrTaskTensor) (kernels.DType, bool) {
	var dt kernels.DType
	seen := false
	for _, t := range ts {
		if t.copy {
			continue
		}
		if seen && t.outDT != dt {
			return 0, false
		}
		dt, seen = t.outDT, true
	}
	return dt, seen
}

// modelPaths are a model's folder, files and index: what an output may not
// be, hold or lie inside.
func modelPaths(md *mmapio.Model) []string {
	paths := append([]string{md.Path, md.Dir}, md.Files...)
	if md.Index != "" {
		paths = append(paths, md.Index)
	}
	return paths
}

// emrFiles reads the tensors of an EMR output's folder with pread.
type emrFiles struct {
	model *mmapio.Model
	files map[string]*os.File
}

// emrReaders opens unified/ and masks/ for reading.
func emrReaders(dir string) (unified, masks *emrFiles, err error) {
	if unified, err = openEMRFiles(filepath.Join(dir, "unified")); err != nil {
		return nil, nil, err
	}
	if masks, err = openEMRFiles(filepath.Join(dir, "masks")); err != nil {
		unified.close()
		return nil, nil, err
	}
	return unified, masks, nil
}

func openEMRFiles(dir string) (*emrFiles, error) {
	md, err := mmapio.OpenModel(dir)
	if err != nil {
		return nil, fmt.Errorf("EMR output: %w", err)
	}
	e := &emrFiles{model: md, files: map[string]*os.File{}}
	for _, path := range md.Files {
		f, err := mmapio.OpenRegular(path)
		if err != nil {
			e.close()
			return nil, err
		}
		e.files[path] = f
	}
	return e, nil
}

func (e *emrFiles) close() {
	for _, f := range e.files {
		f.Close()
	}
}

// read is a tensorReader over the folder's tensors, within their bounds.
func (e *emrFiles) read(name string, off int64, p []byte) error {
	t, ok := e.model.Tensors[name]
	if !ok {
		return fmt.Errorf("%s: no tensor %q", e.model.Path, name)
	}
	if off < 0 || off+int64(len(p)) > t.Size {
		return fmt.Errorf("%s: tensor %q: %d bytes at %d are outside its %d bytes", t.File, name, len(p), off, t.Size)
	}
	if _, err := e.files[t.File].ReadAt(p, t.Offset+off); err != nil {
		return fmt.Errorf("%s: tensor %q: %w", t.File, name, err)
	}
	return nil
}
