//go:build !noasm && !purego && gc

package kernels

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// These tests hold the NEON set to the Go reference bit for bit. The
// reference runs on the same (emulated) CPU, so NaN propagation is the
// hardware's in both: a mismatch is the assembly's fault, or the reference
// computing something other than what its source says (see TestNEONGenericUnfused).

var neonLong = flag.Bool("neonlong", false, "sweep every float32 when testing NEON narrowing")

const neonGuard = 7 // guard elements after every output

// neonSpecials are the values that break naive SIMD: zeros, infinities,
// NaNs of both kinds with payloads, subnormals, rounding ties and the edges
// of the f16 and bf16 ranges.
var neonSpecials = []uint32{
	0x00000000, 0x80000000, 0x7f800000, 0xff800000,
	0x7fc00000, 0xffc00000, 0x7fc12345, 0xffd00001, 0x7fffffff, 0xffffffff,
	0x7f800001, 0xff800001, 0x7fa00000, 0x7f812345, 0xffbfffff, // signalling
	0x00000001, 0x80000001, 0x007fffff, 0x807fffff, 0x00400000, 0x00800000, 0x80800000,
	0x7f7fffff, 0xff7fffff, 0x3f800000, 0xbf800000,
	0x3f808000, 0x3f818000, 0x3f808001, 0x3f807fff, 0x7f7f8000, 0xff7f8000, // bf16 ties
	0x477fe000, 0x477fefff, 0x477ff000, 0x477fffff, 0x47800000, 0xc77ff000, // f16 max region
	0x33800000, 0x33000000, 0x33400000, 0x32ffffff, 0xb3000000, 0x38800000, 0x387fc000, // f16 subnormal edges
	0x00010000, 0x0001ffff, 0x80008000,
}

// neonRand draws float32 bit patterns: mostly ordinary values of varied
// scale, plus zeros, small integers (so sums tie at zero), specials and raw
// random bits (NaNs included).
func neonRand(r *rand.Rand) uint32 {
	switch k := r.IntN(20); {
	case k < 3:
		return 0
	case k < 6:
		return math.Float32bits(float32(r.IntN(5) - 2))
	case k < 8:
		return neonSpecials[r.IntN(len(neonSpecials))]
	case k < 10:
		return r.Uint32()
	default:
		f := float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(12)-8)))
		return math.Float32bits(f)
	}
}

// neonPool holds neonRand draws: filling from it at random offsets is much
// cheaper under emulation than drawing afresh.
var neonPool = func() []float32 {
	r := rand.New(rand.NewPCG(11, 12))
	p := make([]float32, 1<<16+1)
	for i := range p {
		p[i] = math.Float32frombits(neonRand(r))
	}
	return p
}()

func neonFill(r *rand.Rand, dst []float32) {
	for len(dst) > 0 {
		off := r.IntN(len(neonPool))
		n := copy(dst, neonPool[off:])
		dst = dst[n:]
	}
}

// neonStore encodes values as dt without rounding surprises: f16 and bf16
// get raw random halves half the time, the converted float32 otherwise.
func neonStored(r *rand.Rand, dt DType, n, off int) []byte {
	b := make([]byte, off+n*dt.Size())[off:]
	for i := 0; i < n; i++ {
		u := neonRand(r)
		switch dt {
		case F32:
			binary.LittleEndian.PutUint32(b[4*i:], u)
		default:
			h := uint16(r.Uint32())
			if r.IntN(2) == 0 {
				h = uint16(u >> 16)
			}
			binary.LittleEndian.PutUint16(b[2*i:], h)
		}
	}
	return b
}

// neonOut returns an output slice of n elements at offset off in a buffer
// whose other elements hold a sentinel, and a check that they still do.
func neonOut(n, off int) ([]float32, func(t *testing.T)) {
	buf := make([]float32, off+n+neonGuard)
	for i := range buf {
		buf[i] = math.Float32frombits(0x7fbadbad)
	}
	return buf[off : off+n : off+n], func(t *testing.T) {
		t.Helper()
		for i, v := range buf {
			if (i < off || i >= off+n) && math.Float32bits(v) != 0x7fbadbad {
				t.Fatalf("element %d outside the output (offset %d, length %d) was written: %#x", i, off, n, math.Float32bits(v))
			}
		}
	}
}

func neonOutBytes(n, off int) ([]byte, func(t *testing.T)) {
	buf := make([]byte, off+n+4*neonGuard)
	for i := range buf {
		buf[i] = 0xa5
	}
	return buf[off : off+n : off+n], func(t *testing.T) {
		t.Helper()
		for i, v := range buf {
			if (i < off || i >= off+n) && v != 0xa5 {
				t.Fatalf("byte %d outside the output (offset %d, length %d) was written", i, off, n)
			}
		}
	}
}

func neonSameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: element %d of %d: neon %#08x, go %#08x", what, i, len(want), math.Float32bits(got[i]), math.Float32bits(want[i]))
		}
	}
}

func neonSameBytes(t *testing.T, what string, dt DType, got, want []byte) {
	t.Helper()
	for i := range want {
		if got[i] != want[i] {
			e := i / dt.Size()
			t.Fatalf("%s: element %d: neon % x, go % x", what, e, got[e*dt.Size():(e+1)*dt.Size()], want[e*dt.Size():(e+1)*dt.Size()])
		}
	}
}

// neonLengths covers every length up to 300, then large ones around the
// 16-element groups.
func neonLengths() []int {
	var ls []int
	for n := 0; n <= 300; n++ {
		ls = append(ls, n)
	}
	return append(ls, 1023, 1024, 4097, 65536+15, 100003)
}

var neonDTypes = []DType{F32, F16, BF16}

func TestNEONAvailable(t *testing.T) {
	av := Available()
	if av[0].Name != "neon" || av[len(av)-1] != Generic {
		names := make([]string, len(av))
		for i, s := range av {
			names[i] = s.Name
		}
		t.Fatalf("Available() = %v, want neon first and go last", names)
	}
	if s, err := Lookup("neon"); err != nil || s != neonSet {
		t.Fatalf("Lookup(neon) = %v, %v", s, err)
	}
}

// TestNEONWidenExhaustive widens all 65536 f16 and bf16 patterns; the f16
// case holds FCVTL to x448/float16, the reference.
func TestNEONWidenExhaustive(t *testing.T) {
	for _, dt := range []DType{F16, BF16} {
		for _, off := range []int{0, 1, 2} {
			src := make([]byte, off+2<<16)[off:]
			for h := 0; h < 1<<16; h++ {
				binary.LittleEndian.PutUint16(src[2*h:], uint16(h))
			}
			got, check := neonOut(1<<16, off)
			want := make([]float32, 1<<16)
			neonSet.Widen(got, src, dt)
			Generic.Widen(want, src, dt)
			neonSameBits(t, fmt.Sprintf("%v offset %d", dt, off), got, want)
			check(t)
		}
	}
	// Spot values worked by hand: a signalling f16 NaN is quieted, payload
	// kept; bf16 keeps it as it is.
	for _, c := range []struct {
		dt   DType
		h    uint16
		want uint32
	}{
		{F16, 0x3c00, 0x3f800000}, {F16, 0x0001, 0x33800000}, {F16, 0x7c01, 0x7fc02000},
		{F16, 0xfe00, 0xffc00000}, {F16, 0x8000, 0x80000000},
		{BF16, 0x7f81, 0x7f810000}, {BF16, 0x8001, 0x80010000},
	} {
		src := make([]byte, 32)
		for i := 0; i < 16; i++ {
			binary.LittleEndian.PutUint16(src[2*i:], c.h)
		}
		got := make([]float32, 16)
		neonSet.Widen(got, src, c.dt)
		for _, g := range got {
			if math.Float32bits(g) != c.want {
				t.Fatalf("%v %#04x widened to %#08x, want %#08x", c.dt, c.h, math.Float32bits(g), c.want)
			}
		}
	}
}

func TestNEONWiden(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, dt := range neonDTypes {
		for _, n := range neonLengths() {
			off := n % 3
			src := neonStored(r, dt, n, off)
			got, check := neonOut(n, (n/3)%2)
			want := make([]float32, n)
			neonSet.Widen(got, src, dt)
			Generic.Widen(want, src, dt)
			neonSameBits(t, fmt.Sprintf("%v n=%d", dt, n), got, want)
			check(t)
		}
	}
}

func TestNEONDeltaTrim(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, dt := range neonDTypes {
		for _, n := range neonLengths() {
			src := neonStored(r, dt, n, n%3)
			base := make([]float32, n+1)[n%2:]
			neonFill(r, base)
			thrs := []uint32{0, 1, 0x7f800000, 0x7f800001, 0xffffffff, 0x3f800000}
			if n > 0 {
				thrs = append(thrs, AbsBits(base[r.IntN(n)]), r.Uint32()>>1)
			}
			for _, thr := range thrs {
				got, check := neonOut(n, r.IntN(3))
				want := make([]float32, n)
				gk := neonSet.DeltaTrim(got, src, dt, base, thr)
				wk := Generic.DeltaTrim(want, src, dt, base, thr)
				what := fmt.Sprintf("%v n=%d thr=%#x", dt, n, thr)
				neonSameBits(t, what, got, want)
				if gk != wk {
					t.Fatalf("%s: kept %d, go kept %d", what, gk, wk)
				}
				check(t)
			}
		}
	}
}

func TestNEONFinish(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	lambdas := []float32{1, 0.5, 0.3, -1.7, 0, float32(math.Copysign(0, -1)),
		float32(math.Inf(1)), math.Float32frombits(0x7fc00123), math.Float32frombits(0x7f800123), 3e38, 1e-39}
	for _, dt := range neonDTypes {
		for _, n := range neonLengths() {
			base := make([]float32, n+1)[n%2:]
			tm := make([]float32, n+2)[n%3 : n%3+n]
			neonFill(r, base)
			neonFill(r, tm)
			ls := []float32{lambdas[n%len(lambdas)], float32(r.NormFloat64())}
			if n <= 32 {
				ls = lambdas
			}
			for _, lambda := range ls {
				got, check := neonOutBytes(n*dt.Size(), r.IntN(5))
				want := make([]byte, n*dt.Size())
				neonSet.Finish(got, dt, base, tm, lambda)
				Generic.Finish(want, dt, base, tm, lambda)
				neonSameBytes(t, fmt.Sprintf("%v n=%d λ=%v", dt, n, lambda), dt, got, want)
				check(t)
			}
		}
	}
}

// TestNEONNarrowDense narrows a dense sample of float32 patterns (every
// pattern with -neonlong) to f16 and bf16 through Finish with θ₀ = x,
// τ = −0, λ = 1, so the value rounded is x itself (signalling NaNs are quieted
// by the addition in both sets). It holds FCVTN to x448/float16.
func TestNEONNarrowDense(t *testing.T) {
	var xs []uint32
	if *neonLong {
		const chunk = 1 << 22
		for start := uint64(0); start < 1<<32; start += chunk {
			xs = xs[:0]
			for u := start; u < start+chunk; u++ {
				xs = append(xs, uint32(u))
			}
			neonNarrow(t, xs)
		}
		return
	}
	// Every sign/exponent/top-mantissa prefix with the low bits that decide
	// rounding for f16 (bit 12 and below) and bf16 (bit 15 and below).
	lows := []uint32{0, 1, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000, 0x7fff, 0x8000, 0x8001, 0x9000, 0xffff}
	for hi := uint32(0); hi < 1<<16; hi++ {
		for _, lo := range lows {
			xs = append(xs, hi<<16|lo)
		}
	}
	r := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 1<<18; i++ {
		xs = append(xs, r.Uint32())
	}
	neonNarrow(t, xs)
}

func neonNarrow(t *testing.T, xs []uint32) {
	t.Helper()
	base := make([]float32, len(xs))
	for i, u := range xs {
		base[i] = math.Float32frombits(u)
	}
	tm := make([]float32, len(xs))
	for i := range tm {
		tm[i] = float32(math.Copysign(0, -1))
	}
	for _, dt := range []DType{F16, BF16} {
		got := make([]byte, len(xs)*2)
		want := make([]byte, len(xs)*2)
		neonSet.Finish(got, dt, base, tm, 1)
		Generic.Finish(want, dt, base, tm, 1)
		for i := range xs {
			g, w := binary.LittleEndian.Uint16(got[2*i:]), binary.LittleEndian.Uint16(want[2*i:])
			if g != w {
				t.Fatalf("%v: %#08x rounds to %#04x with neon, %#04x with go", dt, xs[i], g, w)
			}
		}
	}
}

// neonVoteParams lists every combination of the vote options for weights w.
func neonVoteParams(w []float32) []VoteParams {
	var ps []VoteParams
	for _, wv := range []bool{false, true} {
		for _, c := range []Consensus{ConsensusSum, ConsensusCount, ConsensusNone} {
			for _, a := range []Aggregate{AggregateMean, AggregateSum, AggregateMax} {
				for _, d := range []bool{false, true} {
					ps = append(ps, VoteParams{Weights: w, WeightedVote: wv, Consensus: c, Aggregate: a, DivideByWeights: d})
				}
			}
		}
	}
	return ps
}

func neonWeights(r *rand.Rand, n, kind int) []float32 {
	w := make([]float32, n)
	for i := range w {
		switch kind {
		case 0:
			w[i] = 1
		case 1: // exact: sums of small integers tie at zero
			w[i] = float32(r.IntN(5)-1) / 2
		case 2: // 0, negative and inexact products
			w[i] = [...]float32{0, -0.7, 0.3, 1.1, -1, float32(r.NormFloat64())}[r.IntN(6)]
		default: // anything, NaNs with payloads included
			w[i] = math.Float32frombits(neonRand(r))
		}
	}
	return w
}

func neonCheckVote(t *testing.T, what string, taus []float32, stride, n int, p *VoteParams) {
	t.Helper()
	got, check := neonOut(n, n%2)
	want := make([]float32, n)
	gs := neonSet.Vote(got, taus, stride, p)
	ws := Generic.Vote(want, taus, stride, p)
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s n=%d stride=%d %+v: element %d: neon %#08x, go %#08x", what, n, stride, *p, i, math.Float32bits(got[i]), math.Float32bits(want[i]))
		}
	}
	if gs != ws {
		t.Fatalf("%s n=%d stride=%d %+v: stats %+v, go %+v", what, n, stride, *p, gs, ws)
	}
	check(t)
}

func TestNEONVote(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, models := range []int{1, 2, 3, 5, 8} {
		for kind := 0; kind < 4; kind++ {
			w := neonWeights(r, models, kind)
			for pi, p := range neonVoteParams(w) {
				// Every length up to 300 for each model count, spread over
				// the parameter combinations, plus a large one for each.
				var lens []int
				for n := pi % 4; n <= 300; n += 4 {
					lens = append(lens, n)
				}
				if pi%9 == kind {
					lens = append(lens, 4099)
				}
				what := fmt.Sprintf("models=%d weights=%v", models, w)
				for _, n := range lens {
					stride := n + r.IntN(9)
					taus := make([]float32, (models-1)*stride+n+r.IntN(3)+3)[r.IntN(3):]
					neonFill(r, taus)
					neonCheckVote(t, what, taus, stride, n, &p)
				}
			}
		}
	}
}

// TestNEONVoteNaNPayloads makes every addition meet two NaNs with different
// payloads, so it fails if the assembly orders an operand differently from
// the compiled reference.
func TestNEONVoteNaNPayloads(t *testing.T) {
	const n, models = 37, 4
	taus := make([]float32, models*n)
	for i := range taus {
		switch i % 3 {
		case 0:
			taus[i] = math.Float32frombits(0x7fc00000 | uint32(i))
		case 1:
			taus[i] = math.Float32frombits(0xff800000 | uint32(i)) // signalling
		default:
			taus[i] = float32(i%5) - 2
		}
	}
	for _, w := range [][]float32{
		{1, 1, 1, 1},
		{math.Float32frombits(0x7fc00007), math.Float32frombits(0xff800009), 2, math.Float32frombits(0x7fc0000b)},
	} {
		for _, p := range neonVoteParams(w) {
			neonCheckVote(t, "NaN payloads", taus, n, n, &p)
		}
	}
}

// TestNEONVoteGolden runs the hand-worked cases of golden_test.go's
// reference through the NEON set with 16 copies of each element, so the
// assembly (not the Go tail) produces them.
func TestNEONVoteGolden(t *testing.T) {
	const copies = 16
	stride := 4 * copies
	taus := make([]float32, 3*stride)
	for i := 0; i < 3; i++ {
		for j := 0; j < 4; j++ {
			for c := 0; c < copies; c++ {
				taus[i*stride+j*copies+c] = goldenTaus[i*4+j]
			}
		}
	}
	w := []float32{1, 0.5, 2}
	for _, c := range []struct {
		p    VoteParams
		want [4]float32
	}{
		{VoteParams{Weights: []float32{1, 1, 1}}, [4]float32{-3, 1, 3, 0}},
		{VoteParams{Weights: w, WeightedVote: true, DivideByWeights: true}, [4]float32{1, 1, -4, 0}},
		{VoteParams{Weights: w}, [4]float32{-1.5, 1.25, 2.25, 0}},
		{VoteParams{Weights: w, Consensus: ConsensusNone, Aggregate: AggregateSum}, [4]float32{1.5, 0.5, -3.5, 0}},
	} {
		out := make([]float32, stride)
		neonSet.Vote(out, taus, stride, &c.p)
		for j := 0; j < 4; j++ {
			for k := 0; k < copies; k++ {
				if out[j*copies+k] != c.want[j] {
					t.Fatalf("%+v: element %d = %v, want %v", c.p, j, out[j*copies+k], c.want[j])
				}
			}
		}
	}
}

// TestNEONGenericUnfused checks that the reference rounds w·τ before adding
// it to the aggregate, as generic.go documents and the NEON set does: Go
// fuses a*b+c into FMADD on arm64 unless the product is converted.
// With x = 1+2⁻¹², x·x = 1+2⁻¹¹+2⁻²⁴ rounds (a tie, to even) to 1+2⁻¹¹, so
// −(1+2⁻¹¹) + x·x is 0 when the product is rounded, 2⁻²⁴ when fused.
func TestNEONGenericUnfused(t *testing.T) {
	x := float32(1 + 1.0/4096)
	p := VoteParams{Weights: []float32{1, x}, Consensus: ConsensusNone, Aggregate: AggregateSum}
	out := make([]float32, 1)
	Generic.Vote(out, []float32{-(1 + 1.0/2048), x}, 1, &p)
	if out[0] != 0 {
		t.Fatalf("generic Vote: −(1+2⁻¹¹) + x·x = %g, want 0: generic.go fuses w·τ into the sum (write a := float32(w·τ))", out[0])
	}
}

func TestNEONShortInputsPanic(t *testing.T) {
	for _, dt := range neonDTypes {
		mustPanic(t, "Widen", func() { neonSet.Widen(make([]float32, 17), make([]byte, 16*dt.Size()), dt) })
		mustPanic(t, "DeltaTrim", func() {
			neonSet.DeltaTrim(make([]float32, 17), make([]byte, 17*dt.Size()), dt, make([]float32, 16), 0)
		})
		mustPanic(t, "Finish", func() { neonSet.Finish(make([]byte, 16*dt.Size()), dt, make([]float32, 17), make([]float32, 17), 1) })
	}
	for _, dt := range neonDTypes {
		mustPanic(t, "DeltaRange src", func() { neonSet.DeltaRange(make([]byte, 16*dt.Size()), dt, make([]float32, 17), 0, 1, nil) })
		mustPanic(t, "DeltaRange idx", func() {
			neonSet.DeltaRange(make([]byte, 17*dt.Size()), dt, make([]float32, 17), 0, 1, make([]int32, 16))
		})
	}
	p := VoteParams{Weights: []float32{1, 1}}
	mustPanic(t, "Vote", func() { neonSet.Vote(make([]float32, 16), make([]float32, 31), 16, &p) })
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Fatalf("%s with a short input did not panic", what)
		}
	}()
	f()
}

func BenchmarkNEON(b *testing.B) {
	const n = 1 << 14
	r := rand.New(rand.NewPCG(1, 1))
	base, tau, out := make([]float32, n), make([]float32, 4*n), make([]float32, n)
	neonFill(r, base)
	neonFill(r, tau)
	src := neonStored(r, BF16, n, 0)
	dst := make([]byte, 2*n)
	p := VoteParams{Weights: []float32{1, 1, 1, 1}}
	for _, s := range []*Set{neonSet, Generic} {
		b.Run(s.Name+"/widen-bf16", func(b *testing.B) {
			b.SetBytes(2 * n)
			for b.Loop() {
				s.Widen(out, src, BF16)
			}
		})
		b.Run(s.Name+"/deltatrim-bf16", func(b *testing.B) {
			b.SetBytes(2 * n)
			for b.Loop() {
				s.DeltaTrim(out, src, BF16, base, 0x3a000000)
			}
		})
		b.Run(s.Name+"/vote4", func(b *testing.B) {
			b.SetBytes(4 * 4 * n)
			for b.Loop() {
				s.Vote(out, tau, n, &p)
			}
		})
		b.Run(s.Name+"/finish-bf16", func(b *testing.B) {
			b.SetBytes(2 * n)
			for b.Loop() {
				s.Finish(dst, BF16, base, out, 0.7)
			}
		})
	}
}

// TestNEONTiesArgsLayout holds the parameter block to the offsets the
// generator computed and wrote into the assembly.
func TestNEONTiesArgsLayout(t *testing.T) {
	typ := reflect.TypeFor[neonTiesArgs]()
	for _, f := range neonTiesArgsLayout {
		sf, ok := typ.FieldByName(f.name)
		if !ok || sf.Offset != f.off {
			t.Errorf("neonTiesArgs.%s at offset %d (found %v), the assembly uses %d", f.name, sf.Offset, ok, f.off)
		}
	}
}

// TestNEONRange holds Range to the reference at every length up to 300 and
// around the 16-element groups, with matches in every lane position, no
// matches, all matches and empty bounds, with and without indices.
func TestNEONRange(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	for _, n := range neonLengths() {
		off := n % 3
		tau := make([]float32, n+off)[off:]
		neonFill(r, tau)
		if n%4 == 1 { // exact ties
			for i := range tau {
				tau[i] = float32(r.IntN(5) - 2)
			}
		}
		bounds := [][2]uint32{{0, 0xffffffff}, {0, 0}, {1, 0}, {0x7f800001, 0xffffffff}, {0x3f800000, 0x3f800000}, {0xffffffff, 0xffffffff}}
		if n > 0 {
			a := AbsBits(tau[r.IntN(n)])
			bounds = append(bounds, [2]uint32{a, a}, [2]uint32{a &^ 0xfffff, a | 0xfffff}, [2]uint32{a + 1, a})
		}
		for _, lh := range bounds {
			what := fmt.Sprintf("n=%d [%#x, %#x]", n, lh[0], lh[1])
			want := make([]int32, n)
			wc := rangeGeneric(tau, lh[0], lh[1], want)
			if gc := neonSet.Range(tau, lh[0], lh[1], nil); gc != wc {
				t.Fatalf("%s without indices: count %d, go %d", what, gc, wc)
			}
			buf := make([]int32, n+neonGuard)
			for i := range buf {
				buf[i] = -7
			}
			gc := neonSet.Range(tau, lh[0], lh[1], buf[:n])
			if gc != wc {
				t.Fatalf("%s: count %d, go %d", what, gc, wc)
			}
			for i := 0; i < wc; i++ {
				if buf[i] != want[i] {
					t.Fatalf("%s: index %d is %d, go %d", what, i, buf[i], want[i])
				}
			}
			for i := n; i < len(buf); i++ {
				if buf[i] != -7 {
					t.Fatalf("%s: wrote past len(tau) at %d", what, i)
				}
			}
		}
	}
	// One match in each lane of a group, and in the tail.
	for j := 0; j < 40; j++ {
		tau := make([]float32, 40)
		tau[j] = 3
		idx := make([]int32, 40)
		if c := neonSet.Range(tau, 1, 0x7f800000, idx); c != 1 || idx[0] != int32(j) {
			t.Fatalf("a match at %d: count %d, idx[0] %d", j, c, idx[0])
		}
	}
	mustPanic(t, "Range", func() { neonSet.Range(make([]float32, 17), 0, 1, make([]int32, 16)) })
}

// TestNEONDeltaRange holds DeltaRange to the reference on the NEON test
// inputs (raw f16 and bf16 halves: signalling NaNs the widening quiets),
// with bands at the data's own magnitudes, an inside value in every lane of
// a group and in the tail, and no allocation.
func TestNEONDeltaRange(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	for _, dt := range neonDTypes {
		for _, n := range neonLengths() {
			src := neonStored(r, dt, n, n%3)
			base := make([]float32, n+n%2)[n%2:]
			neonFill(r, base)
			bounds := [][2]uint32{{0, 0xffffffff}, {0, 0}, {0x7f800000, 0x7f800000}, {0x7f800001, 0xffffffff}, {0xffffffff, 0xffffffff}, {1, 0}}
			if n > 0 {
				j := r.IntN(n)
				a := AbsBits(dt.At(src, j) - base[j])
				bounds = append(bounds, [2]uint32{a, a}, [2]uint32{a &^ 0xfffff, a | 0xfffff}, [2]uint32{0, a}, [2]uint32{a, 0xffffffff})
			}
			for _, lh := range bounds {
				what := fmt.Sprintf("%v n=%d [%#x, %#x]", dt, n, lh[0], lh[1])
				want := make([]int32, n)
				wa, wi := deltaRangeGeneric(src, dt, base, lh[0], lh[1], want)
				if ga, gi := neonSet.DeltaRange(src, dt, base, lh[0], lh[1], nil); ga != wa || gi != wi {
					t.Fatalf("%s without indices: above %d inside %d, go %d %d", what, ga, gi, wa, wi)
				}
				buf := make([]int32, n+neonGuard)
				for i := range buf {
					buf[i] = -7
				}
				ga, gi := neonSet.DeltaRange(src, dt, base, lh[0], lh[1], buf[:n])
				if ga != wa || gi != wi || !slices.Equal(buf[:gi], want[:wi]) {
					t.Fatalf("%s: above %d indices %v, go %d %v", what, ga, buf[:min(gi, n)], wa, want[:wi])
				}
				for i := n; i < len(buf); i++ {
					if buf[i] != -7 {
						t.Fatalf("%s: wrote past len(base) at %d", what, i)
					}
				}
			}
		}
	}
	// One inside value in each lane of a group, and in the tail; one above.
	for _, dt := range neonDTypes {
		src := make([]byte, 40*dt.Size())
		base := make([]float32, 40)
		idx := make([]int32, 40)
		for j := 0; j < 40; j++ {
			clear(base)
			base[j] = -3      // τ = 0 − (−3)
			base[39-j] = 1e30 // τ = −1e30, above 3
			if a, c := neonSet.DeltaRange(src, dt, base, 1, math.Float32bits(3), idx); c != 1 || a != 1 || idx[0] != int32(j) {
				t.Fatalf("%v one inside at %d, one above at %d: above %d inside %d idx[0] %d", dt, j, 39-j, a, c, idx[0])
			}
		}
	}
	src, base, idx := make([]byte, 2*1000), make([]float32, 1000), make([]int32, 1000)
	if a := testing.AllocsPerRun(10, func() { neonSet.DeltaRange(src, BF16, base, 0, 0, idx) }); a != 0 {
		t.Fatalf("DeltaRange allocates: %v per call", a)
	}
}

// neonTiesRef is the reference for Ties: the Go set's stages. It returns
// the output, the stats, the kept counts, the zero-sum indices and the
// Equal counts (nil unless b asks for them).
func neonTiesRef(b *TiesBlock) ([]byte, VoteStats, []int, []int32, []int) {
	c := *b
	c.Dst = make([]byte, len(b.Dst))
	c.Kept = make([]int, len(b.Kept))
	if b.Zero != nil {
		c.Zero = make([]int32, len(b.Zero))
	}
	if b.Equal != nil {
		c.Equal = make([]int, len(b.Equal))
	}
	st := Generic.Ties(&c)
	var z []int32
	if c.Zero != nil {
		z = c.Zero[:st.ZeroSum]
	}
	return c.Dst, st, c.Kept, z, c.Equal
}

type neonTiesCase struct {
	dt     DType
	base   []byte
	models [][]byte
	thr    []uint32
	equal  bool // ask for the Equal counts
}

// check runs Ties on c against the reference; it returns the Equal counts
// (nil unless c.equal).
func (c *neonTiesCase) check(t *testing.T, n int, p *VoteParams, lambda float32, withZero bool) []int {
	t.Helper()
	nm := len(c.models)
	dst, check := neonOutBytes(n*c.dt.Size(), n%3)
	b := &TiesBlock{Dst: dst, OutDT: c.dt, Base: c.base, Models: c.models, DT: c.dt,
		Thr: c.thr, Vote: p, Lambda: lambda, Kept: make([]int, nm)}
	if c.equal {
		b.Equal = make([]int, nm)
		for i := range b.Equal {
			b.Equal[i] = -5 // Ties must clear it
		}
	}
	var zbuf []int32
	if withZero {
		zbuf = make([]int32, n+neonGuard)
		for i := range zbuf {
			zbuf[i] = -7
		}
		b.Zero = zbuf[:n]
	}
	want, wst, wkept, wzero, wequal := neonTiesRef(b)
	st := neonSet.Ties(b)
	what := fmt.Sprintf("%v n=%d models=%d λ=%v thr=%#x %+v zero=%v equal=%v", c.dt, n, nm, lambda, c.thr, *p, withZero, c.equal)
	neonSameBytes(t, what, c.dt, dst, want)
	check(t)
	if st != wst {
		t.Fatalf("%s: stats %+v, go %+v", what, st, wst)
	}
	for i := range wkept {
		if b.Kept[i] != wkept[i] {
			t.Fatalf("%s: kept %v, go %v", what, b.Kept, wkept)
		}
	}
	if c.equal && !slices.Equal(b.Equal, wequal) {
		t.Fatalf("%s: equal %v, go %v", what, b.Equal, wequal)
	}
	if withZero {
		for i := range wzero {
			if zbuf[i] != wzero[i] {
				t.Fatalf("%s: zero-sum indices %v, go %v", what, zbuf[:st.ZeroSum], wzero)
			}
		}
		for i := n; i < len(zbuf); i++ {
			if zbuf[i] != -7 {
				t.Fatalf("%s: wrote a zero-sum index past n at %d", what, i)
			}
		}
	}
	return b.Equal
}

func neonTiesInputs(r *rand.Rand, dt DType, nm, n int) *neonTiesCase {
	c := &neonTiesCase{dt: dt, base: neonStored(r, dt, n, r.IntN(3))}
	thrs := []uint32{0, 1, 0x3c000000, 0x3f800000, 0x7f800000, 0x7fc00000, 0xffffffff}
	for i := 0; i < nm; i++ {
		m := neonStored(r, dt, n, r.IntN(3))
		if i > 0 && r.IntN(3) == 0 { // exact opposites: zero sums
			for j := 0; j+1 < len(m); j += 2 {
				if r.IntN(2) == 0 {
					copy(m[j:j+2], c.models[0][j:j+2])
				}
			}
		}
		c.models = append(c.models, m)
		c.thr = append(c.thr, thrs[r.IntN(len(thrs))])
	}
	return c
}

// neonTiesParams are the vote settings the fused assembly takes (the first
// neonTiesFusedParams), then two it does not (which go through the staged
// form).
func neonTiesParams(w []float32) []VoteParams {
	var ps []VoteParams
	for _, wv := range []bool{false, true} {
		for _, a := range []Aggregate{AggregateMean, AggregateSum} {
			ps = append(ps, VoteParams{Weights: w, WeightedVote: wv, Aggregate: a})
		}
		ps = append(ps, VoteParams{Weights: w, WeightedVote: wv, DivideByWeights: true})
	}
	return append(ps, VoteParams{Weights: w, Consensus: ConsensusCount}, VoteParams{Weights: w, Aggregate: AggregateMax})
}

const neonTiesFusedParams = 6

// TestNEONTiesFusedTaken makes sure the hot cases reach the assembly.
func TestNEONTiesFusedTaken(t *testing.T) {
	for _, dt := range []DType{F16, BF16} {
		for nm := 1; nm <= 9; nm++ {
			for _, p := range neonTiesParams(make([]float32, nm)) {
				b := &TiesBlock{Dst: make([]byte, 8), OutDT: dt, Base: make([]byte, 8), DT: dt,
					Models: make([][]byte, nm), Thr: make([]uint32, nm), Kept: make([]int, nm), Vote: &p}
				for i := range b.Models {
					b.Models[i] = make([]byte, 8)
				}
				want := nm <= 8 && p.Consensus == ConsensusSum && p.Aggregate != AggregateMax
				if got := neonTiesFused(b); got != want {
					t.Fatalf("%v models=%d %+v: fused %v", dt, nm, p, got)
				}
				b.Equal = make([]int, nm)
				if got := neonTiesFused(b); got != want {
					t.Fatalf("%v models=%d %+v with Equal: fused %v", dt, nm, p, got)
				}
				b.Equal = make([]int, nm+1) // the staged form panics
				if neonTiesFused(b) {
					t.Fatalf("%v models=%d %+v: fused with %d Equal counts", dt, nm, p, len(b.Equal))
				}
			}
		}
	}
}

// TestNEONTiesTails runs the fused kernel at every length up to 300 (every
// tail after the groups of 4) for 1..9 models, the model count being where
// the unrolled loops differ, and longer blocks.
func TestNEONTiesTails(t *testing.T) {
	r := rand.New(rand.NewPCG(33, 34))
	for _, dt := range []DType{BF16, F16} {
		for nm := 1; nm <= 9; nm++ {
			for kind := 0; kind < 4; kind++ {
				w := neonWeights(r, nm, kind)
				ps := neonTiesParams(w)
				for n := kind; n <= 300; n += 4 {
					c := neonTiesInputs(r, dt, nm, n)
					c.equal = n%3 != 0
					p := ps[(n/4+nm)%len(ps)]
					lambda := []float32{1, 0.7, -1.5, math.Float32frombits(0x7fc00123)}[(n/4)%4]
					c.check(t, n, &p, lambda, n%8 < 4)
				}
				n := 4099 + kind
				c := neonTiesInputs(r, dt, nm, n)
				for pi := range ps {
					c.equal = pi%3 != 1
					c.check(t, n, &ps[pi], 0.9, pi%2 == 0)
				}
			}
		}
	}
}

// TestNEONTiesNaNPayloads makes the aggregate and the finish meet NaNs with
// different payloads, quiet and signalling, in models, base, weights and λ.
func TestNEONTiesNaNPayloads(t *testing.T) {
	const n = 37
	for _, dt := range []DType{BF16, F16} {
		for _, nm := range []int{1, 4, 8} {
			c := &neonTiesCase{dt: dt, base: make([]byte, 2*n)}
			put := func(b []byte, j int, i int) {
				var h uint16
				switch (i + j) % 4 {
				case 0:
					h = 0x7e00 | uint16(i+j)&0x1ff // quiet (both formats)
				case 1:
					h = 0xfc00 | uint16(1+j)&0x1ff // f16: signalling; bf16: large
				case 2:
					h = 0x7f81 + uint16(j)&0x3f // bf16: signalling; f16: quiet NaN
				default:
					h = uint16(0x3c00 + 0x100*(i%3))
				}
				binary.LittleEndian.PutUint16(b[2*j:], h)
			}
			for j := 0; j < n; j++ {
				put(c.base, j, 7)
			}
			for i := 0; i < nm; i++ {
				m := make([]byte, 2*n)
				for j := 0; j < n; j++ {
					put(m, j, i)
				}
				c.models = append(c.models, m)
				c.thr = append(c.thr, 0)
			}
			w := make([]float32, nm)
			for i := range w {
				w[i] = []float32{1, math.Float32frombits(0x7fc00007 + uint32(i)), math.Float32frombits(0xff800009 + uint32(i)), -0.5}[i%4]
			}
			for _, ws := range [][]float32{ones(nm), w} {
				for _, p := range neonTiesParams(ws)[:neonTiesFusedParams] {
					for k, lambda := range []float32{1, math.Float32frombits(0x7fc00123), math.Float32frombits(0x7f800123)} {
						c.equal = k != 1
						c.check(t, n, &p, lambda, true)
					}
				}
			}
		}
	}
}

// TestNEONTiesZeroSums builds blocks where about half the elements sum to
// exactly zero, in every lane position, across many groups.
func TestNEONTiesZeroSums(t *testing.T) {
	r := rand.New(rand.NewPCG(35, 36))
	for _, dt := range []DType{BF16, F16} {
		for _, nm := range []int{2, 3, 8} {
			n := 203
			c := &neonTiesCase{dt: dt, base: make([]byte, 2*n)}
			for j := 0; j < n; j++ {
				binary.LittleEndian.PutUint16(c.base[2*j:], neonNarrowTo(dt, float32(r.IntN(9)-4)))
			}
			vals := []float32{1, -1, 2, -2, 0.5, 0}
			for i := 0; i < nm; i++ {
				m := make([]byte, 2*n)
				for j := 0; j < n; j++ {
					base := c.load(j)
					v := base + vals[r.IntN(len(vals))]
					if i == nm-1 && r.IntN(2) == 0 { // cancel the others
						var s float32
						for k := 0; k < i; k++ {
							s += c.tau(k, j)
						}
						v = base - s
					}
					binary.LittleEndian.PutUint16(m[2*j:], neonNarrowTo(dt, v))
				}
				c.models = append(c.models, m)
				c.thr = append(c.thr, 0)
			}
			if _, st, _, _, _ := neonTiesRef(&TiesBlock{Dst: make([]byte, 2*n), OutDT: dt, Base: c.base, Models: c.models, DT: dt,
				Thr: c.thr, Vote: &VoteParams{Weights: ones(nm)}, Kept: make([]int, nm)}); st.ZeroSum < n/4 {
				t.Fatalf("%v models=%d: only %d zero sums", dt, nm, st.ZeroSum)
			}
			for _, p := range neonTiesParams(ones(nm))[:neonTiesFusedParams] {
				c.equal = false
				c.check(t, n, &p, 1, true)
				c.equal = true
				c.check(t, n, &p, 1, false)
			}
		}
	}
}

func (c *neonTiesCase) load(j int) float32 { return load(c.base, c.dt, j) }

func (c *neonTiesCase) tau(i, j int) float32 { return load(c.models[i], c.dt, j) - c.load(j) }

func neonNarrowTo(dt DType, f float32) uint16 {
	if dt == F16 {
		return F32ToF16(f)
	}
	return F32ToBF16(f)
}

// TestNEONCallChunks runs Range, DeltaRange and Ties with the assembly called on small
// chunks, so that index offsets and counts carry from call to call.
func TestNEONCallChunks(t *testing.T) {
	defer func(c int) { neonCallMax = c }(neonCallMax)
	r := rand.New(rand.NewPCG(37, 38))
	for _, chunk := range []int{16, 48} {
		neonCallMax = chunk
		for _, n := range []int{15, 16, 17, 100, 203} {
			tau := make([]float32, n)
			for i := range tau {
				tau[i] = float32(r.IntN(3) - 1)
			}
			want := make([]int32, n)
			wc := rangeGeneric(tau, 1, 0x3f800000, want)
			got := make([]int32, n)
			if gc := neonSet.Range(tau, 1, 0x3f800000, got); gc != wc || !slices.Equal(got[:gc], want[:wc]) {
				t.Fatalf("Range chunk=%d n=%d: %v, want %v", chunk, n, got[:gc], want[:wc])
			}
			for _, dt := range neonDTypes {
				src := make([]byte, n*dt.Size())
				for j := 0; j < n; j++ {
					v := float32(r.IntN(3) - 1)
					if dt == F32 {
						binary.LittleEndian.PutUint32(src[4*j:], math.Float32bits(v))
					} else {
						binary.LittleEndian.PutUint16(src[2*j:], neonNarrowTo(dt, v))
					}
				}
				base := make([]float32, n)
				for j := range base {
					base[j] = float32(r.IntN(3) - 1)
				}
				wa, wi := deltaRangeGeneric(src, dt, base, 1, 0x3f800000, want)
				ga, gi := neonSet.DeltaRange(src, dt, base, 1, 0x3f800000, got)
				if ga != wa || gi != wi || !slices.Equal(got[:gi], want[:wi]) {
					t.Fatalf("DeltaRange %v chunk=%d n=%d: above %d %v, want %d %v", dt, chunk, n, ga, got[:gi], wa, want[:wi])
				}
				if ga, gi := neonSet.DeltaRange(src, dt, base, 1, 0x3f800000, nil); ga != wa || gi != wi {
					t.Fatalf("DeltaRange %v chunk=%d n=%d without indices: %d %d, want %d %d", dt, chunk, n, ga, gi, wa, wi)
				}
			}
			for _, dt := range []DType{BF16, F16} {
				c := &neonTiesCase{dt: dt, base: make([]byte, 2*n)}
				for i := 0; i < 3; i++ {
					m := make([]byte, 2*n)
					for j := 0; j < n; j++ {
						binary.LittleEndian.PutUint16(m[2*j:], neonNarrowTo(dt, float32(r.IntN(3)-1)))
					}
					c.models = append(c.models, m)
					c.thr = append(c.thr, 0)
				}
				for _, p := range neonTiesParams([]float32{1, 0.5, 2})[:neonTiesFusedParams] {
					c.equal = false
					c.check(t, n, &p, 1, true)
					c.equal = true
					c.check(t, n, &p, 1, true)
				}
			}
		}
	}
}

// neonTiesEqualInputs makes nm models whose task vectors take few distinct
// values, small multiples and fractions of one another, with an occasional
// special or random one, and thresholds taken from the data so that many
// values sit exactly at them (some models get 0, which counts the zeros).
func neonTiesEqualInputs(r *rand.Rand, dt DType, nm, n int) *neonTiesCase {
	vals := []float32{0, 0, 1, -1, 0.5, -0.5, 2, -2, 0.25, 3}
	put := func(b []byte, j int, f float32) {
		binary.LittleEndian.PutUint16(b[2*j:], neonNarrowTo(dt, f))
	}
	off := r.IntN(3)
	c := &neonTiesCase{dt: dt, base: make([]byte, off+2*n)[off:], equal: true}
	for j := 0; j < n; j++ {
		put(c.base, j, vals[r.IntN(len(vals))])
	}
	rnd := neonStored(r, dt, n, 0)
	for i := 0; i < nm; i++ {
		off := r.IntN(3)
		m := make([]byte, off+2*n)[off:]
		for j := 0; j < n; j++ {
			if r.IntN(16) == 0 {
				copy(m[2*j:2*j+2], rnd[2*j:2*j+2]) // specials, NaNs, anything
			} else {
				put(m, j, c.load(j)+vals[r.IntN(len(vals))])
			}
		}
		c.models = append(c.models, m)
	}
	for i := 0; i < nm; i++ {
		var thr uint32
		switch k := r.IntN(5); {
		case k == 0:
			thr = 0
		case k == 1:
			thr = 0x7fffffff // only NaNs of that payload
		default:
			thr = AbsBits(c.tau(i, r.IntN(n)))
		}
		c.thr = append(c.thr, thr)
	}
	return c
}

// TestNEONTiesEqual checks the Equal counts of the fused kernel, for every
// model count (9 goes through the staged form), at lengths with and without
// a tail, with the assembly called on the whole block or on small chunks, so
// that counts carry from call to call and into the tail.
func TestNEONTiesEqual(t *testing.T) {
	defer func(c int) { neonCallMax = c }(neonCallMax)
	r := rand.New(rand.NewPCG(39, 40))
	for _, chunk := range []int{neonCallMax, 16, 48} {
		neonCallMax = chunk
		var at, zeros int // how many values the tests saw at a threshold
		for _, dt := range []DType{BF16, F16} {
			for nm := 1; nm <= 9; nm++ {
				ps := neonTiesParams(neonWeights(r, nm, nm%4))
				for k, n := range []int{4, 5, 6, 7, 13, 16, 64, 67, 99, 203, 1030} {
					c := neonTiesEqualInputs(r, dt, nm, n)
					p := ps[(k+nm)%len(ps)]
					if k%3 == 0 {
						p = ps[k%neonTiesFusedParams]
					}
					lambda := []float32{1, 0.7, -1.5}[k%3]
					eq := c.check(t, n, &p, lambda, k%2 == 0)
					for i, e := range eq {
						at += e
						if c.thr[i] == 0 {
							zeros += e
						}
					}
				}
			}
		}
		if at < 1000 || zeros < 100 {
			t.Fatalf("chunk=%d: only %d values at a threshold, %d zeros at a 0 threshold: the test data is too weak", chunk, at, zeros)
		}
	}
	// A block of nothing but values at the threshold, on every lane, and a
	// long one across many groups.
	for _, dt := range []DType{BF16, F16} {
		for nm := 1; nm <= 8; nm++ {
			for _, n := range []int{4, 7, 4099} {
				c := &neonTiesCase{dt: dt, base: make([]byte, 2*n), equal: true}
				for i := 0; i < nm; i++ {
					m := make([]byte, 2*n)
					for j := 0; j < n; j++ {
						f := float32(i + 1)
						if (i+j)%2 == 1 {
							f = -f
						}
						binary.LittleEndian.PutUint16(m[2*j:], neonNarrowTo(dt, f))
					}
					c.models = append(c.models, m)
					c.thr = append(c.thr, math.Float32bits(float32(i+1)))
				}
				p := VoteParams{Weights: ones(nm)}
				for i, e := range c.check(t, n, &p, 1, true) {
					if e != n {
						t.Fatalf("%v models=%d n=%d: model %d has %d values at its threshold, want %d", dt, nm, n, i, e, n)
					}
				}
			}
		}
	}
}
