package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// These tests hold every set this CPU runs (AVX-512, AVX2, NEON, ...) to the
// Go reference bit for bit, on the same inputs, lengths, offsets and
// parameters. The reference runs on the same CPU, so NaN propagation is the
// hardware's in both.

const guard = 9 // elements after every output that must stay untouched

// specials are the values that break naive SIMD: zeros, infinities, NaNs of
// both kinds with payloads, subnormals, rounding ties and the edges of the
// f16 and bf16 ranges.
var specials = []uint32{
	0x00000000, 0x80000000, 0x7f800000, 0xff800000,
	0x7fc00000, 0xffc00000, 0x7fc12345, 0xffd00001, 0x7fffffff, 0xffffffff,
	0x7f800001, 0xff800001, 0x7fa00000, 0x7f812345, 0xffbfffff, // signalling
	0x00000001, 0x80000001, 0x007fffff, 0x807fffff, 0x00400000, 0x00800000, 0x80800000,
	0x7f7fffff, 0xff7fffff, 0x3f800000, 0xbf800000,
	0x3f808000, 0x3f818000, 0x3f808001, 0x3f807fff, 0x7f7f8000, 0xff7f8000, // bf16 ties
	0x477fe000, 0x477fefff, 0x477ff000, 0x477fffff, 0x47800000, 0xc77ff000, // f16 max region
	0x33800000, 0x33000000, 0x33400000, 0x32ffffff, 0xb3000000, 0x38800000, 0x387fc000, // f16 subnormal edges
	0x3f801000, 0x3f803000, 0x3f802fff, // f16 ties
	0x00010000, 0x0001ffff, 0x80008000,
}

// randBits draws float32 bit patterns: ordinary values of varied scale, plus
// zeros, small integers (so sums tie at exactly zero), specials and raw bits.
func randBits(r *rand.Rand) uint32 {
	switch k := r.IntN(20); {
	case k < 3:
		return 0
	case k < 4:
		return 0x80000000
	case k < 7:
		return math.Float32bits(float32(r.IntN(7) - 3))
	case k < 9:
		return specials[r.IntN(len(specials))]
	case k < 11:
		return r.Uint32()
	default:
		return math.Float32bits(float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(12)-8))))
	}
}

func randFloats(r *rand.Rand, n int) []float32 {
	f := make([]float32, n)
	for i := range f {
		f[i] = math.Float32frombits(randBits(r))
	}
	return f
}

// randStored encodes n values as dt at byte offset off·size: f16 and bf16
// get raw random halves half the time, rounded float32 draws otherwise.
func randStored(r *rand.Rand, dt DType, n, off int) []byte {
	sz := dt.Size()
	b := make([]byte, (off+n)*sz)
	for i := 0; i < n; i++ {
		u := randBits(r)
		p := b[(off+i)*sz:]
		switch {
		case dt == F32:
			binary.LittleEndian.PutUint32(p, u)
		case r.IntN(2) == 0:
			binary.LittleEndian.PutUint16(p, uint16(r.Uint32()))
		case dt == F16:
			binary.LittleEndian.PutUint16(p, F32ToF16(math.Float32frombits(u)))
		default:
			binary.LittleEndian.PutUint16(p, uint16(u>>16))
		}
	}
	return b[off*sz:]
}

// outFloats returns n elements at offset off of a buffer whose other
// elements hold a sentinel, and a check that they still do.
func outFloats(n, off int) ([]float32, func(t *testing.T, what string)) {
	buf := make([]float32, off+n+guard)
	const sentinel = 0x7fbadbad
	for i := range buf {
		buf[i] = math.Float32frombits(sentinel)
	}
	return buf[off : off+n], func(t *testing.T, what string) {
		t.Helper()
		for i, v := range buf {
			if (i < off || i >= off+n) && math.Float32bits(v) != sentinel {
				t.Fatalf("%s: wrote outside its output at element %d (offset %d, length %d)", what, i-off, off, n)
			}
		}
	}
}

func outBytes(n, off int) ([]byte, func(t *testing.T, what string)) {
	buf := make([]byte, off+n+4*guard)
	for i := range buf {
		buf[i] = 0xa5
	}
	return buf[off : off+n], func(t *testing.T, what string) {
		t.Helper()
		for i, v := range buf {
			if (i < off || i >= off+n) && v != 0xa5 {
				t.Fatalf("%s: wrote outside its output at byte %d (offset %d, length %d)", what, i-off, off, n)
			}
		}
	}
}

// nanProbe holds NaN pairs (quiet/quiet with different payloads, signalling
// and quiet both ways); a variable, so the compiler cannot fold them.
var nanProbe = []uint32{0x7fc00001, 0xffc12345, 0x7f800003, 0xffc00001, 0xff812345, 0x7fc00002}

// nanRuleHolds reports whether this CPU propagates NaNs the way nanPick (the
// reference's rule) says: subtraction is not commutative, so the compiler
// keeps its operands in order. Real x86 and arm64 CPUs do; qemu-user's x86
// emulation does not (it applies the x87 rules to SSE and AVX: a quiet NaN
// over a signalling one, else the larger payload).
func nanRuleHolds() bool {
	for i, u := range nanProbe {
		a := math.Float32frombits(u)
		b := math.Float32frombits(nanProbe[(i+1)%len(nanProbe)])
		if math.Float32bits(a-b) != math.Float32bits(nanPick(a, b, a-b)) {
			return false
		}
	}
	return true
}

// laxNaN makes the comparisons accept any NaN for a NaN where the CPU
// (an emulator) does not follow its architecture's NaN rules.
var laxNaN = !nanRuleHolds()

func TestNaNRule(t *testing.T) {
	if laxNaN {
		t.Skip("this CPU does not propagate NaN payloads by its architecture's rule (an emulator?): NaN payloads are not compared")
	}
}

func isNaN(dt DType, b []byte) bool {
	switch dt {
	case F32:
		return binary.LittleEndian.Uint32(b)&0x7fffffff > 0x7f800000
	case F16:
		return binary.LittleEndian.Uint16(b)&0x7fff > 0x7c00
	}
	return binary.LittleEndian.Uint16(b)&0x7fff > 0x7f80
}

func sameFloats(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if laxNaN && got[i] != got[i] && want[i] != want[i] {
			continue
		}
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: element %d of %d = %#08x, want %#08x", what, i, len(want), math.Float32bits(got[i]), math.Float32bits(want[i]))
		}
	}
}

func sameBytes(t *testing.T, what string, dt DType, got, want []byte) {
	t.Helper()
	sz := dt.Size()
	for i := 0; i+sz <= len(want); i += sz {
		if laxNaN && isNaN(dt, got[i:]) && isNaN(dt, want[i:]) {
			continue
		}
		if string(got[i:i+sz]) != string(want[i:i+sz]) {
			t.Fatalf("%s: element %d of %d = %x, want %x", what, i/sz, len(want)/sz, got[i:i+sz], want[i:i+sz])
		}
	}
}

// asmSets are the sets under test: every available one but the reference.
func asmSets(t testing.TB) []*Set {
	var s []*Set
	for _, k := range Available() {
		if k != Generic {
			s = append(s, k)
		}
	}
	if len(s) == 0 {
		t.Logf("only the Go reference runs here")
	}
	return s
}

// lengths covers every length up to 300, then large ones around the vector
// widths and the chunking of the assembly calls.
func lengths(short bool) []int {
	var l []int
	for n := 0; n <= 300; n++ {
		l = append(l, n)
	}
	if !short {
		l = append(l, 4096+15, 65536+13)
	}
	return l
}

var dtypes = []DType{F32, F16, BF16}

func TestAvailable(t *testing.T) {
	av := Available()
	if len(av) == 0 || av[len(av)-1] != Generic {
		t.Fatalf("Available() = %v: the Go set must come last", setNames(av))
	}
	seen := map[string]bool{}
	for _, s := range av {
		if seen[s.Name] {
			t.Errorf("set %q listed twice", s.Name)
		}
		seen[s.Name] = true
		if s.Widen == nil || s.DeltaTrim == nil || s.Vote == nil || s.Finish == nil {
			t.Errorf("set %q lacks a kernel", s.Name)
		}
	}
	t.Logf("sets: %v", setNames(av))
}

func TestLookup(t *testing.T) {
	for _, s := range Available() {
		got, err := Lookup(s.Name)
		if err != nil || got != s {
			t.Errorf("Lookup(%q) = %v, %v", s.Name, got, err)
		}
	}
	for _, name := range []string{"", "auto"} {
		if got, err := Lookup(name); err != nil || got != Available()[0] || got != Best() {
			t.Errorf("Lookup(%q) = %v, %v; want the first available", name, got, err)
		}
	}
	known := []string{"avx512", "avx2", "neon", "go", "no-such-kernel"}
	for _, name := range known {
		if slices.Contains(setNames(Available()), name) {
			continue
		}
		if _, err := Lookup(name); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Lookup(%q) on a CPU without it: err = %v", name, err)
		}
	}
}

func TestWidenMatchesGeneric(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, s := range asmSets(t) {
		for _, dt := range dtypes {
			for _, n := range lengths(testing.Short()) {
				off := n % 8
				src := randStored(r, dt, n, r.IntN(8))
				want := make([]float32, n)
				Generic.Widen(want, src, dt)
				got, check := outFloats(n, off)
				what := fmt.Sprintf("%s Widen %v n=%d off=%d", s.Name, dt, n, off)
				s.Widen(got, src, dt)
				sameFloats(t, what, got, want)
				check(t, what)
			}
		}
	}
}

// thresholds picks trim thresholds for τ: the extremes, values of the data
// (exact ties at the threshold) and NaN-range bit patterns.
func thresholds(r *rand.Rand, tau []float32) []uint32 {
	th := []uint32{0, 1, 0x3f800000, 0x7f800000, 0x7f800001, 0x7fffffff, 0x80000000, 0x80000001, 0xffffffff}
	for i := 0; i < 3 && len(tau) > 0; i++ {
		th = append(th, AbsBits(tau[r.IntN(len(tau))]))
	}
	return th
}

func TestDeltaTrimMatchesGeneric(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, s := range asmSets(t) {
		for _, dt := range dtypes {
			for _, n := range lengths(testing.Short()) {
				src := randStored(r, dt, n, r.IntN(8))
				base := randFloats(r, n+8)[r.IntN(8):][:n]
				want := make([]float32, n)
				Generic.DeltaTrim(want, src, dt, base, 0)
				ths := thresholds(r, want)
				th := ths[n%len(ths)]
				if n%29 == 0 {
					th = 0 // a few lengths try them all
				}
				for _, thr := range ths {
					if n%29 != 0 && thr != th {
						continue
					}
					wantKept := Generic.DeltaTrim(want, src, dt, base, thr)
					off := (n + 3) % 8
					got, check := outFloats(n, off)
					what := fmt.Sprintf("%s DeltaTrim %v n=%d off=%d thr=%#x", s.Name, dt, n, off, thr)
					kept := s.DeltaTrim(got, src, dt, base, thr)
					sameFloats(t, what, got, want)
					check(t, what)
					if kept != wantKept {
						t.Fatalf("%s: kept %d, want %d", what, kept, wantKept)
					}
				}
			}
		}
	}
}

func TestFinishMatchesGeneric(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	lambdas := []float32{1, 0.5, -2, 0, float32(math.Inf(1)), math.Float32frombits(0x7fc01234), 0x1p-140, 1.7}
	for _, s := range asmSets(t) {
		for _, dt := range dtypes {
			for _, n := range lengths(testing.Short()) {
				base := randFloats(r, n+8)[r.IntN(8):][:n]
				tm := randFloats(r, n+8)[r.IntN(8):][:n]
				lambda := lambdas[n%len(lambdas)]
				sz := dt.Size()
				want := make([]byte, n*sz)
				Generic.Finish(want, dt, base, tm, lambda)
				off := (n + 5) % 8
				got, check := outBytes(n*sz, off*sz)
				what := fmt.Sprintf("%s Finish %v n=%d off=%d λ=%v", s.Name, dt, n, off, lambda)
				s.Finish(got, dt, base, tm, lambda)
				sameBytes(t, what, dt, got, want)
				check(t, what)
			}
		}
	}
}

// voteParams lists every combination of the vote options for weights w.
func voteParams(w []float32) []VoteParams {
	var ps []VoteParams
	for _, c := range []Consensus{ConsensusSum, ConsensusCount, ConsensusNone} {
		for _, a := range []Aggregate{AggregateMean, AggregateSum, AggregateMax} {
			for _, wv := range []bool{false, true} {
				for _, dw := range []bool{false, true} {
					ps = append(ps, VoteParams{Weights: w, WeightedVote: wv, Consensus: c, Aggregate: a, DivideByWeights: dw})
				}
			}
		}
	}
	return ps
}

// randWeights draws n weights of one kind: ones, mixed (zero, negative,
// fractional), or with non-finite values.
func randWeights(r *rand.Rand, n, kind int) []float32 {
	w := make([]float32, n)
	for i := range w {
		switch kind % 3 {
		case 0:
			w[i] = 1
		case 1:
			w[i] = []float32{0, -1, 0.5, 2, -0.3, 1, 1e-3, float32(math.Copysign(0, -1)), 3}[r.IntN(9)]
		default:
			w[i] = math.Float32frombits(randBits(r))
		}
	}
	return w
}

// checkVote runs p through every set and the reference over len(out) = m
// elements of taus laid out with stride.
func checkVote(t *testing.T, sets []*Set, what string, taus []float32, stride, m int, p *VoteParams) {
	t.Helper()
	want := make([]float32, m)
	wantSt := Generic.Vote(want, taus, stride, p)
	for _, s := range sets {
		off := (m + 1) % 8
		got, check := outFloats(m, off)
		w := fmt.Sprintf("%s Vote %s m=%d stride=%d off=%d %+v", s.Name, what, m, stride, off, *p)
		st := s.Vote(got, taus, stride, p)
		sameFloats(t, w, got, want)
		check(t, w)
		if st != wantSt {
			t.Fatalf("%s: stats %+v, want %+v", w, st, wantSt)
		}
	}
}

func TestVoteMatchesGeneric(t *testing.T) {
	sets := asmSets(t)
	if len(sets) == 0 {
		return
	}
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 2, 3, 5, 8, 17} {
		for _, m := range lengths(true) {
			stride := m + r.IntN(9)
			start := r.IntN(8)
			taus := randFloats(r, start+n*stride)[start:]
			ps := voteParams(randWeights(r, n, m))
			// Every combination at some lengths, one of them at the others.
			if m%37 == 0 {
				for i := range ps {
					checkVote(t, sets, fmt.Sprintf("n=%d", n), taus, stride, m, &ps[i])
				}
			} else {
				checkVote(t, sets, fmt.Sprintf("n=%d", n), taus, stride, m, &ps[(m+n)%len(ps)])
			}
		}
	}
	if testing.Short() {
		return
	}
	// Large blocks, every combination.
	for _, n := range []int{3, 8} {
		m := 65536 + 13
		taus := randFloats(r, n*m)
		for i, p := range voteParams(randWeights(r, n, 1+n)) {
			if i%3 == n%3 {
				checkVote(t, sets, fmt.Sprintf("n=%d", n), taus, m, m, &p)
			}
		}
	}
}

// TestVoteSignsAndTies feeds votes made only of small integers and zeros, so
// sums are exactly zero often and every stat counts something.
func TestVoteSignsAndTies(t *testing.T) {
	sets := asmSets(t)
	r := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{1, 2, 3, 4, 5, 8} {
		m := 200 + n
		taus := make([]float32, n*m)
		for i := range taus {
			taus[i] = float32(r.IntN(5) - 2)
			if r.IntN(8) == 0 {
				taus[i] = float32(math.Copysign(0, -1))
			}
		}
		var sawZero bool
		for _, p := range voteParams(randWeights(r, n, 0)) {
			want := make([]float32, m)
			if Generic.Vote(want, taus, m, &p).ZeroSum > 0 {
				sawZero = true
			}
			checkVote(t, sets, fmt.Sprintf("ties n=%d", n), taus, m, m, &p)
		}
		if n > 1 && !sawZero {
			t.Errorf("n=%d: no zero sums: the test lost its point", n)
		}
	}
}

// TestVoteNaNPayloads makes additions and multiplications meet two NaNs with
// different payloads (values and weights), so it fails if an assembly set
// orders an operand differently from the compiled reference.
func TestVoteNaNPayloads(t *testing.T) {
	sets := asmSets(t)
	nans := []uint32{0x7fc00001, 0xffc00002, 0x7f800003, 0xff812345, 0x7fc0beef}
	for _, n := range []int{2, 3} {
		m := 40
		taus := make([]float32, n*m)
		for i := range taus {
			if i%3 != 2 {
				taus[i] = math.Float32frombits(nans[i%len(nans)])
			} else {
				taus[i] = float32(i%5) - 2
			}
		}
		for _, w := range [][]float32{
			{math.Float32frombits(0x7fc0aaaa), math.Float32frombits(0xffc0bbbb), 1},
			{math.Float32frombits(0x7f80cccc), 2, math.Float32frombits(0x7fc0dddd)},
			{float32(math.Inf(1)), 0, float32(math.Inf(-1))},
		} {
			for _, p := range voteParams(w[:n]) {
				checkVote(t, sets, "NaN payloads", taus, m, m, &p)
			}
		}
	}
}

// TestFinishNaNPayloads makes the final addition meet a NaN product and a
// NaN base, for the same reason.
func TestFinishNaNPayloads(t *testing.T) {
	n := 37
	base, tm := make([]float32, n), make([]float32, n)
	for i := range base {
		base[i] = math.Float32frombits(0x7f800000 | uint32(i+1)<<3)
		tm[i] = math.Float32frombits(0xffc00000 | uint32(i+1)<<5)
	}
	for _, s := range asmSets(t) {
		for _, lambda := range []float32{1, math.Float32frombits(0x7f900000)} {
			for _, dt := range dtypes {
				want, got := make([]byte, n*dt.Size()), make([]byte, n*dt.Size())
				Generic.Finish(want, dt, base, tm, lambda)
				s.Finish(got, dt, base, tm, lambda)
				sameBytes(t, fmt.Sprintf("%s Finish %v NaN payloads λ=%v", s.Name, dt, lambda), dt, got, want)
			}
		}
	}
}

// TestDeltaTrimNaNPayloads subtracts NaN bases from NaN values.
func TestDeltaTrimNaNPayloads(t *testing.T) {
	n := 45
	src := make([]byte, 4*n)
	base := make([]float32, n)
	for i := range base {
		binary.LittleEndian.PutUint32(src[4*i:], 0x7f800000|uint32(i+1)<<4)
		base[i] = math.Float32frombits(0xffc00000 | uint32(i+1)<<6)
	}
	for _, s := range asmSets(t) {
		want, got := make([]float32, n), make([]float32, n)
		Generic.DeltaTrim(want, src, F32, base, 0)
		s.DeltaTrim(got, src, F32, base, 0)
		sameFloats(t, s.Name+" DeltaTrim NaN payloads", got, want)
	}
}

// TestVoteBounds: strides and lengths that would read past taus go to the
// reference, which panics; the sets must panic too rather than read out of
// bounds.
func TestVoteBounds(t *testing.T) {
	p := &VoteParams{Weights: []float32{1, 1, 1}}
	for _, s := range Available() {
		for _, c := range []struct{ m, stride, l int }{{16, 16, 47}, {16, 17, 49}, {17, 16, 32}, {32, -1, 96}} {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("%s: Vote m=%d stride=%d len(taus)=%d did not panic", s.Name, c.m, c.stride, c.l)
					}
				}()
				s.Vote(make([]float32, c.m), make([]float32, c.l), c.stride, p)
			}()
		}
		// In bounds with the last model ending exactly at len(taus).
		out := make([]float32, 16)
		s.Vote(out, make([]float32, 48), 16, p)
	}
}

// TestPipelineMatchesGeneric runs the merge block pipeline (widen the base,
// trim each model, vote, finish) on every set, mixed input dtypes.
func TestPipelineMatchesGeneric(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const m = 1000
	for _, n := range []int{1, 3, 5} {
		baseDT := dtypes[n%3]
		base := randStored(r, baseDT, m, 0)
		models := make([][]byte, n)
		mdt := make([]DType, n)
		for i := range models {
			mdt[i] = dtypes[(n+i)%3]
			models[i] = randStored(r, mdt[i], m, 0)
		}
		run := func(s *Set, p *VoteParams, outDT DType) ([]byte, VoteStats, int) {
			b := make([]float32, m)
			s.Widen(b, base, baseDT)
			taus := make([]float32, n*m)
			kept := 0
			for i := range models {
				kept += s.DeltaTrim(taus[i*m:(i+1)*m], models[i], mdt[i], b, 0x3c000000)
			}
			tm := make([]float32, m)
			st := s.Vote(tm, taus, m, p)
			out := make([]byte, m*outDT.Size())
			s.Finish(out, outDT, b, tm, 0.8)
			return out, st, kept
		}
		for _, p := range voteParams(randWeights(r, n, 1)) {
			for _, dt := range dtypes {
				want, wst, wk := run(Generic, &p, dt)
				for _, s := range asmSets(t) {
					got, st, k := run(s, &p, dt)
					what := fmt.Sprintf("%s pipeline n=%d out %v %+v", s.Name, n, dt, p)
					sameBytes(t, what, dt, got, want)
					if st != wst || k != wk {
						t.Fatalf("%s: stats %+v kept %d, want %+v kept %d", what, st, k, wst, wk)
					}
				}
			}
		}
	}
}

// TestColumnDeltas holds ColumnDeltas, on random columns of random stored
// blocks, to every set's Widen and DeltaTrim over the whole block.
func TestColumnDeltas(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, s := range append(asmSets(t), Generic) {
		for _, dt := range dtypes {
			for _, nm := range []int{1, 3, 8} {
				n := 1 + r.IntN(300)
				baseSrc := randStored(r, dt, n, 0)
				base := make([]float32, n)
				s.Widen(base, baseSrc, dt)
				models, thr := make([][]byte, nm), make([]uint32, nm)
				taus := make([][]float32, nm)
				for i := range nm {
					models[i] = randStored(r, dt, n, 0)
					taus[i] = make([]float32, n)
					s.DeltaTrim(taus[i], models[i], dt, base, 0)
					ths := thresholds(r, taus[i])
					thr[i] = ths[r.IntN(len(ths))]
					s.DeltaTrim(taus[i], models[i], dt, base, thr[i])
				}
				cols := make([]int32, r.IntN(n+1))
				for c := range cols {
					cols[c] = int32(r.IntN(n))
				}
				m := len(cols)
				gotBase, got := make([]float32, m), make([]float32, nm*m)
				ColumnDeltas(gotBase, got, baseSrc, models, dt, cols, thr)
				wantBase, want := make([]float32, m), make([]float32, nm*m)
				for c, e := range cols {
					wantBase[c] = base[e]
					for i := range nm {
						want[i*m+c] = taus[i][e]
					}
				}
				what := fmt.Sprintf("%s ColumnDeltas %v models=%d n=%d", s.Name, dt, nm, n)
				sameFloats(t, what+" base", gotBase, wantBase)
				sameFloats(t, what+" taus", got, want)
			}
		}
	}
}
