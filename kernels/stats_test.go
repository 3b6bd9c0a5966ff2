package kernels

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"testing"
)

// The statistics kernels against the reference, bit for bit, and the
// reference against the order stats.go spells out.

// statsLengths are lengths around the chunks and the words: short ones,
// whole chunks (one, two and three: the kernels pair chunks), and whole
// chunks plus a tail.
func statsLengths(short bool) []int {
	l := []int{0, 1, 3, 4, 5, 63, 64, 65, 127, 300, 1023, 1024, 1025, 1024 + 64, 2048, 2048 + 3, 3072, 3072 + 700}
	if !short {
		l = append(l, 5*1024, 7*1024+129, 16*1024)
	}
	return l
}

// outSums returns n float64 at offset off of a buffer of sentinels, and a
// check that the others still are.
func outSums(n, off int) ([]float64, func(t *testing.T, what string)) {
	buf := make([]float64, off+n+guard)
	const sentinel = 0x7ff4badbadbadbad
	for i := range buf {
		buf[i] = math.Float64frombits(sentinel)
	}
	return buf[off : off+n], func(t *testing.T, what string) {
		t.Helper()
		for i, v := range buf {
			if (i < off || i >= off+n) && math.Float64bits(v) != sentinel {
				t.Fatalf("%s: wrote outside its sums at %d (offset %d, length %d)", what, i-off, off, n)
			}
		}
	}
}

// outWords returns n words at offset off, filled from fill (the kernels OR
// into some), with sentinels around, and a check of the sentinels.
func outWords(n, off int, fill []uint64) ([]uint64, func(t *testing.T, what string)) {
	buf := make([]uint64, off+n+guard)
	const sentinel = 0xa5a5a5a5a5a5a5a5
	for i := range buf {
		buf[i] = sentinel
	}
	copy(buf[off:off+n], fill)
	return buf[off : off+n], func(t *testing.T, what string) {
		t.Helper()
		for i, v := range buf {
			if (i < off || i >= off+n) && v != sentinel {
				t.Fatalf("%s: wrote outside its words at %d (offset %d, length %d)", what, i-off, off, n)
			}
		}
	}
}

func sameSums(t *testing.T, what string, got, want []float64) {
	t.Helper()
	for i := range want {
		if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
			t.Fatalf("%s: chunk %d: %v (%#x), want %v (%#x)", what, i, got[i], math.Float64bits(got[i]), want[i], math.Float64bits(want[i]))
		}
	}
}

func sameWords(t *testing.T, what string, got, want []uint64) {
	t.Helper()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: word %d: %#x, want %#x", what, i, got[i], want[i])
		}
	}
}

func randWords(r *rand.Rand, n int) []uint64 {
	w := make([]uint64, n)
	for i := range w {
		if r.IntN(2) == 0 {
			w[i] = r.Uint64()
		}
	}
	return w
}

// checkNorms runs Norms of every set under test on tau and compares.
func checkNorms(t *testing.T, sets []*Set, what string, tau []float32, fill []uint64, off int) {
	nc, nw := Chunks(len(tau)), Words(len(tau))
	wl1, wsq := make([]float64, nc), make([]float64, nc)
	wpos, wneg := append([]uint64(nil), fill[:nw]...), append([]uint64(nil), fill[nw:2*nw]...)
	wnz := Generic.Norms(tau, wl1, wsq, wpos, wneg)
	for _, s := range sets {
		l1, c1 := outSums(nc, off)
		sq, c2 := outSums(nc, off)
		pos, c3 := outWords(nw, off, fill[:nw])
		neg, c4 := outWords(nw, off, fill[nw:2*nw])
		nz := s.Norms(tau, l1, sq, pos, neg)
		w := fmt.Sprintf("%s Norms %s n=%d", s.Name, what, len(tau))
		sameSums(t, w+" l1", l1, wl1)
		sameSums(t, w+" sq", sq, wsq)
		sameWords(t, w+" pos", pos, wpos)
		sameWords(t, w+" neg", neg, wneg)
		for _, c := range []func(*testing.T, string){c1, c2, c3, c4} {
			c(t, w)
		}
		if nz != wnz {
			t.Fatalf("%s: nonzero %d, want %d", w, nz, wnz)
		}
	}
}

func checkDot(t *testing.T, sets []*Set, what string, a, b []float32, off int) {
	want := make([]float64, Chunks(len(a)))
	Generic.Dot(a, b, want)
	for _, s := range sets {
		got, check := outSums(len(want), off)
		s.Dot(a, b, got)
		w := fmt.Sprintf("%s Dot %s n=%d", s.Name, what, len(a))
		sameSums(t, w, got, want)
		check(t, w)
	}
}

func checkTrimWords(t *testing.T, sets []*Set, what string, tau []float32, gt uint32, off int) {
	nc, nw := Chunks(len(tau)), Words(len(tau))
	wk, ws, wr := make([]uint64, nw), make([]uint64, nw), make([]float64, nc)
	wn := Generic.TrimWords(tau, gt, wk, ws, wr)
	junk := make([]uint64, nw)
	for i := range junk {
		junk[i] = 0x5555aaaa5555aaaa
	}
	for _, s := range sets {
		k, c1 := outWords(nw, off, junk)
		sg, c2 := outWords(nw, off, junk)
		rm, c3 := outSums(nc, off)
		n := s.TrimWords(tau, gt, k, sg, rm)
		w := fmt.Sprintf("%s TrimWords %s n=%d gt=%#x", s.Name, what, len(tau), gt)
		sameWords(t, w+" kept", k, wk)
		sameWords(t, w+" sign", sg, ws)
		sameSums(t, w+" removed", rm, wr)
		for _, c := range []func(*testing.T, string){c1, c2, c3} {
			c(t, w)
		}
		if n != wn {
			t.Fatalf("%s: count %d, want %d", w, n, wn)
		}
	}
}

// statsInputs are the inputs the comparisons run on: random draws (specials
// included), finite values only (the sums inspect sees), and specials at
// every position of a chunk.
func statsInputs(r *rand.Rand, n int) map[string][]float32 {
	in := map[string][]float32{"random": randFloats(r, n)}
	fin := make([]float32, n)
	for i := range fin {
		fin[i] = float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(60)-40)))
		if r.IntN(8) == 0 {
			fin[i] = 0
		}
	}
	in["finite"] = fin
	sp := make([]float32, n)
	for i := range sp {
		sp[i] = math.Float32frombits(specials[(i*7+n)%len(specials)])
	}
	in["specials"] = sp
	return in
}

func TestStatsMatchGeneric(t *testing.T) {
	sets := asmSets(t)
	r := rand.New(rand.NewPCG(41, 42))
	for _, n := range statsLengths(testing.Short()) {
		for what, tau := range statsInputs(r, n) {
			off := r.IntN(4)
			checkNorms(t, sets, what, tau, randWords(r, 2*Words(n)), off)
			other := randFloats(r, n)
			if what == "finite" {
				other = statsInputs(r, n)["finite"]
			}
			checkDot(t, sets, what, tau, other, off)
			checkDot(t, sets, what+" squared", tau, tau, off)
			gts := []uint32{0, 1, 0x7f800000, 0x7fffffff, 0x80000000, 0xffffffff, r.Uint32()}
			if n > 0 {
				gts = append(gts, AbsBits(tau[r.IntN(n)]), AbsBits(tau[r.IntN(n)])-1)
			}
			for _, gt := range gts {
				checkTrimWords(t, sets, what, tau, gt, off)
			}
		}
	}
}

// TestStatsUnaligned runs the kernels on inputs that start at every offset
// of a vector.
func TestStatsUnaligned(t *testing.T) {
	sets := asmSets(t)
	r := rand.New(rand.NewPCG(43, 44))
	buf := randFloats(r, 3*SumChunk+40)
	for o := 0; o < 17; o++ {
		tau := buf[o : o+2*SumChunk+5]
		checkNorms(t, sets, fmt.Sprintf("offset %d", o), tau, randWords(r, 2*Words(len(tau))), 0)
		checkDot(t, sets, fmt.Sprintf("offset %d", o), tau, buf[40-o:40-o+len(tau)], 1)
		checkTrimWords(t, sets, fmt.Sprintf("offset %d", o), tau, AbsBits(tau[7]), 1)
	}
}

// plainChunk is a chunk's sum as stats.go words it, written out apart from
// the reference: partial sum x mod 4 for the first c&^3, the rest into the
// first.
func plainChunk(v []float64) float64 {
	var s [4]float64
	for x, f := range v {
		lane := x % 4
		if x >= len(v)&^3 {
			lane = 0
		}
		s[lane] += f
	}
	return pinNaN((s[0] + s[1]) + (s[2] + s[3]))
}

// TestStatsReference checks the reference against plainChunk and plain
// mask words, and its sums against float64 sums within rounding.
func TestStatsReference(t *testing.T) {
	r := rand.New(rand.NewPCG(45, 46))
	for _, n := range statsLengths(true) {
		for what, tau := range statsInputs(r, n) {
			other := statsInputs(r, n)["finite"]
			nc, nw := Chunks(n), Words(n)
			l1, sq, dot, rm := make([]float64, nc), make([]float64, nc), make([]float64, nc), make([]float64, nc)
			pos, neg, kept, sign := make([]uint64, nw), make([]uint64, nw), make([]uint64, nw), make([]uint64, nw)
			nz := Generic.Norms(tau, l1, sq, pos, neg)
			Generic.Dot(tau, other, dot)
			gt := uint32(0x3c000000)
			nk := Generic.TrimWords(tau, gt, kept, sign, rm)
			wantNZ, wantK := 0, 0
			for c := range nc {
				ch := tau[c*SumChunk : min(c*SumChunk+SumChunk, n)]
				var a, q, d, m []float64
				for x, v := range ch {
					f := float64(v)
					a, q = append(a, math.Abs(f)), append(q, f*f)
					d = append(d, f*float64(other[c*SumChunk+x]))
					if AbsBits(v) <= gt {
						m = append(m, math.Abs(f))
					} else {
						m = append(m, 0)
					}
				}
				for _, p := range []struct {
					name      string
					got, want float64
				}{{"l1", l1[c], plainChunk(a)}, {"sq", sq[c], plainChunk(q)}, {"dot", dot[c], plainChunk(d)}, {"removed", rm[c], plainChunk(m)}} {
					if math.Float64bits(p.got) != math.Float64bits(p.want) {
						t.Fatalf("%s n=%d chunk %d %s: %v, want %v", what, n, c, p.name, p.got, p.want)
					}
				}
			}
			for x, v := range tau {
				b := math.Float32bits(v)
				w, bit := x/64, uint64(1)<<(x%64)
				isPos, isNeg := b != 0 && b>>31 == 0, b > 0x80000000
				isKept := b&0x7fffffff > gt
				if (pos[w]&bit != 0) != isPos || (neg[w]&bit != 0) != isNeg || (kept[w]&bit != 0) != isKept ||
					(sign[w]&bit != 0) != (isKept && b>>31 == 1) {
					t.Fatalf("%s n=%d element %d (%#x): a mask bit is wrong", what, n, x, b)
				}
				if isPos || isNeg {
					wantNZ++
				}
				if isKept {
					wantK++
				}
			}
			if nz != wantNZ || nk != wantK {
				t.Fatalf("%s n=%d: nonzero %d kept %d, want %d %d", what, n, nz, nk, wantNZ, wantK)
			}
			for w := range nw {
				if bits.OnesCount64(pos[w]&neg[w]) != 0 {
					t.Fatalf("%s n=%d word %d: an element both positive and negative", what, n, w)
				}
			}
		}
	}
}

// TestStatsNaNPinned checks that a NaN sum is SumNaN on every set, whatever
// payloads made it.
func TestStatsNaNPinned(t *testing.T) {
	tau := make([]float32, SumChunk+SumChunk/2)
	for i := range tau {
		tau[i] = float32(i%5) - 2
	}
	tau[5] = math.Float32frombits(0x7fc12345)
	tau[SumChunk+9] = math.Float32frombits(0xff812345)
	for _, s := range Available() {
		l1, sq, dot := make([]float64, 2), make([]float64, 2), make([]float64, 2)
		s.Norms(tau, l1, sq, make([]uint64, Words(len(tau))), make([]uint64, Words(len(tau))))
		s.Dot(tau, tau, dot)
		for _, v := range [][]float64{l1, sq, dot} {
			for c, f := range v {
				if math.Float64bits(f) != SumNaN {
					t.Errorf("%s: chunk %d: %#x, want SumNaN", s.Name, c, math.Float64bits(f))
				}
			}
		}
	}
}

// checkLowBits runs LowBits of every set under test with a list of room
// entries (guarded) and compares it with the reference's.
func checkLowBits(t *testing.T, sets []*Set, what string, tau []float32, room int) {
	want := make([]uint32, room)
	wantN := Generic.LowBits(tau, want)
	for _, s := range sets {
		buf := make([]uint32, room+guard)
		for i := range buf {
			buf[i] = 0xdeadbeef
		}
		n := s.LowBits(tau, buf[:room])
		w := fmt.Sprintf("%s LowBits %s n=%d room=%d", s.Name, what, len(tau), room)
		if n != wantN {
			t.Fatalf("%s: count %d, want %d", w, n, wantN)
		}
		for i := range min(n, room) {
			if buf[i] != want[i] {
				t.Fatalf("%s: entry %d: %#x, want %#x", w, i, buf[i], want[i])
			}
		}
		for i := room; i < len(buf); i++ {
			if buf[i] != 0xdeadbeef {
				t.Fatalf("%s: wrote past the list at %d", w, i)
			}
		}
	}
}

// lowBitsInputs are mostly bf16-like values (low bits zero), with a
// fraction frac (in 1/64) of random patterns.
func lowBitsInput(r *rand.Rand, n, frac int) []float32 {
	tau := make([]float32, n)
	for i := range tau {
		u := randBits(r)
		if r.IntN(64) >= frac {
			u &^= 0xffff
		}
		tau[i] = math.Float32frombits(u)
	}
	return tau
}

func TestLowBitsMatchesGeneric(t *testing.T) {
	sets := asmSets(t)
	r := rand.New(rand.NewPCG(49, 50))
	for _, n := range append(statsLengths(testing.Short()), 64*5, 64*5+1, 100000) {
		for _, frac := range []int{0, 1, 8, 64} {
			tau := lowBitsInput(r, n, frac)
			want := Generic.LowBits(tau, nil)
			for _, room := range []int{0, 1, 63, 64, 65, 200, want - 1, want, want + 1, want + 64, n + 70} {
				if room >= 0 {
					checkLowBits(t, sets, fmt.Sprintf("frac %d/64", frac), tau, room)
				}
			}
		}
	}
	for _, o := range []int{1, 2, 3, 5} {
		buf := lowBitsInput(r, 1000, 4)
		checkLowBits(t, sets, fmt.Sprintf("offset %d", o), buf[o:], 500)
	}
}
