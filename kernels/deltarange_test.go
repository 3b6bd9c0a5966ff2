package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// naiveDeltaRange is DeltaRange the plain way: τ through DeltaTrim with no
// trim, then the counts and indices of naiveRange.
func naiveDeltaRange(src []byte, dt DType, base []float32, lo, hi uint32) (above int, in []int32) {
	tau := make([]float32, len(base))
	deltaTrimGeneric(tau, src, dt, base, 0)
	for _, v := range tau {
		if AbsBits(v) > hi {
			above++
		}
	}
	return above, naiveRange(tau, lo, hi)
}

func TestDeltaRangeGolden(t *testing.T) {
	src := make([]byte, 8)
	for i, v := range []float32{1.5, 2, -3, 0.25} {
		binary.LittleEndian.PutUint16(src[2*i:], F32ToBF16(v))
	}
	base := []float32{1, 2, -1, 0.5} // τ = [0.5, 0, -2, -0.25]
	cases := []struct {
		lo, hi        float32
		above, inside int
		idx           []int32
	}{
		{0.25, 0.5, 1, 2, []int32{0, 3}},
		{0.5, 0.5, 1, 1, []int32{0}},
		{0, 0, 3, 1, []int32{1}},
		{0, 2, 0, 4, []int32{0, 1, 2, 3}},
		{3, 4, 0, 0, nil},
		{0.3, 0.4, 2, 0, nil},
	}
	for _, s := range Available() {
		for _, c := range cases {
			lo, hi := math.Float32bits(c.lo), math.Float32bits(c.hi)
			idx := make([]int32, 4)
			above, inside := s.DeltaRange(src, BF16, base, lo, hi, idx)
			above2, inside2 := s.DeltaRange(src, BF16, base, lo, hi, nil)
			if above != c.above || inside != c.inside || !slices.Equal(idx[:inside], c.idx) || above2 != above || inside2 != inside {
				t.Errorf("%s [%v, %v]: above %d inside %d %v (without indices %d %d), want %d %d %v",
					s.Name, c.lo, c.hi, above, inside, idx[:inside], above2, inside2, c.above, c.inside, c.idx)
			}
		}
	}
}

func TestDeltaRangeMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	for _, dt := range dtypes {
		for _, n := range lengths(testing.Short()) {
			off := r.IntN(8)
			src := randStored(r, dt, n, off)
			base := randFloats(r, n+off)[off:]
			if n%5 == 0 { // many exact ties: small integers on both sides
				for i := range base {
					base[i] = float32(r.IntN(5) - 2)
					v := base[i] + float32(r.IntN(5)-2)
					switch dt {
					case F32:
						binary.LittleEndian.PutUint32(src[4*i:], math.Float32bits(v))
					case F16:
						binary.LittleEndian.PutUint16(src[2*i:], F32ToF16(v))
					default:
						binary.LittleEndian.PutUint16(src[2*i:], F32ToBF16(v))
					}
				}
			}
			tau := make([]float32, n)
			deltaTrimGeneric(tau, src, dt, base, 0)
			for _, lh := range rangeBounds(r, tau) {
				lo, hi := lh[0], lh[1]
				if lo > hi {
					continue
				}
				wantAbove, want := naiveDeltaRange(src, dt, base, lo, hi)
				for _, s := range Available() {
					what := fmt.Sprintf("%s DeltaRange %v n=%d [%#x, %#x]", s.Name, dt, n, lo, hi)
					if above, inside := s.DeltaRange(src, dt, base, lo, hi, nil); above != wantAbove || inside != len(want) {
						t.Fatalf("%s without indices: above %d inside %d, want %d %d", what, above, inside, wantAbove, len(want))
					}
					buf := make([]int32, n+guard)
					for i := range buf {
						buf[i] = -7
					}
					above, inside := s.DeltaRange(src, dt, base, lo, hi, buf[:n])
					if above != wantAbove || inside != len(want) || !slices.Equal(buf[:inside], want) {
						t.Fatalf("%s: above %d, indices %v, want %d %v", what, above, buf[:min(inside, n)], wantAbove, want)
					}
					for i := n; i < len(buf); i++ {
						if buf[i] != -7 {
							t.Fatalf("%s: wrote past len(base) at %d", what, i)
						}
					}
				}
			}
		}
	}
}

// FuzzDeltaRange takes the dtype and band from k and w, then from data the
// stored model followed by the float32 base.
func FuzzDeltaRange(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, k uint8, w uint32) {
		dt := DType(k % 3)
		n := len(data) / (dt.Size() + 4)
		src, base := data[:n*dt.Size()], floatsOf(data[n*dt.Size():])[:n]
		lo, hi := w&0x7fffffff, w&0x7fffffff|uint32(k)<<(k%23)
		if k&1 != 0 && n > 0 {
			lo = AbsBits(dt.At(src, int(w%uint32(n))) - base[w%uint32(n)])
			hi = lo
		}
		if lo > hi {
			lo, hi = hi, lo
		}
		want := make([]int32, n)
		wantAbove, wantIn := Generic.DeltaRange(src, dt, base, lo, hi, want)
		for _, s := range asmSets(t) {
			what := fmt.Sprintf("%s DeltaRange %v n=%d [%#x, %#x]", s.Name, dt, n, lo, hi)
			if above, inside := s.DeltaRange(src, dt, base, lo, hi, nil); above != wantAbove || inside != wantIn {
				t.Fatalf("%s without indices: above %d inside %d, want %d %d", what, above, inside, wantAbove, wantIn)
			}
			idx := make([]int32, n+guard)
			for i := range idx {
				idx[i] = -7
			}
			above, inside := s.DeltaRange(src, dt, base, lo, hi, idx[:n])
			if above != wantAbove || inside != wantIn || !slices.Equal(idx[:inside], want[:wantIn]) {
				t.Fatalf("%s: above %d indices %v, want %d %v", what, above, idx[:min(inside, n)], wantAbove, want[:wantIn])
			}
			for i := n; i < len(idx); i++ {
				if idx[i] != -7 {
					t.Fatalf("%s: wrote past len(base) at %d", what, i)
				}
			}
		}
	})
}
