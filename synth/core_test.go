package synth

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// memSink holds whole tensors in memory: a test stand-in for mmapio.Output.
type memSink struct {
	mu   sync.Mutex
	data map[string][]byte
}

func newMemSink(ts []*tensorSpec, m model) *memSink {
	s := &memSink{data: map[string][]byte{}}
	for _, t := range ts {
		s.data[t.name] = make([]byte, dataBytes(t, m))
	}
	return s
}

func (s *memSink) WriteTensor(name string, off int64, p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.data[name]
	if !ok {
		return fmt.Errorf("unknown tensor %q", name)
	}
	if off < 0 || off+int64(len(p)) > int64(len(b)) {
		return fmt.Errorf("tensor %q: write [%d, %d) outside [0, %d)", name, off, off+int64(len(p)), len(b))
	}
	copy(b[off:], p)
	return nil
}

type memSet struct {
	arch   Arch
	ts     []*tensorSpec
	models []model
	sinks  []*memSink
}

func genMem(t testing.TB, o Options, workers int) *memSet {
	t.Helper()
	a, ts, ms, err := plan(o)
	if err != nil {
		t.Fatal(err)
	}
	set := &memSet{arch: a, ts: ts, models: ms}
	outs := make([]tensorWriter, len(ms))
	for i, m := range ms {
		set.sinks = append(set.sinks, newMemSink(ts, m))
		outs[i] = set.sinks[i]
	}
	if err := fill(ts, ms, outs, workers, nil); err != nil {
		t.Fatal(err)
	}
	return set
}

// values decodes model k's tensor to float32.
func (s *memSet) values(k int, name string) []float32 {
	b := s.sinks[k].data[name]
	dt := s.models[k].dt
	v := make([]float32, len(b)/dt.Size())
	kernels.Generic.Widen(v, b, dt)
	return v
}

// taus is τ = θ_k − θ₀ of a float tensor, in float32.
func (s *memSet) taus(k int, name string) []float32 {
	base, ft := s.values(0, name), s.values(k, name)
	for i := range ft {
		ft[i] -= base[i]
	}
	return ft
}

func (s *memSet) floatTensors() []*tensorSpec {
	var out []*tensorSpec
	for _, t := range s.ts {
		if !t.isInt() {
			out = append(out, t)
		}
	}
	return out
}

func TestParseParams(t *testing.T) {
	good := map[string]int64{
		"50M": 50_000_000, "1.5B": 1_500_000_000, "7B": 7_000_000_000, "1M": 1_000_000,
		"125k": 125_000, "1000": 1000, " 2T ": 2_000_000_000_000, "0.5m": 500_000, "70b": 70_000_000_000,
		"1e6": 1_000_000, "8G": 8_000_000_000,
	}
	for s, want := range good {
		got, err := ParseParams(s)
		if err != nil || got != want {
			t.Errorf("ParseParams(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "M", "-5M", "abc", "0", "0.1", "1e20", "NaN", "InfM", "5MB", "5 M x"} {
		if got, err := ParseParams(s); err == nil {
			t.Errorf("ParseParams(%q) = %d, want an error", s, got)
		}
	}
	for _, n := range []int64{999, 1_000_000, 918_144, 6_940_798_976} {
		if f := FormatParams(n); f == "" {
			t.Errorf("FormatParams(%d) empty", n)
		}
	}
	if f := FormatParams(6_940_798_976); f != "6.94B" {
		t.Errorf("FormatParams = %q, want 6.94B", f)
	}
}

func TestDeriveArch(t *testing.T) {
	// Worked by hand from the rules in DeriveArch (see comments).
	cases := []struct {
		o    Options
		want Arch
	}{
		// 1M: hidden 128 (192 would need 2·442,752 + 491,520 > 1M); vocab
		// ⌊1e6/(4·128)/64⌋·64 = 1920; layers round((1e6 − 491,648)/213,248) = 2.
		{Options{Params: 1_000_000}, Arch{Hidden: 128, Intermediate: 384, Layers: 2, Heads: 2, KVHeads: 2, HeadDim: 64, Vocab: 1920, Params: 918_144}},
		// 7B: Llama-2-7B's widths; layers round((7e9 − 262,148,096)/202,383,360) = 33.
		{Options{Params: 7_000_000_000}, Arch{Hidden: 4096, Intermediate: 11008, Layers: 33, Heads: 32, KVHeads: 32, HeadDim: 128, Vocab: 32000, Params: 6_940_798_976}},
		// Big embedding: one layer of width 8192 with GQA (8 kv heads).
		// Per layer 2·8192² + 2·1024·8192 + 3·22016·8192 + 2·8192 = 692,076,544.
		{Options{Params: 1_000_000, EmbedRows: 128256, EmbedCols: 8192}, Arch{Hidden: 8192, Intermediate: 22016, Layers: 1, Heads: 64, KVHeads: 8, HeadDim: 128, Vocab: 128256,
			Params: 2*128256*8192 + 8192 + 692_076_544}},
	}
	for _, c := range cases {
		got, err := DeriveArch(c.o)
		if err != nil || got != c.want {
			t.Errorf("DeriveArch(%+v) =\n %+v, %v\nwant\n %+v", c.o, got, err, c.want)
		}
	}
	// Over a range of budgets the shape stays plausible and near the target.
	for _, s := range []string{"1M", "3M", "10M", "50M", "125M", "350M", "1B", "3B", "7B", "13B", "34B", "70B", "180B"} {
		p, _ := ParseParams(s)
		a, err := DeriveArch(Options{Params: p})
		if err != nil {
			t.Fatal(err)
		}
		ratio := float64(a.Params) / float64(p)
		if ratio < 0.85 || ratio > 1.15 {
			t.Errorf("%s: %v is %.2f of the target", s, a, ratio)
		}
		if a.Hidden%a.HeadDim != 0 || a.Heads*a.HeadDim != a.Hidden || a.Heads%a.KVHeads != 0 || a.Vocab < minVocab {
			t.Errorf("%s: inconsistent %+v", s, a)
		}
		if im := float64(a.Intermediate) / float64(a.Hidden); im < 2.6 || im > 3.1 {
			t.Errorf("%s: intermediate/hidden = %.2f", s, im)
		}
		t.Logf("%5s: %v", s, a)
	}
	for _, o := range []Options{{}, {Params: -1}, {Params: 1e6, EmbedRows: -1}} {
		if _, err := DeriveArch(o); err == nil {
			t.Errorf("DeriveArch(%+v): want an error", o)
		}
	}
}

func TestTensorLayout(t *testing.T) {
	a, err := DeriveArch(Options{Params: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	ts := specs(a, 1, true)
	want := []string{"model.embed_tokens.weight [1920 128]"}
	for l := 0; l < 2; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		want = append(want,
			p+"self_attn.q_proj.weight [128 128]", p+"self_attn.k_proj.weight [128 128]",
			p+"self_attn.v_proj.weight [128 128]", p+"self_attn.o_proj.weight [128 128]",
			p+"mlp.gate_proj.weight [384 128]", p+"mlp.up_proj.weight [384 128]",
			p+"mlp.down_proj.weight [128 384]",
			p+"input_layernorm.weight [128]", p+"post_attention_layernorm.weight [128]")
	}
	want = append(want, "model.norm.weight [128]", "lm_head.weight [1920 128]", IntBufferName+" [32]")
	var got []string
	var params int64
	for _, s := range ts {
		got = append(got, fmt.Sprintf("%s %v", s.name, s.shape))
		if !s.isInt() {
			params += s.n
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("tensors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if params != a.Params {
		t.Errorf("tensors hold %d parameters, Arch says %d", params, a.Params)
	}
	// GQA shapes: k/v are kv_heads·head_dim rows.
	ts = specs(Arch{Hidden: 256, Intermediate: 704, Layers: 1, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 400}, 1, false)
	for _, s := range ts {
		if strings.HasSuffix(s.name, "k_proj.weight") && (s.shape[0] != 128 || s.shape[1] != 256) {
			t.Errorf("%s shape %v, want [128 256]", s.name, s.shape)
		}
	}
}

func TestDeterminism(t *testing.T) {
	o := Options{Params: 1_000_000, Models: 2, Seed: 7, IntBuffer: true, FineTuneDTypes: []string{"f16", "f32"}}
	a := genMem(t, o, 1)
	b := genMem(t, o, 5)
	for k := range a.models {
		for name, d := range a.sinks[k].data {
			if !bytes.Equal(d, b.sinks[k].data[name]) {
				t.Errorf("%s %s: 1 worker and 5 workers differ", a.models[k].role, name)
			}
		}
	}
	o.Seed = 8
	c := genMem(t, o, 3)
	for k := range a.models {
		for _, ts := range a.floatTensors() {
			if bytes.Equal(a.sinks[k].data[ts.name], c.sinks[k].data[ts.name]) {
				t.Errorf("%s %s: seeds 7 and 8 give the same bytes", a.models[k].role, ts.name)
			}
		}
	}
	// Fine-tune k does not depend on how many fine-tunes there are.
	o.Seed, o.Models, o.FineTuneDTypes = 7, 1, []string{"f16"}
	d := genMem(t, o, 2)
	for k := range d.models {
		for name, v := range d.sinks[k].data {
			if !bytes.Equal(v, a.sinks[k].data[name]) {
				t.Errorf("%s %s differs between 1 and 2 fine-tunes", d.models[k].role, name)
			}
		}
	}
}

func TestDTypes(t *testing.T) {
	s := genMem(t, Options{Params: 1_000_000, Models: 3, Seed: 3, FineTuneDTypes: []string{"f32", "f16", "bf16"}, IntBuffer: true}, 2)
	wantDT := []kernels.DType{kernels.BF16, kernels.F32, kernels.F16, kernels.BF16}
	name := "model.layers.1.mlp.down_proj.weight"
	for k, m := range s.models {
		if m.dt != wantDT[k] {
			t.Fatalf("model %s dtype %v, want %v", m.role, m.dt, wantDT[k])
		}
		if got := len(s.sinks[k].data[name]); got != 128*384*wantDT[k].Size() {
			t.Errorf("%s: %d bytes", m.role, got)
		}
	}
	// The base's values are on the bf16 grid; an f32 fine-tune starts from them,
	// so its τ is the raw change and is not a multiple of any bf16 ulp.
	tau, base := s.taus(1, name), s.values(0, name)
	offGrid := 0
	var tt, bb float64
	for i, v := range s.values(1, name) {
		if kernels.BF16ToF32(kernels.F32ToBF16(v)) != v {
			offGrid++
		}
		tt += float64(tau[i]) * float64(tau[i])
		bb += float64(base[i]) * float64(base[i])
	}
	if r := math.Sqrt(tt / bb); r > 0.2 || r < 0.001 {
		t.Errorf("‖τ‖/‖θ₀‖ = %.4f: not a fine-tune's change", r)
	}
	if offGrid < len(tau)/2 {
		t.Errorf("f32 fine-tune: only %d of %d values off the bf16 grid", offGrid, len(tau))
	}
	// The integer buffer: 2j in the base, 2j + 1000·m in fine-tune m.
	for k := range s.models {
		b := s.sinks[k].data[IntBufferName]
		for j := 0; j < len(b)/8; j++ {
			if got, want := int64(binary.LittleEndian.Uint64(b[8*j:])), int64(2*j+1000*k); got != want {
				t.Fatalf("%s %s[%d] = %d, want %d", s.models[k].role, IntBufferName, j, got, want)
			}
		}
	}
}

func TestOptionErrors(t *testing.T) {
	for _, o := range []Options{
		{Params: 1e6, DType: "int8"},
		{Params: 1e6, Models: 3, FineTuneDTypes: []string{"bf16", "f16"}},
		{Params: 1e6, FineTuneDTypes: []string{"fp8"}},
		{Params: 1e6, Models: -1},
		{Params: 1e6, ShardBytes: -5},
		{Params: 0},
	} {
		if _, _, _, err := plan(o); err == nil {
			t.Errorf("plan(%+v): want an error", o)
		}
	}
}

// TestBaseValues checks the base is weight-like: linear weights centred with
// std ≈ 1/√fan_in, norms near 1.
func TestBaseValues(t *testing.T) {
	s := genMem(t, Options{Params: 3_000_000, Models: 1, Seed: 11, DType: "f32"}, 2)
	for _, ts := range s.floatTensors() {
		v := s.values(0, ts.name)
		var sum, sq float64
		for _, x := range v {
			sum += float64(x)
			sq += float64(x) * float64(x)
		}
		mean := sum / float64(len(v))
		std := math.Sqrt(sq/float64(len(v)) - mean*mean)
		if strings.Contains(ts.name, "norm") {
			if math.Abs(mean-1) > 0.02 || std < 0.02 || std > 0.1 {
				t.Errorf("%s: mean %.3f std %.3f, want near 1", ts.name, mean, std)
			}
			continue
		}
		want := 1 / math.Sqrt(float64(ts.shape[len(ts.shape)-1]))
		if std < 0.7*want || std > 1.3*want || math.Abs(mean) > 0.1*want {
			t.Errorf("%s: mean %.4g std %.4g, want 0 and ≈ %.4g", ts.name, mean, std, want)
		}
	}
}

// TestTaskVectorShape checks τ = θᵢ − θ₀ against the spec: a sparse set of
// large changes, signs that agree more often than chance but not always,
// scales 10× apart between tensors, whole-model and per-tensor trims that
// pick different elements.
func TestTaskVectorShape(t *testing.T) {
	const N = 3
	s := genMem(t, Options{Params: 2_000_000, Models: N, Seed: 5, DType: "f32"}, 2)
	var medians []float64
	var all []float32 // |τ| of ft1, whole model
	var large, total int
	agree := make([][]int, N+1)
	both := make([][]int, N+1)
	for i := range agree {
		agree[i], both[i] = make([]int, N+1), make([]int, N+1)
	}
	for _, ts := range s.floatTensors() {
		taus := make([][]float32, N+1)
		for k := 1; k <= N; k++ {
			taus[k] = s.taus(k, ts.name)
		}
		abs := make([]float64, len(taus[1]))
		for j, v := range taus[1] {
			abs[j] = math.Abs(float64(v))
			all = append(all, float32(abs[j]))
		}
		slices.Sort(abs)
		med := abs[len(abs)/2]
		medians = append(medians, med)
		// The dense part of τ is normal with σ = √2 units (median |τ| ≈
		// 0.95 units); sparse changes are ≥ 8 units. Count |τ| beyond 7
		// medians, which dense values pass with probability ~1e-5.
		for k := 1; k <= N; k++ {
			for _, v := range taus[k] {
				if math.Abs(float64(v)) > 7*med {
					large++
				}
				total++
			}
		}
		for i := 1; i <= N; i++ {
			for k := i + 1; k <= N; k++ {
				for j := range taus[i] {
					a, b := taus[i][j], taus[k][j]
					if a != 0 && b != 0 {
						both[i][k]++
						if (a > 0) == (b > 0) {
							agree[i][k]++
						}
					}
				}
			}
		}
	}
	frac := float64(large) / float64(total)
	wantFrac := 1 - (1-SparseOwnFraction)*(1-SparseSharedFraction)
	if frac < 0.8*wantFrac || frac > 1.25*wantFrac {
		t.Errorf("large entries: %.4f of τ, want ≈ %.4f", frac, wantFrac)
	}
	for i := 1; i <= N; i++ {
		for k := i + 1; k <= N; k++ {
			a := float64(agree[i][k]) / float64(both[i][k])
			if a < 0.58 || a > 0.85 {
				t.Errorf("ft%d/ft%d: signs agree on %.3f of elements, want well above 1/2 and below 1", i, k, a)
			}
			t.Logf("ft%d/ft%d sign agreement %.3f", i, k, a)
		}
	}
	sort.Float64s(medians)
	spread := medians[len(medians)-1] / medians[0]
	if spread < 10 {
		t.Errorf("per-tensor median |τ| spans only %.1f×", spread)
	}
	t.Logf("large fraction %.4f (want %.4f), per-tensor scale spread %.0f×", frac, wantFrac, spread)

	// Whole-model trim at density 0.2 keeps most of some tensors and almost
	// nothing of others; a per-tensor trim keeps 20% of each.
	slices.Sort(all)
	thr := all[len(all)-len(all)/5]
	lo, hi := 1.0, 0.0
	for _, ts := range s.floatTensors() {
		kept := 0
		tau := s.taus(1, ts.name)
		for _, v := range tau {
			if float32(math.Abs(float64(v))) >= thr {
				kept++
			}
		}
		f := float64(kept) / float64(len(tau))
		lo, hi = min(lo, f), max(hi, f)
	}
	if lo > 0.05 || hi < 0.6 {
		t.Errorf("whole-model trim keeps between %.2f and %.2f of a tensor: too uniform", lo, hi)
	}
}

// TestBF16Ties checks that BF16 task vectors are on a coarse grid: any trim
// threshold is shared by many elements.
func TestBF16Ties(t *testing.T) {
	s := genMem(t, Options{Params: 1_000_000, Models: 2, Seed: 9}, 2)
	var all []float32
	for _, ts := range s.floatTensors() {
		for _, v := range s.taus(1, ts.name) {
			all = append(all, float32(math.Abs(float64(v))))
		}
	}
	slices.Sort(all)
	slices.Reverse(all)
	distinct := map[float32]bool{}
	for _, v := range all {
		distinct[v] = true
	}
	if len(distinct) > len(all)/10 {
		t.Errorf("%d distinct |τ| among %d: few ties", len(distinct), len(all))
	}
	zeros := 0
	for _, v := range all {
		if v == 0 {
			zeros++
		}
	}
	if zeros == 0 || zeros == len(all) {
		t.Errorf("%d of %d τ are exactly zero", zeros, len(all))
	}
	for _, density := range []float64{0.01, 0.1, 0.2, 0.5, 0.8} {
		k := int(density * float64(len(all)))
		thr := all[k]
		n := 0
		for _, v := range all {
			if v == thr {
				n++
			}
		}
		// At 1M parameters the top 1% holds only ~9K sparse values; ties
		// there grow with the model size.
		if want := map[bool]int{true: 2, false: 10}[density < 0.05]; n < want {
			t.Errorf("density %.2f: only %d elements tie at the threshold %g", density, n, thr)
		}
	}
	t.Logf("%d distinct |τ| among %d, %d zero", len(distinct), len(all), zeros)
}

// TestRounding checks the fast finite-only conversions against kernels'.
func TestRounding(t *testing.T) {
	check := func(f float32) {
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return
		}
		if got, want := bf16(f), kernels.F32ToBF16(f); got != want {
			t.Fatalf("bf16(%g = %#x) = %#x, want %#x", f, math.Float32bits(f), got, want)
		}
		if got, want := f16(f), kernels.F32ToF16(f); got != want {
			t.Fatalf("f16(%g = %#x) = %#x, want %#x", f, math.Float32bits(f), got, want)
		}
	}
	// Every exponent with mantissas around the rounding points, then random bits.
	for e := uint32(0); e < 255; e++ {
		for _, m := range []uint32{0, 1, 0xfff, 0x1000, 0x1001, 0x2000, 0x3000, 0x7fff, 0x8000, 0x8001, 0x18000, 0x3ff000, 0x400000, 0x7fe000, 0x7ff000, 0x7fffff} {
			for _, s := range []uint32{0, 1 << 31} {
				check(math.Float32frombits(s | e<<23 | m))
			}
		}
	}
	x := uint64(1)
	for i := 0; i < 1<<20; i++ {
		x = mix64(x + golden)
		check(math.Float32frombits(uint32(x)))
		// Half of them in f16's range, where the rounding matters most.
		check(math.Float32frombits(uint32(x>>32)&0x87ffffff | 0x30000000))
	}
}

type failSink struct{ n atomic.Int64 }

func (f *failSink) WriteTensor(name string, off int64, p []byte) error {
	if f.n.Add(1) > 5 {
		return errors.New("disk full")
	}
	return nil
}

// TestFillError: a write error stops every worker and names model and tensor.
func TestFillError(t *testing.T) {
	_, ts, ms, err := plan(Options{Params: 1_000_000, Models: 2})
	if err != nil {
		t.Fatal(err)
	}
	fs := &failSink{}
	outs := []tensorWriter{discard{}, fs, discard{}}
	err = fill(ts, ms, outs, 4, nil)
	if err == nil || !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "ft1: tensor ") {
		t.Fatalf("fill error %v", err)
	}
	if n := fs.n.Load(); n > 5+4 {
		t.Errorf("%d writes to the failing model: workers did not stop", n)
	}
}
