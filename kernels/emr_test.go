package kernels

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// EMRElect against the reference, bit for bit, and the reference against
// its definition (emr.go).

// emrCase is one EMR block with sentinels around its outputs.
type emrCase struct {
	n, N, stride, row int
	taus              []float32
}

const emrSentinel = 0x7fa5a5a5

func newEMRCase(r *rand.Rand, n, N int, gen func() float32) emrCase {
	c := emrCase{n: n, N: N, stride: n + r.IntN(40), row: (n+7)/8 + r.IntN(3)}
	c.taus = make([]float32, (N-1)*c.stride+n+guard)
	for i := range c.taus {
		c.taus[i] = gen()
	}
	return c
}

// run runs set s on the case: the block, and the buffers with their guards.
func (c emrCase) run(s *Set, scratch bool) (*EMRBlock, []float32, []byte, []float64, []uint32) {
	nc := EMRChunks(c.n)
	u := make([]float32, c.n+guard)
	for i := range u {
		u[i] = math.Float32frombits(emrSentinel)
	}
	mask := make([]byte, c.N*c.row+guard)
	for i := range mask {
		mask[i] = 0xa5
	}
	sums := make([]float64, 2*(c.N*nc+guard))
	mins := make([]uint32, 2*(c.N*nc+guard))
	for i := range sums {
		sums[i], mins[i] = math.Float64frombits(0x7ff4badbadbadbad), 0x5a5a5a5a
	}
	h := c.N*nc + guard
	b := &EMRBlock{U: u[:c.n], Taus: c.taus, Stride: c.stride, Tasks: c.N, Mask: mask, Row: c.row,
		ASum: sums[:c.N*nc], BSum: sums[h : h+c.N*nc], AMin: mins[:c.N*nc], BMin: mins[h : h+c.N*nc]}
	if scratch {
		b.Scratch = make([]float32, EMRChunk)
	}
	s.EMRElect(b)
	return b, u, mask, sums, mins
}

func emrCompare(t *testing.T, s *Set, c emrCase, what string) {
	t.Helper()
	_, wu, wm, ws, wn := c.run(Generic, true)
	_, gu, gm, gs, gn := c.run(s, c.n%2 == 0)
	what = fmt.Sprintf("%s %s n=%d N=%d", s.Name, what, c.n, c.N)
	for i := range wu {
		if math.Float32bits(gu[i]) != math.Float32bits(wu[i]) {
			t.Fatalf("%s: U[%d] %#x, want %#x", what, i, math.Float32bits(gu[i]), math.Float32bits(wu[i]))
		}
	}
	for i := range wm {
		if gm[i] != wm[i] {
			t.Fatalf("%s: mask byte %d (row %d) %#x, want %#x", what, i, i/c.row, gm[i], wm[i])
		}
	}
	for i := range ws {
		if math.Float64bits(gs[i]) != math.Float64bits(ws[i]) || gn[i] != wn[i] {
			t.Fatalf("%s: sum %d %v (%#x) min %#x, want %v (%#x) min %#x", what, i, gs[i], math.Float64bits(gs[i]), gn[i], ws[i], math.Float64bits(ws[i]), wn[i])
		}
	}
	for i := c.n; i < len(wu); i++ {
		if math.Float32bits(wu[i]) != emrSentinel {
			t.Fatalf("%s: the reference wrote U[%d]", what, i)
		}
	}
}

var emrLengths = []int{0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 255, 256, 257, 263, 511, 512, 768 + 5, 1024, 2048 + 129}

func TestEMRElectSets(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	gens := map[string]func() float32{
		"random":   func() float32 { return math.Float32frombits(randBits(r)) },
		"normal":   func() float32 { return float32(r.NormFloat64() * 0.01) },
		"specials": func() float32 { return math.Float32frombits(specials[r.IntN(len(specials))]) },
		"wide": func() float32 { // exponents far apart: inexact sums
			return float32(math.Ldexp(r.NormFloat64(), r.IntN(120)-60))
		},
		"ties": func() float32 { return float32(r.IntN(5) - 2) }, // sums at exactly zero, equal magnitudes
	}
	for _, s := range asmSets(t) {
		for name, gen := range gens {
			for N := 1; N <= 5; N++ {
				for _, n := range emrLengths {
					emrCompare(t, s, newEMRCase(r, n, N, gen), name)
				}
			}
			emrCompare(t, s, newEMRCase(r, 3*EMRChunk+17, 9, gen), name)
		}
	}
}

// The reference against the definition, element by element, and its
// sums against an exact sum where EMRExact says they are exact.
func TestEMRElectReference(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	gens := []func() float32{
		func() float32 { return math.Float32frombits(randBits(r)) },
		func() float32 { return float32(math.Ldexp(r.NormFloat64(), r.IntN(60)-30)) },
		func() float32 { return float32(r.NormFloat64() * 0.01) },
	}
	exact := 0
	for _, gen := range gens {
		for N := 1; N <= 5; N++ {
			for _, n := range emrLengths {
				c := newEMRCase(r, n, N, gen)
				b, _, _, _, _ := c.run(Generic, true)
				tau := func(t, e int) float32 { return c.taus[t*c.stride+e] }
				bit := func(t, e int) bool { return b.Mask[t*c.row+e/8]>>(e%8)&1 == 1 }
				for e := range n {
					var s float32
					for t := range N {
						s += tau(t, e)
					}
					g := float32(-1)
					if s > 0 {
						g = 1
					}
					var top float32
					for k := range N {
						agree := tau(k, e)*g > 0
						if bit(k, e) != agree {
							t.Fatalf("n=%d N=%d e=%d task %d: mask bit %v, want %v", n, N, e, k, !agree, agree)
						}
						if agree {
							top = max(top, float32(math.Abs(float64(tau(k, e)))))
						}
					}
					want := top*g + 0
					if math.Float32bits(b.U[e]) != math.Float32bits(want) {
						t.Fatalf("n=%d N=%d e=%d: U %v, want %v", n, N, e, b.U[e], want)
					}
				}
				for k := range N {
					if n%8 != 0 && b.Mask[k*c.row+(n-1)/8]>>(n%8) != 0 {
						t.Fatalf("n=%d task %d: padding bits set", n, k)
					}
				}
				for ci := range EMRChunks(n) {
					lo, hi := ci*EMRChunk, min(n, ci*EMRChunk+EMRChunk)
					for k := range N {
						var a, bs big.Float
						a.SetPrec(2000)
						bs.SetPrec(2000)
						mn, mb := ^uint32(0), ^uint32(0)
						bad := false // a NaN or infinity: no sum is exact
						for e := lo; e < hi; e++ {
							v := math.Float32bits(tau(k, e)) &^ (1 << 31)
							bad = addBig(&a, v) || bad
							mn = min(mn, v-1)
							if bit(k, e) {
								w := math.Float32bits(b.U[e]) &^ (1 << 31)
								bad = addBig(&bs, w) || bad
								mb = min(mb, w-1)
							}
						}
						i := ci*N + k
						if b.AMin[i] != mn || b.BMin[i] != mb {
							t.Fatalf("n=%d N=%d chunk %d task %d: mins %#x %#x, want %#x %#x", n, N, ci, k, b.AMin[i], b.BMin[i], mn, mb)
						}
						for _, p := range []struct {
							got  float64
							min1 uint32
							want *big.Float
						}{{b.ASum[i], mn, &a}, {b.BSum[i], mb, &bs}} {
							if !EMRExact(p.got, p.min1) {
								continue
							}
							if bad && p.want == &a {
								t.Fatalf("n=%d N=%d chunk %d task %d: a non-finite sum said exact", n, N, ci, k)
							}
							exact++
							if w, acc := p.want.Float64(); acc != big.Exact || w != p.got {
								t.Fatalf("n=%d N=%d chunk %d task %d: sum %v said exact, the exact sum is %v", n, N, ci, k, p.got, p.want)
							}
						}
					}
				}
			}
		}
	}
	if exact == 0 {
		t.Fatal("no sum was exact")
	}
}

// addBig adds the float32 magnitude with bits v to a, or reports it is not
// finite.
func addBig(a *big.Float, v uint32) bool {
	f := float64(math.Float32frombits(v))
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return true
	}
	a.Add(a, new(big.Float).SetPrec(2000).SetFloat64(f))
	return false
}

// EMRExact at its edges: a sum below 2^(q+53) passes, one at it does not.
func TestEMRExact(t *testing.T) {
	for _, tc := range []struct {
		sum  float64
		min1 uint32
		want bool
	}{
		{0, ^uint32(0), true},
		{math.Ldexp(1, -97), ^uint32(0), true}, // q = −149 (only zeros)
		{math.Ldexp(1, -96), ^uint32(0), false},
		{math.Nextafter(math.Ldexp(1, 30), 0), 0x3f800000 - 1, true}, // q = −23: below 2^30
		{math.Ldexp(1, 30), 0x3f800000 - 1, false},
		{math.Ldexp(1, -96) * 0.75, 0, true}, // subnormals: q = −149
		{math.Inf(1), 0x3f800000 - 1, false},
		{math.NaN(), 0x3f800000 - 1, false},
	} {
		if got := EMRExact(tc.sum, tc.min1); got != tc.want {
			t.Errorf("EMRExact(%v, %#x) = %v, want %v", tc.sum, tc.min1, got, tc.want)
		}
	}
}

func BenchmarkEMRElect(b *testing.B) {
	const n = 1 << 14
	r := rand.New(rand.NewPCG(1, 1))
	for _, N := range []int{2, 4} {
		taus := make([]float32, N*n)
		for i := range taus {
			taus[i] = float32(r.NormFloat64() * 0.01)
		}
		nc := EMRChunks(n)
		for _, s := range Available() {
			b.Run(fmt.Sprintf("%s/N=%d", s.Name, N), func(b *testing.B) {
				blk := EMRBlock{U: make([]float32, n), Taus: taus, Stride: n, Tasks: N, Mask: make([]byte, N*n/8), Row: n / 8,
					ASum: make([]float64, N*nc), BSum: make([]float64, N*nc), AMin: make([]uint32, N*nc), BMin: make([]uint32, N*nc),
					Scratch: make([]float32, EMRChunk)}
				b.SetBytes(int64(4 * N * n))
				for b.Loop() {
					s.EMRElect(&blk)
				}
			})
		}
	}
}
