package merge

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// emrRun merges with emr and returns the summary.
func emrRun(t *testing.T, opts Options, rescale Rescale) *Summary {
	t.Helper()
	m := newMethod(t, "emr", "")
	m.Rescale = rescale
	n := len(opts.Models)
	tp := ownParamsFor(n, math.NaN(), 1)
	p, err := NewPlan(opts, m, func(string, int, int) (TensorParams, error) { return tp, nil })
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Run(context.Background(), p, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// maskBit decodes element e of row t of a packed mask, written out here
// from the layout's definition: U8 [N, ceil(n/8)], element e of row t at
// bit e mod 8 (least significant first) of byte t·ceil(n/8) + e div 8.
func maskBit(mask []byte, n int64, t int, e int64) bool {
	row := (n + 7) / 8
	return mask[int64(t)*row+e/8]>>(e%8)&1 == 1
}

// readManifest reads emr.json with the standard decoder's float64 path.
func readManifest(t *testing.T, dir string) *EMRManifest {
	t.Helper()
	m, err := ReadEMRManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Worked by hand: one tensor w of 4 elements and one b of 1, three tasks.
//
//	τ1 = ( 1, −2,  2,   0 | 4)
//	τ2 = (−1,  3, −0.5, 0 | 0)
//	τ3 = ( 0,  0,  0,   0 | 0)
//
// w: S = (0, 1, 1.5, 0): γ = (−1, +1, +1, −1) (an exact zero sum elects −1).
// M1 = (0,0,1,0), M2 = (1,1,0,0), M3 = 0; U = (−1, 3, 2, +0): no task
// agrees at e = 3 (all zero), so +0. b: S = 4, M1 = 1, U = 4.
// mean: A1 = 5/4 + 4 = 5.25, B1 = 2/4 + 4 = 4.5, λ1 = 7/6; A2 = 4.5/4,
// B2 = 4/4, λ2 = 1.125; B3 = 0: λ3 = 0 with a warning.
// l1: λ1 = (5+4)/(2+4) = 1.5, λ2 = 4.5/4 = 1.125.
func TestEMRGolden(t *testing.T) {
	dir := t.TempDir()
	base := []testTensor{
		{name: "w", shape: []int64{4}, dt: kernels.F32, vals: []float32{10, 10, 10, 10}},
		{name: "b", shape: []int64{1}, dt: kernels.F32, vals: []float32{1}},
		{name: "steps", shape: []int64{2}, ints: []int64{7, 8}},
	}
	taus := [][]float32{{1, -2, 2, 0, 4}, {-1, 3, -0.5, 0, 0}, {0, 0, 0, 0, 0}}
	writeModel(t, filepath.Join(dir, "base"), base, 0)
	var models []string
	for i, tau := range taus {
		ts := []testTensor{
			{name: "w", shape: []int64{4}, dt: kernels.F32, vals: []float32{10 + tau[0], 10 + tau[1], 10 + tau[2], 10 + tau[3]}},
			{name: "b", shape: []int64{1}, dt: kernels.F32, vals: []float32{1 + tau[4]}},
			{name: "steps", shape: []int64{2}, ints: []int64{0, 0}},
		}
		path := filepath.Join(dir, "ft"+strconv.Itoa(i+1))
		writeModel(t, path, ts, 0)
		models = append(models, path)
	}
	for _, rc := range []struct {
		rescale Rescale
		name    string
		lambda  []float32
	}{{RescaleMean, "mean", []float32{float32(5.25 / 4.5), 1.125, 0}}, {RescaleL1, "l1", []float32{1.5, 1.125, 0}}} {
		t.Run(rc.name, func(t *testing.T) {
			out := filepath.Join(dir, "out-"+rc.name)
			sum := emrRun(t, Options{Base: filepath.Join(dir, "base"), Models: models, Out: out, Materialize: "all"}, rc.rescale)
			_, u := readModel(t, filepath.Join(out, "unified"))
			wantU := []uint32{math.Float32bits(-1), math.Float32bits(3), math.Float32bits(2), 0}
			for e, v := range decode(kernels.F32, u["w"]) {
				if math.Float32bits(v) != wantU[e] {
					t.Errorf("U[w][%d] = %v (%#x), want %#x", e, v, math.Float32bits(v), wantU[e])
				}
			}
			if got := decode(kernels.F32, u["b"]); got[0] != 4 {
				t.Errorf("U[b] = %v, want 4", got)
			}
			if _, ok := u["steps"]; ok {
				t.Error("unified/ holds the integer tensor")
			}
			mm, masks := readModel(t, filepath.Join(out, "masks"))
			if got := string(masks["w"]); got != "\x04\x03\x00" {
				t.Errorf("masks[w] = %q, want rows 0b0100, 0b0011, 0", got)
			}
			if got := string(masks["b"]); got != "\x01\x00\x00" {
				t.Errorf("masks[b] = %q", got)
			}
			if mm.Metadata["bitorder"] != "little" || mm.Metadata["tasks"] != `["ft1","ft2","ft3"]` {
				t.Errorf("masks metadata %v", mm.Metadata)
			}
			man := readManifest(t, out)
			if man.Rescale != rc.name || man.BaseModel != filepath.Join(dir, "base") || len(man.Tasks) != 3 {
				t.Fatalf("emr.json %+v", man)
			}
			for i, task := range man.Tasks {
				if task.Rescaler != rc.lambda[i] || task.Name != "ft"+strconv.Itoa(i+1) || task.Model != models[i] {
					t.Errorf("task %d: %+v, want rescaler %v", i, task, rc.lambda[i])
				}
			}
			if len(sum.Warnings) != 2 || sum.Warnings[1].Code != WarnEMRZeroRescaler || sum.Warnings[1].Model != models[2] {
				t.Errorf("warnings %v, want the copied integer tensor and task ft3's zero rescaler", sum.Warnings)
			}
			l1 := rc.lambda[0]
			wantTask := [][]float32{
				{10, 10, 10 + float32(2*l1), 10, 1 + float32(4*l1)},
				{10 + float32(-1*1.125), 10 + float32(3*1.125), 10, 10, 1},
				{10, 10, 10, 10, 1},
			}
			for i := range 3 {
				_, task := readModel(t, filepath.Join(out, "task-ft"+strconv.Itoa(i+1)))
				got := append(decode(kernels.F32, task["w"]), decode(kernels.F32, task["b"])...)
				for e := range got {
					if got[e] != wantTask[i][e] {
						t.Errorf("task %d: element %d = %v, want %v", i+1, e, got[e], wantTask[i][e])
					}
				}
				if string(task["steps"]) != string(encodeInts(7, 8)) {
					t.Errorf("task %d: the integer tensor is not the base's", i+1)
				}
			}
		})
	}
}

func encodeInts(vs ...int64) []byte {
	b := make([]byte, 8*len(vs))
	for i, v := range vs {
		for k := range 8 {
			b[8*i+k] = byte(uint64(v) >> (8 * k))
		}
	}
	return b
}

// refEMR is the semantics written plainly over whole tensors (order: the
// base's tensors as the model lists them): U and the masks per tensor, and
// the rescalers from exact sums.
type refEMR struct {
	u      map[string][]float32
	masks  map[string][][]bool
	lambda []float32
}

func refEMRMerge(names []string, base map[string][]float32, models []map[string][]float32, rescale Rescale) refEMR {
	n := len(models)
	ref := refEMR{u: map[string][]float32{}, masks: map[string][][]bool{}, lambda: make([]float32, n)}
	a, b := make([]float64, n), make([]float64, n)
	wholeA, wholeB := make([][]float64, n), make([][]float64, n)
	for _, name := range names {
		bv, ok := base[name]
		if !ok {
			continue
		}
		taus := make([][]float32, n)
		for t := range n {
			taus[t] = make([]float32, len(bv))
			for e := range bv {
				taus[t][e] = models[t][name][e] - bv[e]
			}
		}
		u := make([]float32, len(bv))
		masks := make([][]bool, n)
		for t := range masks {
			masks[t] = make([]bool, len(bv))
		}
		for e := range bv {
			s := taus[0][e]
			for t := 1; t < n; t++ {
				s += taus[t][e]
			}
			gamma := float32(-1)
			if s > 0 {
				gamma = 1
			}
			var top float32
			for t := range n {
				if taus[t][e]*gamma > 0 {
					masks[t][e] = true
					top = max(top, float32(math.Abs(float64(taus[t][e]))))
				}
			}
			if top != 0 {
				u[e] = gamma * top
			}
		}
		ref.u[name], ref.masks[name] = u, masks
		for t := range n {
			absTau, absMU := make([]float64, len(bv)), make([]float64, len(bv))
			for e := range bv {
				absTau[e] = math.Abs(float64(taus[t][e]))
				if masks[t][e] {
					absMU[e] = math.Abs(float64(u[e]))
				}
			}
			wholeA[t] = append(wholeA[t], absTau...)
			wholeB[t] = append(wholeB[t], absMU...)
			if len(bv) > 0 {
				a[t] += refExactSum(absTau) / float64(len(bv))
				b[t] += refExactSum(absMU) / float64(len(bv))
			}
		}
	}
	for t := range n {
		if rescale == RescaleL1 {
			a[t], b[t] = refExactSum(wholeA[t]), refExactSum(wholeB[t])
		}
		if b[t] != 0 {
			ref.lambda[t] = float32(a[t] / b[t])
		}
	}
	return ref
}

// refEMRTask is task t's model before the output's rounding.
func (ref refEMR) task(name string, base []float32, t int) []float32 {
	out := make([]float32, len(base))
	for e := range base {
		out[e] = base[e]
		if ref.masks[name][t][e] {
			out[e] = base[e] + float32(ref.u[name][e]*ref.lambda[t])
		}
	}
	return out
}

// TestEMRMatchesReference merges random sets with emr on every kernel set,
// one to three workers and several block sizes, materialising every task,
// and holds U, the masks (bits decoded here), the rescalers and the tasks to
// the reference, bit for bit.
func TestEMRMatchesReference(t *testing.T) {
	for _, ks := range kernels.Available() {
		t.Run(ks.Name, func(t *testing.T) {
			for trial := range 4 {
				r := rand.New(rand.NewPCG(23, uint64(trial)))
				n := 1 + r.IntN(3)
				set := randomSet(r, n, false)
				dir := t.TempDir()
				base, paths := set.write(t, dir, r)
				rescale := []Rescale{RescaleMean, RescaleL1}[trial%2]
				opts := Options{Base: base, Models: paths, Out: filepath.Join(dir, "out"), Kernels: ks,
					Threads: 1 + trial%3, BlockElems: []int{1, 8, 64, 1000, 0}[r.IntN(5)], Materialize: "all", ShardBytes: []int64{0, 3000}[r.IntN(2)]}
				var outDT *kernels.DType
				if r.IntN(2) == 0 {
					dt := []kernels.DType{kernels.F32, kernels.F16, kernels.BF16}[r.IntN(3)]
					outDT, opts.OutDType = &dt, dt.String()
				}
				emrRun(t, opts, rescale)
				checkEMROutput(t, set, base, opts.Out, rescale, outDT)
			}
		})
	}
}

// checkEMROutput holds an EMR output to the reference.
func checkEMROutput(t *testing.T, set testSet, basePath, out string, rescale Rescale, outDT *kernels.DType) {
	t.Helper()
	bm, err := mmapio.OpenModel(basePath)
	if err != nil {
		t.Fatal(err)
	}
	base := map[string][]float32{}
	models := make([]map[string][]float32, len(set.models))
	for ti, bt := range set.base {
		if bt.ints != nil {
			continue
		}
		base[bt.name] = bt.vals
		for i := range set.models {
			if models[i] == nil {
				models[i] = map[string][]float32{}
			}
			models[i][bt.name] = set.models[i][ti].vals
		}
	}
	ref := refEMRMerge(bm.Names, base, models, rescale)
	man := readManifest(t, out)
	for i, task := range man.Tasks {
		if task.Rescaler != ref.lambda[i] {
			t.Fatalf("task %d: rescaler %v, want %v", i, task.Rescaler, ref.lambda[i])
		}
	}
	_, u := readModel(t, filepath.Join(out, "unified"))
	_, masks := readModel(t, filepath.Join(out, "masks"))
	for _, bt := range set.base {
		if bt.ints != nil {
			continue
		}
		got := decode(kernels.F32, u[bt.name])
		n := int64(len(bt.vals))
		if int64(len(masks[bt.name])) != int64(len(set.models))*((n+7)/8) {
			t.Fatalf("%s: %d mask bytes for %d elements", bt.name, len(masks[bt.name]), n)
		}
		for e := range got {
			if math.Float32bits(got[e]) != math.Float32bits(ref.u[bt.name][e]) {
				t.Fatalf("%s: U[%d] = %v, want %v", bt.name, e, got[e], ref.u[bt.name][e])
			}
			for i := range set.models {
				if maskBit(masks[bt.name], n, i, int64(e)) != ref.masks[bt.name][i][e] {
					t.Fatalf("%s: mask of task %d at %d: %v", bt.name, i, e, !ref.masks[bt.name][i][e])
				}
			}
		}
		row := (n + 7) / 8
		for i := range set.models {
			if last := masks[bt.name][int64(i)*row+row-1]; n%8 != 0 && last>>(n%8) != 0 {
				t.Fatalf("%s: task %d: padding bits set (%#x)", bt.name, i, last)
			}
		}
	}
	for i, task := range man.Tasks {
		_, data := readModel(t, filepath.Join(out, "task-"+task.Name))
		for _, bt := range set.base {
			if bt.ints != nil {
				if string(data[bt.name]) != string(encodeInts(bt.ints...)) {
					t.Fatalf("task %d: %s is not the base's", i, bt.name)
				}
				continue
			}
			dt := bt.dt
			if outDT != nil {
				dt = *outDT
			}
			want := ref.task(bt.name, bt.vals, i)
			got := decode(dt, data[bt.name])
			for e := range want {
				if w := roundTo(dt, want[e]); !sameFloat(got[e], w) {
					t.Fatalf("task %d: %s[%d] = %v, want %v", i, bt.name, e, got[e], w)
				}
			}
		}
	}
}

// emrFixture is a finished EMR output of a random set, every task written.
func emrFixture(t *testing.T) (dir, base, out string, set testSet) {
	r := rand.New(rand.NewPCG(7, 7))
	set = randomSet(r, 3, false)
	dir = t.TempDir()
	base, paths := set.write(t, dir, r)
	out = filepath.Join(dir, "out")
	emrRun(t, Options{Base: base, Models: paths, Out: out, Materialize: "all", Threads: 2, BlockElems: 64}, RescaleMean)
	return dir, base, out, set
}

// sameTree reports the first file that differs between two folders.
func sameTree(t *testing.T, a, b string) {
	t.Helper()
	entries, err := os.ReadDir(a)
	if err != nil {
		t.Fatal(err)
	}
	other, err := os.ReadDir(b)
	if err != nil || len(other) != len(entries) {
		t.Fatalf("%s and %s hold %d and %d files (%v)", a, b, len(entries), len(other), err)
	}
	for _, e := range entries {
		x, err := os.ReadFile(filepath.Join(a, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		y, err := os.ReadFile(filepath.Join(b, e.Name()))
		if err != nil || string(x) != string(y) {
			t.Fatalf("%s differs between %s and %s (%v)", e.Name(), a, b, err)
		}
	}
}

// TestEMRApplyRoundTrip rebuilds every task with ApplyEMR, by name and by
// index, with other workers and blocks: the bytes --materialize wrote.
func TestEMRApplyRoundTrip(t *testing.T) {
	dir, _, out, _ := emrFixture(t)
	man := readManifest(t, out)
	for i, task := range man.Tasks {
		for k, spec := range []string{task.Name, strconv.Itoa(i)} {
			dest := filepath.Join(dir, "apply-"+spec)
			sum, err := ApplyEMR(context.Background(), ApplyOptions{Dir: out, Task: spec, Out: dest, Threads: 1 + k*2, BlockElems: []int{8, 1024}[k]}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Index != i || sum.Task.Rescaler != task.Rescaler {
				t.Errorf("%s: summary %+v", spec, sum)
			}
			sameTree(t, filepath.Join(out, "task-"+task.Name), dest)
		}
	}
}

// TestEMRApplyErrors: a base of other headers, a missing or corrupt
// emr.json, an unknown task, masks of the wrong shape; none leaves an
// output.
func TestEMRApplyErrors(t *testing.T) {
	dir, base, out, set := emrFixture(t)
	apply := func(o ApplyOptions) error {
		if o.Dir == "" {
			o.Dir = out
		}
		if o.Task == "" {
			o.Task = "ft1"
		}
		o.Out = filepath.Join(dir, "dest")
		_, err := ApplyEMR(context.Background(), o, nil)
		if _, serr := os.Stat(o.Out); !os.IsNotExist(serr) {
			t.Errorf("a failed emr-apply left %s (%v)", o.Out, serr)
		}
		return err
	}
	wants := func(err error, parts ...string) {
		t.Helper()
		if err == nil {
			t.Fatalf("no error, want %q", parts)
		}
		for _, p := range parts {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name %q", err, p)
			}
		}
	}
	other := set
	other.base = append([]testTensor(nil), set.base...)
	other.base[1].shape = []int64{4, 4}
	otherBase := filepath.Join(dir, "other")
	writeModel(t, otherBase, other.base, 0)
	man := readManifest(t, out)
	wants(apply(ApplyOptions{Base: otherBase}), "fingerprint", otherBase, base, man.BaseFingerprint)
	wants(apply(ApplyOptions{Task: "nope"}), `no task "nope"`, "ft1", "ft3")
	wants(apply(ApplyOptions{Task: "3"}), `no task "3"`)
	wants(apply(ApplyOptions{Dir: base}), "emr.json", "not an EMR merge's output")
	wants(apply(ApplyOptions{Threads: 64, MaxMemory: 64 << 20}), "too small for 64 worker(s)")

	corrupt := filepath.Join(dir, "corrupt")
	if err := os.CopyFS(corrupt, os.DirFS(out)); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(corrupt, mmapio.EMRManifestName)
	if err := os.WriteFile(manifest, []byte(`{"format": "tiesmm-emr", "version": 1, "tasks": [`), 0o644); err != nil {
		t.Fatal(err)
	}
	wants(apply(ApplyOptions{Dir: corrupt}), manifest, "corrupt")
	if err := os.WriteFile(manifest, []byte(`{"format": "tiesmm-emr", "version": 1, "tasks": [{"name": "a", "rescaler": "x"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	wants(apply(ApplyOptions{Dir: corrupt}), manifest, "corrupt")

	// masks/ of two tasks for the three of emr.json
	if err := os.RemoveAll(corrupt); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(corrupt, os.DirFS(out)); err != nil {
		t.Fatal(err)
	}
	var masks []testTensor
	for _, bt := range set.base {
		if bt.ints == nil {
			n := int64(len(bt.vals))
			masks = append(masks, testTensor{name: bt.name, shape: []int64{2, (n + 7) / 8}, dt: kernels.F32, vals: make([]float32, 2*((n+7)/8))})
		}
	}
	if err := os.RemoveAll(filepath.Join(corrupt, "masks")); err != nil {
		t.Fatal(err)
	}
	writeModel(t, filepath.Join(corrupt, "masks"), masks, 0)
	wants(apply(ApplyOptions{Dir: corrupt}), "mask shape mismatch", set.base[0].name)
}

// TestEMRFailedRunLeavesNothing: an EMR merge stopped mid-way (its context
// canceled) or failing (a non-finite task vector) removes its partial
// output; nothing at the destination looks complete.
func TestEMRFailedRunLeavesNothing(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	set := randomSet(r, 2, false)
	set.models[1][0].vals[3] = float32(math.Inf(1))
	dir := t.TempDir()
	base, paths := set.write(t, dir, r)
	m := newMethod(t, "emr", "")
	tp := ownParamsFor(2, math.NaN(), 1)
	for _, cancel := range []bool{true, false} {
		out := filepath.Join(dir, "out")
		p, err := NewPlan(Options{Base: base, Models: paths, Out: out, Materialize: "all"}, m, func(string, int, int) (TensorParams, error) { return tp, nil })
		if err != nil {
			t.Fatal(err)
		}
		ctx, stop := context.WithCancel(context.Background())
		if cancel {
			stop()
		}
		_, err = Run(ctx, p, nil, nil)
		stop()
		var in *Interrupted
		switch {
		case cancel && !errors.As(err, &in):
			t.Errorf("canceled: %v, want Interrupted", err)
		case !cancel && (err == nil || !strings.Contains(err.Error(), "not finite") || !strings.Contains(err.Error(), paths[1])):
			t.Errorf("an infinite τ: %v, want an error naming the model", err)
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.Name() == "out" || strings.HasPrefix(e.Name(), ".out") {
				t.Errorf("left %s", e.Name())
			}
		}
	}
}

// TestEMRRescalerDigits: 9 significant digits parse back, through float64,
// to the float32 written.
func TestEMRRescalerDigits(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for range 100000 {
		v := math.Float32frombits(r.Uint32() & 0x7f7fffff)
		m := EMRManifest{Tasks: []EMRTask{{Rescaler: v}}}
		data, err := m.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var back EMRManifest
		if err := back.UnmarshalJSON(data); err != nil {
			t.Fatal(err)
		}
		if back.Tasks[0].Rescaler != v {
			t.Fatalf("%v written as %s reads back as %v", v, data, back.Tasks[0].Rescaler)
		}
	}
}

// absSums folded into a wideSum give the exact sum of magnitudes.
func TestEMRAbsSums(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	vals := []float32{0x1p-149, -0x1p-149, 0x1p-126, math.MaxFloat32, -math.MaxFloat32, 0, 1}
	for range 1000 {
		vals = append(vals, float32(r.NormFloat64()*math.Pow(2, float64(r.IntN(200)-100))))
	}
	var a absSums
	var s wideSum
	abs := make([]float64, len(vals))
	for i, v := range vals {
		a.addBits(i, math.Float32bits(v))
		abs[i] = math.Abs(float64(v))
		if i%100 == 0 {
			a.fold(&s)
		}
	}
	a.fold(&s)
	if got, want := s.value(), refExactSum(abs); got != want {
		t.Errorf("sum %v, want %v", got, want)
	}
}

// BenchmarkEMRElect is one worker's election over a block of three task
// vectors whose signs agree about half the time, with the exact sums, per
// kernel set.
func BenchmarkEMRElect(b *testing.B) {
	const n, N = 1 << 14, 3
	r := rand.New(rand.NewPCG(1, 1))
	taus := make([]float32, N*n)
	for i := range taus {
		taus[i] = float32(r.NormFloat64() * 0.01)
	}
	for _, k := range kernels.Available() {
		b.Run(k.Name, func(b *testing.B) {
			nc := kernels.EMRChunks(n)
			blk := kernels.EMRBlock{U: make([]float32, n), Taus: taus, Stride: n, Tasks: N, Mask: make([]byte, N*n/8), Row: n / 8,
				ASum: make([]float64, N*nc), BSum: make([]float64, N*nc), AMin: make([]uint32, N*nc), BMin: make([]uint32, N*nc),
				Scratch: make([]float32, kernels.EMRChunk)}
			a, s := make([]emrSum, N), make([]emrSum, N)
			b.SetBytes(N * n * 4)
			for b.Loop() {
				k.EMRElect(&blk)
				for t := range N {
					for c := range nc {
						lo, hi, i := c*kernels.EMRChunk, min(n, (c+1)*kernels.EMRChunk), c*N+t
						a[t].add(blk.ASum[i], blk.AMin[i], taus[t*n+lo:t*n+hi], nil)
						s[t].add(blk.BSum[i], blk.BMin[i], blk.U[lo:hi], blk.Mask[t*n/8+lo/8:t*n/8+(hi+7)/8])
					}
				}
			}
		})
	}
}

// emr's rescale reads mean (the default) or l1 from YAML; validation
// refuses the other methods' words for it.
func TestEMRRecipe(t *testing.T) {
	for _, tc := range []struct {
		params string
		want   Rescale
		bad    bool
	}{{"", RescaleMean, false}, {"parameters: {rescale: mean}\n", RescaleMean, false},
		{"parameters: {rescale: l1}\n", RescaleL1, false}, {"parameters: {rescale: inverse}\n", 0, true},
		{"parameters: {rescale: true}\n", 0, true}} {
		c, err := config.Parse([]byte("merge_method: emr\nbase_model: b\nmodels: [{model: a}, {model: c}]\n"+tc.params), "t.yml")
		if err != nil {
			t.Fatal(err)
		}
		verr := c.ValidateWith(func(string) (os.FileInfo, error) { return os.Stat(".") })
		if tc.bad {
			if verr == nil || !strings.Contains(verr.Error(), "rescale of emr must be mean or l1") {
				t.Errorf("%q: validation %v", tc.params, verr)
			}
			continue
		}
		m, _, err := Recipe(c)
		if verr != nil || err != nil || m.OwnPath != PathEMR || m.Rescale != tc.want {
			t.Errorf("%q: %v, %v: path %v rescale %v, want %v", tc.params, verr, err, m.OwnPath, m.Rescale, tc.want)
		}
	}
}

// emrSum gives the sums absSums gives value by value, whatever the chunks'
// exactness, the order of the chunks or the kernel set.
func TestEMRSumExact(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for trial := range 40 {
		n, N := 1+r.IntN(3000), 1+r.IntN(4)
		spread := []int{0, 8, 30, 90}[trial%4] // exponents apart: 0 all chunks exact, 90 many not
		taus := make([]float32, N*n)
		for i := range taus {
			switch r.IntN(40) {
			case 0:
				taus[i] = 0
			case 1:
				taus[i] = math.Float32frombits(uint32(r.IntN(1 << 23))) // subnormal
			default:
				taus[i] = float32(math.Ldexp(r.NormFloat64(), r.IntN(spread+1)-spread/2-10))
			}
		}
		if trial == 39 {
			taus[r.IntN(len(taus))] = float32(math.Inf(1))
		}
		nc := kernels.EMRChunks(n)
		var want [2][]float64
		for si, k := range kernels.Available() {
			blk := kernels.EMRBlock{U: make([]float32, n), Taus: taus, Stride: n, Tasks: N, Mask: make([]byte, N*((n+7)/8)), Row: (n + 7) / 8,
				ASum: make([]float64, N*nc), BSum: make([]float64, N*nc), AMin: make([]uint32, N*nc), BMin: make([]uint32, N*nc)}
			k.EMRElect(&blk)
			var got [2][]float64
			for task := range N {
				var a, b emrSum
				var ha, hb absSums
				for _, c := range r.Perm(nc) {
					lo, hi, i := c*kernels.EMRChunk, min(n, (c+1)*kernels.EMRChunk), c*N+task
					m := blk.Mask[task*blk.Row+lo/8 : task*blk.Row+(hi+7)/8]
					a.add(blk.ASum[i], blk.AMin[i], taus[task*n+lo:task*n+hi], nil)
					b.add(blk.BSum[i], blk.BMin[i], blk.U[lo:hi], m)
					ha.addMasked(taus[task*n+lo:task*n+hi], nil)
					hb.addMasked(blk.U[lo:hi], m)
				}
				var wa, wb, xa, xb wideSum
				a.fold(&wa)
				b.fold(&wb)
				ha.fold(&xa)
				hb.fold(&xb)
				for _, p := range [][2]float64{{wa.value(), xa.value()}, {wb.value(), xb.value()}} {
					if math.Float64bits(p[0]) != math.Float64bits(p[1]) {
						t.Fatalf("trial %d %s task %d: %v, value by value %v", trial, k.Name, task, p[0], p[1])
					}
				}
				got[0], got[1] = append(got[0], wa.value()), append(got[1], wb.value())
			}
			if si == 0 {
				want = got
			}
			for i := range want {
				for j := range want[i] {
					if math.Float64bits(got[i][j]) != math.Float64bits(want[i][j]) {
						t.Fatalf("trial %d %s: sum %d/%d %v, %s gave %v", trial, k.Name, i, j, got[i][j], kernels.Available()[0].Name, want[i][j])
					}
				}
			}
		}
	}
}
