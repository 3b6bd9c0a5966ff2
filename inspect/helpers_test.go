package inspect

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// testTensor is one tensor of a hand-made model.
type testTensor struct {
	name  string
	shape []int64
	dt    kernels.DType
	vals  []float32 // rounded to dt when written
}

// writeModel writes tensors as dir/model.safetensors.
func writeModel(t testing.TB, dir string, ts []testTensor) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	hdr := map[string]any{}
	var data bytes.Buffer
	for _, tt := range ts {
		start := data.Len()
		for _, v := range tt.vals {
			switch tt.dt {
			case kernels.F32:
				binary.Write(&data, binary.LittleEndian, math.Float32bits(v))
			case kernels.BF16:
				binary.Write(&data, binary.LittleEndian, kernels.F32ToBF16(v))
			case kernels.F16:
				binary.Write(&data, binary.LittleEndian, kernels.F32ToF16(v))
			}
		}
		hdr[tt.name] = map[string]any{"dtype": tt.dt.String(), "shape": tt.shape, "data_offsets": []int{start, data.Len()}}
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	for len(js)%8 != 0 {
		js = append(js, ' ')
	}
	var out bytes.Buffer
	binary.Write(&out, binary.LittleEndian, uint64(len(js)))
	out.Write(js)
	out.Write(data.Bytes())
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors"), out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// refTensor holds a tensor's task vectors, read whole.
type refTensor struct {
	name string
	taus [][]float32
}

// loadTaus reads every float tensor of the base and the models whole and
// computes τ = float32(θ) − float32(θ₀).
func loadTaus(t testing.TB, base string, models []string) []refTensor {
	t.Helper()
	read := func(path string) (*mmapio.Model, map[string][]byte) {
		m, err := mmapio.OpenModel(path)
		if err != nil {
			t.Fatal(err)
		}
		files := map[string][]byte{}
		for _, f := range m.Files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			files[f] = b
		}
		return m, files
	}
	values := func(m *mmapio.Model, files map[string][]byte, name string) []float32 {
		tt := m.Tensors[name]
		dt, err := kernels.ParseDType(tt.DType)
		if err != nil {
			return nil
		}
		src := files[tt.File][tt.Offset : tt.Offset+tt.Size]
		out := make([]float32, tt.Elements())
		for i := range out {
			out[i] = dt.At(src, i)
		}
		return out
	}
	bm, bf := read(base)
	var ms []*mmapio.Model
	var mf []map[string][]byte
	for _, p := range models {
		m, f := read(p)
		ms = append(ms, m)
		mf = append(mf, f)
	}
	var out []refTensor
	for _, name := range bm.Names {
		b := values(bm, bf, name)
		if b == nil {
			continue
		}
		rt := refTensor{name: name}
		for k := range ms {
			v := values(ms[k], mf[k], name)
			tau := make([]float32, len(v))
			for i := range v {
				tau[i] = v[i] - b[i]
			}
			rt.taus = append(rt.taus, tau)
		}
		out = append(out, rt)
	}
	return out
}

// refSums are a row's counts and sums computed the plain way: float64
// accumulation in element order, sets from a full sort.
type refSums struct {
	n, signConflict       int64
	nonzero               []int64
	l1, sq                []float64
	dot                   [][]float64
	kept                  [][]int64
	overlap, topkConflict []int64
	pairOverlap           [][][]int64
	removed               [][]float64
}

func newRefSums(m, d int) *refSums {
	r := &refSums{nonzero: make([]int64, m), l1: make([]float64, m), sq: make([]float64, m),
		dot: make([][]float64, m), kept: make([][]int64, d), overlap: make([]int64, d),
		topkConflict: make([]int64, d), pairOverlap: make([][][]int64, d), removed: make([][]float64, d)}
	for i := range m {
		r.dot[i] = make([]float64, m)
	}
	for k := range d {
		r.kept[k] = make([]int64, m)
		r.removed[k] = make([]float64, m)
		r.pairOverlap[k] = make([][]int64, m)
		for i := range m {
			r.pairOverlap[k][i] = make([]int64, m)
		}
	}
	return r
}

// topSet is the definition of Kᵢ: the ⌊density·n⌋ largest |τ|, ties by
// lowest index, minus zeros; density ≥ 1: every nonzero.
func topSet(tau []float32, density float64) []bool {
	n := len(tau)
	in := make([]bool, n)
	if density >= 1 {
		for i, t := range tau {
			in[i] = t != 0
		}
		return in
	}
	k := int(math.Floor(density * float64(n)))
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		return math.Abs(float64(tau[idx[a]])) > math.Abs(float64(tau[idx[b]]))
	})
	for _, i := range idx[:k] {
		in[i] = tau[i] != 0
	}
	return in
}

func (r *refSums) addTensor(taus [][]float32, densities []float64) {
	m := len(taus)
	n := len(taus[0])
	r.n += int64(n)
	for e := range n {
		pos, neg := false, false
		for i := range m {
			t := taus[i][e]
			pos = pos || t > 0
			neg = neg || t < 0
		}
		if pos && neg {
			r.signConflict++
		}
	}
	for i := range m {
		for e := range n {
			v := float64(taus[i][e])
			if v != 0 {
				r.nonzero[i]++
			}
			r.l1[i] += math.Abs(v)
			r.sq[i] += v * v
			for j := range m {
				r.dot[i][j] += v * float64(taus[j][e])
			}
		}
	}
	for k, d := range densities {
		sets := make([][]bool, m)
		for i := range m {
			sets[i] = topSet(taus[i], d)
			for e := range n {
				if sets[i][e] {
					r.kept[k][i]++
				} else {
					r.removed[k][i] += math.Abs(float64(taus[i][e]))
				}
			}
		}
		for e := range n {
			cnt := 0
			pos, neg := false, false
			for i := range m {
				if sets[i][e] {
					cnt++
					pos = pos || taus[i][e] > 0
					neg = neg || taus[i][e] < 0
					for j := i + 1; j < m; j++ {
						if sets[j][e] {
							r.pairOverlap[k][i][j]++
							r.pairOverlap[k][j][i]++
						}
					}
				}
			}
			if cnt >= 2 {
				r.overlap[k]++
			}
			if pos && neg {
				r.topkConflict[k]++
			}
		}
	}
}

// check compares figures with the reference sums within the stated
// tolerances: counts exact; l1, l2, removed_l1 1e-9 relative; fractions and
// cos 1e-9 absolute.
func (r *refSums) check(t *testing.T, what string, f Figures, densities []float64) {
	t.Helper()
	m := len(r.l1)
	rel := func(field string, got, want float64) {
		if math.Abs(got-want) > 1e-9*math.Abs(want) {
			t.Errorf("%s: %s = %v, reference %v", what, field, got, want)
		}
	}
	abs := func(field string, got Num, want float64) {
		if math.IsNaN(want) != math.IsNaN(float64(got)) || math.Abs(float64(got)-want) > 1e-9 {
			t.Errorf("%s: %s = %v, reference %v", what, field, got, want)
		}
	}
	eq := func(field string, got, want int64) {
		if got != want {
			t.Errorf("%s: %s = %d, reference %d", what, field, got, want)
		}
	}
	div := func(a, b float64) float64 {
		if b == 0 {
			return math.NaN()
		}
		return a / b
	}
	eq("n", f.N, r.n)
	eq("sign_conflict", f.SignConflict, r.signConflict)
	abs("sign_conflict_frac", f.SignConflictFrac, div(float64(r.signConflict), float64(r.n)))
	for i := range m {
		eq("nonzero", f.Nonzero[i], r.nonzero[i])
		rel("l1", f.L1[i], r.l1[i])
		rel("l2", f.L2[i], math.Sqrt(r.sq[i]))
		for j := range m {
			want := 1.0
			if i != j {
				want = div(r.dot[i][j], math.Sqrt(r.sq[i])*math.Sqrt(r.sq[j]))
			}
			abs("cos", f.Cos[i][j], want)
		}
	}
	if len(f.Trims) != len(densities) {
		t.Fatalf("%s: %d trims for %d densities", what, len(f.Trims), len(densities))
	}
	for k := range densities {
		tr := f.Trims[k]
		eq("overlap", tr.Overlap, r.overlap[k])
		eq("topk_conflict", tr.TopkConflict, r.topkConflict[k])
		abs("topk_conflict_frac", tr.TopkConflictFrac, div(float64(r.topkConflict[k]), float64(r.n)))
		for i := range m {
			eq("kept", tr.Kept[i], r.kept[k][i])
			rel("removed_l1", tr.RemovedL1[i], r.removed[k][i])
			abs("removed_frac", tr.RemovedFrac[i], div(r.removed[k][i], r.l1[i]))
			for j := range m {
				want := r.pairOverlap[k][i][j]
				if i == j {
					want = r.kept[k][i]
				}
				eq("pair_overlap", tr.PairOverlap[i][j], want)
			}
		}
	}
	if f.Overlap != f.Trims[0].Overlap || f.TopkConflict != f.Trims[0].TopkConflict {
		t.Errorf("%s: the flat fields are not the first density's", what)
	}
}

func run(t testing.TB, o Options) *Report {
	t.Helper()
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
