package kernels

import (
	"math"

	"github.com/x448/float16"
)

// BF16ToF32 widens exactly; NaN payloads are kept as they are.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 rounds to nearest even. NaN stays NaN with the quiet bit set, and
// subnormals are rounded, not flushed (unlike VCVTNEPS2BF16).
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40
	}
	return uint16((u + 0x7fff + ((u >> 16) & 1)) >> 16)
}

// F16ToF32 widens exactly, as VCVTPH2PS and FCVTL do: NaN gets the quiet bit.
func F16ToF32(h uint16) float32 { return float16.Frombits(h).Float32() }

// F32ToF16 rounds to nearest even, as VCVTPS2PH (imm 0) and FCVTN do:
// overflow gives ±Inf, NaN keeps its top payload bits and gets the quiet bit.
func F32ToF16(f float32) uint16 { return float16.Fromfloat32(f).Bits() }
