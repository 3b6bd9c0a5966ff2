package kernels

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

var long = flag.Bool("long", false, "narrow every float32 pattern through every set (minutes)")

// TestConvertGolden pins the scalar conversions to hand-worked values.
func TestConvertGolden(t *testing.T) {
	for _, c := range []struct {
		h    uint16
		want uint32
	}{
		{0x3c00, 0x3f800000}, // 1
		{0xc000, 0xc0000000}, // -2
		{0x0001, 0x33800000}, // smallest subnormal 2⁻²⁴
		{0x03ff, 0x387fc000}, // largest subnormal
		{0x7bff, 0x477fe000}, // 65504
		{0x7c00, 0x7f800000}, // +Inf
		{0xfc00, 0xff800000}, // -Inf
		{0x7c01, 0x7fc02000}, // signalling NaN: quieted, payload kept
		{0xfe00, 0xffc00000}, // quiet NaN
		{0x8000, 0x80000000}, // -0
	} {
		if got := math.Float32bits(F16ToF32(c.h)); got != c.want {
			t.Errorf("F16ToF32(%#04x) = %#08x, want %#08x", c.h, got, c.want)
		}
	}
	for _, c := range []struct {
		f        uint32
		f16, b16 uint16
	}{
		{0x3f800000, 0x3c00, 0x3f80},
		{0x3f801000, 0x3c00, 0x3f80}, // f16 tie to even (down)
		{0x3f803000, 0x3c02, 0x3f80}, // f16 tie to even (up)
		{0x3f808000, 0x3c04, 0x3f80}, // bf16 tie to even (down)
		{0x3f818000, 0x3c0c, 0x3f82}, // bf16 tie to even (up)
		{0x477ff000, 0x7c00, 0x4780}, // f16 overflow: halfway above 65504 → Inf
		{0x477fefff, 0x7bff, 0x4780},
		{0x33000000, 0x0000, 0x3300}, // 2⁻²⁵: tie between 0 and 2⁻²⁴ → 0
		{0x33000001, 0x0001, 0x3300},
		{0x00000001, 0x0000, 0x0000}, // f32 subnormal: bf16 rounds, not flushed
		{0x00008000, 0x0000, 0x0000}, // tie to even 0
		{0x00018000, 0x0000, 0x0002},
		{0x7f7fffff, 0x7c00, 0x7f80}, // rounds up to Inf in bf16
		{0x7f800001, 0x7e00, 0x7fc0}, // signalling NaN: quiet bit set
		{0xffc12345, 0xfe09, 0xffc1},
		{0x7fbfffff, 0x7fff, 0x7fff},
	} {
		f := math.Float32frombits(c.f)
		if got := F32ToF16(f); got != c.f16 {
			t.Errorf("F32ToF16(%#08x) = %#04x, want %#04x", c.f, got, c.f16)
		}
		if got := F32ToBF16(f); got != c.b16 {
			t.Errorf("F32ToBF16(%#08x) = %#04x, want %#04x", c.f, got, c.b16)
		}
	}
}

// TestWidenExhaustive widens all 65536 f16 and bf16 patterns through every
// set: for the assembly sets this holds the hardware conversion (VCVTPH2PS,
// FCVTL) to the reference, x448/float16.
func TestWidenExhaustive(t *testing.T) {
	src := make([]byte, 2<<16)
	for i := 0; i < 1<<16; i++ {
		binary.LittleEndian.PutUint16(src[2*i:], uint16(i))
	}
	for _, dt := range []DType{F16, BF16} {
		want := make([]float32, 1<<16)
		for i := range want {
			if dt == F16 {
				want[i] = F16ToF32(uint16(i))
			} else {
				want[i] = BF16ToF32(uint16(i))
			}
		}
		for _, s := range Available() {
			got := make([]float32, 1<<16)
			s.Widen(got, src, dt)
			sameFloats(t, fmt.Sprintf("%s Widen %v all patterns", s.Name, dt), got, want)
		}
	}
}

// narrowSample returns float32 patterns that probe every rounding boundary:
// every top 16 bits with low halves at the bf16 and f16 rounding points and
// their neighbours, plus random low bits.
func narrowSample() []uint32 {
	r := rand.New(rand.NewPCG(13, 14))
	lows := []uint32{0, 1, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000, 0x7fff, 0x8000, 0x8001, 0xffff}
	xs := make([]uint32, 0, 65536*(len(lows)+2))
	for hi := uint32(0); hi < 1<<16; hi++ {
		for _, lo := range lows {
			xs = append(xs, hi<<16|lo)
		}
		xs = append(xs, hi<<16|r.Uint32()&0xffff, hi<<16|r.Uint32()&0x1fff)
	}
	// f16 subnormal outputs round at bit 13+k: probe their halfway points.
	for e := uint32(100); e < 113; e++ {
		for k := uint32(0); k < 24; k++ {
			half := uint32(1) << k
			for _, d := range []uint32{half - 1, half, half + 1, 3 * half} {
				xs = append(xs, e<<23|d&0x7fffff, 0x80000000|e<<23|d&0x7fffff)
			}
		}
	}
	return xs
}

// TestNarrowDense narrows the sample to f16 and bf16 through Finish with
// θ₀ = x, τₘ = −0, λ = 1, so the value rounded is x itself (a signalling NaN
// is quieted by the addition first, in every set: the kernels never narrow
// an unquieted NaN). For the assembly sets this holds VCVTPS2PH (FCVTN) and
// the integer bf16 rounding to the reference.
func TestNarrowDense(t *testing.T) {
	narrow(t, narrowSample())
}

// TestNarrowAll narrows every float32 pattern (with -long).
func TestNarrowAll(t *testing.T) {
	if !*long {
		t.Skip("needs -long")
	}
	const chunk = 1 << 22
	xs := make([]uint32, chunk)
	for start := uint64(0); start < 1<<32; start += chunk {
		for i := range xs {
			xs[i] = uint32(start) + uint32(i)
		}
		narrow(t, xs)
		if t.Failed() {
			return
		}
	}
}

func narrow(t *testing.T, xs []uint32) {
	n := len(xs)
	base := make([]float32, n)
	for i, x := range xs {
		base[i] = math.Float32frombits(x)
	}
	tm := make([]float32, n)
	for i := range tm {
		tm[i] = float32(math.Copysign(0, -1))
	}
	for _, dt := range []DType{F16, BF16} {
		want := make([]byte, 2*n)
		for i, x := range xs {
			f := math.Float32frombits(x)
			if f != f {
				f = math.Float32frombits(x | 0x00400000) // quieted, as the addition does
			}
			if dt == F16 {
				binary.LittleEndian.PutUint16(want[2*i:], F32ToF16(f))
			} else {
				binary.LittleEndian.PutUint16(want[2*i:], F32ToBF16(f))
			}
		}
		for _, s := range Available() {
			got := make([]byte, 2*n)
			s.Finish(got, dt, base, tm, 1)
			for i := 0; i < n; i++ {
				if got[2*i] != want[2*i] || got[2*i+1] != want[2*i+1] {
					t.Fatalf("%s narrow %v: %#08x → %#04x, want %#04x", s.Name, dt, xs[i],
						binary.LittleEndian.Uint16(got[2*i:]), binary.LittleEndian.Uint16(want[2*i:]))
				}
			}
		}
	}
}
