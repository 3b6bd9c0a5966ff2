package main

import (
	"bytes"
	"fmt"
	"strings"
)

// DeltaRange kernels: τ = θ − θ₀ as the DeltaTrim kernels compute it (the
// same widening, the same VSUBPS), never stored; its magnitude m is compared
// with the band [lo, hi] (lo ≤ hi) twice: above is m > hi, and ge is m ≥ lo.
// Since hi ≥ lo, above ⊆ ge, and inside = ge ∧ ¬above: the counting variants
// count only the two compares in lane counters (inside = Σge − Σabove), the
// index variants write the inside lanes' indices as the Range kernels do.
// Lane counters are 32 bits: the Go side calls in chunks of asmChunk.
//
// The AVX2 compares are signed; m ≤ 0x7fffffff, so the Go side passes
// lo ≤ 0x7fffffff (a larger lo leaves nothing in or above the band) and hi
// clamped to 0x7fffffff, and the kernels test m > hi and m > lo − 1.
const (
	sigDRCount = "(src *byte, base *float32, n int, lo uint32, hi uint32) (above, inside int)"
	sigDRIdx   = "(src *byte, base *float32, n int, lo uint32, hi uint32, idx *int32, first int) (above, inside int)"
)

var drDTypes = []string{"F32", "F16", "BF16"} // in DType order

func drName(dt string, idx bool, isa string) string {
	if idx {
		return "deltaRangeIdx" + dt + isa
	}
	return "deltaRangeCount" + dt + isa
}

func drDeclare(name, dt string, idx bool, isa string) {
	n, sig := "n", sigDRCount
	if isa == "AVX2" {
		n = "n (a multiple of 8)"
	}
	doc := fmt.Sprintf("%s counts, over %s %s values, the magnitudes of τ = θ − θ₀ above hi and ", name, n, strings.ToLower(dt))
	if idx {
		sig = sigDRIdx
		doc += "writes the indices (counted from first) of those in [lo, hi] to idx."
	} else {
		doc += "those in [lo, hi]."
	}
	if isa == "AVX2" {
		doc += " lo and hi are at most 0x7fffffff."
	}
	declare(name, sig, doc)
}

// drGo writes deltaRangeAVX512 and deltaRangeAVX2, which pick the variant.
func drGo(b *bytes.Buffer) {
	for _, isa := range []string{"AVX512", "AVX2"} {
		fmt.Fprintf(b, "\n// deltaRange%s runs the %s DeltaRange variant for dt, the index one if idx is not nil.\n", isa, isa)
		fmt.Fprintf(b, "func deltaRange%s(dt DType, src *byte, base *float32, n int, lo, hi uint32, idx *int32, first int) (above, inside int) {\n", isa)
		b.WriteString("\tswitch {\n")
		for _, dt := range drDTypes {
			fmt.Fprintf(b, "\tcase dt == %s && idx == nil:\n\t\treturn %s(src, base, n, lo, hi)\n", dt, drName(dt, false, isa))
			fmt.Fprintf(b, "\tcase dt == %s:\n\t\treturn %s(src, base, n, lo, hi, idx, first)\n", dt, drName(dt, true, isa))
		}
		b.WriteString("\t}\n\tpanic(\"unreachable\")\n}\n")
	}
}

// ---------------------------------------------------------------- AVX-512

// drSetup512: SI src, BX base, CX n, Z31 0x7fffffff, Z30 lo, Z28 hi,
// Z27 int 1, Z20..Z23 above lane counters.
func drSetup512(a *asm) {
	a.op("MOVQ src+0(FP), SI")
	a.op("MOVQ base+8(FP), BX")
	a.op("MOVQ n+16(FP), CX")
	broadcast512(a, "lo+24(FP)", 30)
	broadcast512(a, "hi+28(FP)", 28)
	broadcast512(a, "$0x7fffffff", 31)
	broadcast512(a, "$1", 27)
	for z := 20; z < 24; z++ {
		a.op("VPXORD Z%d, Z%d, Z%d", z, z, z)
	}
}

// drMag512 loads vector k (16 elements from SI, BX) and leaves its
// magnitudes in Zk, through K7 if masked (the masked-off lanes are 0).
func drMag512(a *asm, dt string, k int, masked bool) {
	sz := size(dt)
	load512(a, dt, fmt.Sprintf("%d(SI)", 16*sz*k), k, masked)
	if masked {
		a.op("VSUBPS.Z (BX), Z%d, K7, Z%d", k, k)
	} else {
		a.op("VSUBPS %d(BX), Z%d, Z%d", 64*k, k, k)
	}
	a.op("VPANDD Z31, Z%d, Z%d", k, k)
}

// drCmp512 sets Ka to the lanes of Zz above hi and Kg to those ≥ lo (only
// lanes of K7 if masked), and counts the above ones into Z(20+c).
func drCmp512(a *asm, z, ka, kg, c int, masked bool) {
	m := ""
	if masked {
		m = "K7, "
	}
	a.op("VPCMPUD $6, Z28, Z%d, %sK%d", z, m, ka) // m > hi
	a.op("VPCMPUD $5, Z30, Z%d, %sK%d", z, m, kg) // m ≥ lo
	a.op("VPADDD Z27, Z%d, K%d, Z%d", 20+c, ka, 20+c)
}

// dr512Count counts ge lanes into Z16..Z19.
func dr512Count(a *asm, dt string) {
	name := drName(dt, false, "AVX512")
	drDeclare(name, dt, false, "AVX512")
	a.text(name, "$0-48", sigDRCount)
	drSetup512(a)
	loadSetup512(a, dt)
	for z := 16; z < 20; z++ {
		a.op("VPXORD Z%d, Z%d, Z%d", z, z, z)
	}
	body := func(k int, masked bool) {
		ka := 1 + 2*(k%2)
		drMag512(a, dt, k, masked)
		drCmp512(a, k, ka, ka+1, k, masked)
		a.op("VPADDD Z27, Z%d, K%d, Z%d", 16+k, ka+1, 16+k)
	}
	loops512(a, []ptr{{"SI", size(dt)}, {"BX", 4}}, true, body)
	drSum512(a, 20)
	a.op("MOVQ AX, above+32(FP)")
	a.op("MOVQ AX, DX")
	drSum512(a, 16)
	a.op("SUBQ DX, AX")
	a.op("MOVQ AX, inside+40(FP)")
	a.op("VZEROUPPER")
	a.op("RET")
}

// drSum512 adds the lane counters Z(z)..Z(z+3) into AX.
func drSum512(a *asm, z int) {
	a.op("VPADDD Z%d, Z%d, Z%d", z+1, z, z)
	a.op("VPADDD Z%d, Z%d, Z%d", z+3, z+2, z+2)
	a.op("VPADDD Z%d, Z%d, Z%d", z+2, z, z)
	a.op("VEXTRACTI64X4 $1, Z%d, Y0", z)
	a.op("VPADDD Y%d, Y0, Y0", z)
	hsum(a)
}

// dr512Idx writes indices as range512Idx does (Z26 the lanes' indices, Z25
// 16, DI where the next index goes, DX idx); K1..K4 are a step's inside
// masks, K5 and K6 the compares of one vector.
func dr512Idx(a *asm, dt string) {
	name := drName(dt, true, "AVX512")
	drDeclare(name, dt, true, "AVX512")
	a.text(name, "$0-64", sigDRIdx)
	drSetup512(a)
	loadSetup512(a, dt)
	a.op("MOVQ idx+32(FP), DI")
	a.op("MOVQ DI, DX")
	a.op("MOVQ first+40(FP), AX")
	a.op("VPBROADCASTD AX, Z26")
	a.op("VPADDD iota32<>(SB), Z26, Z26")
	a.op("MOVL $16, AX")
	a.op("VPBROADCASTD AX, Z25")
	inside := func(k int, masked bool) {
		k %= 4 // 4: the single vector at SI
		drMag512(a, dt, k, masked)
		drCmp512(a, k, 5, 6, k, masked)
		a.op("KANDNW K6, K5, K%d", k+1) // ≥ lo and not > hi
	}
	idxLoops512(a, []ptr{{"SI", size(dt)}, {"BX", 4}}, true, inside)
	drSum512(a, 20)
	a.op("MOVQ AX, above+48(FP)")
	a.op("SUBQ DX, DI")
	a.op("SHRQ $2, DI")
	a.op("MOVQ DI, inside+56(FP)")
	a.op("VZEROUPPER")
	a.op("RET")
}

// ---------------------------------------------------------------- AVX2

// drSetup2: SI src, R10 base, CX n, Y15 lo − 1, Y14 hi, Y13 0x7fffffff,
// Y8 Y9 above lane counters (subtracting all-ones masks).
func drSetup2(a *asm) {
	a.op("MOVQ src+0(FP), SI")
	a.op("MOVQ base+8(FP), R10")
	a.op("MOVQ n+16(FP), CX")
	a.op("MOVL lo+24(FP), AX")
	a.op("DECL AX")
	a.op("MOVD AX, X15")
	a.op("VPBROADCASTD X15, Y15")
	a.op("MOVL hi+28(FP), AX")
	a.op("MOVD AX, X14")
	a.op("VPBROADCASTD X14, Y14")
	broadcast2(a, "0x7fffffff", 13)
	a.op("VPXOR Y8, Y8, Y8")
	a.op("VPXOR Y9, Y9, Y9")
}

// drVec2 leaves in Yk the all-ones lanes of vector k (8 elements from SI,
// R10) whose magnitude is ≥ lo, counts those above hi (a mask in Y(k+4))
// into Y(8 + k%2), and, if inside, clears the above lanes of Yk.
func drVec2(a *asm, dt string, k int, inside bool) {
	y, t := k, k+4
	load2(a, dt, fmt.Sprintf("%d(SI)", 8*size(dt)*k), y)
	a.op("VSUBPS %d(R10), Y%d, Y%d", 32*k, y, y)
	a.op("VPAND Y13, Y%d, Y%d", y, y)
	a.op("VPCMPGTD Y14, Y%d, Y%d", y, t) // m > hi
	a.op("VPCMPGTD Y15, Y%d, Y%d", y, y) // m > lo − 1
	a.op("VPSUBD Y%d, Y%d, Y%d", t, 8+k%2, 8+k%2)
	if inside {
		a.op("VPANDN Y%d, Y%d, Y%d", y, t, y) // ≥ lo and not > hi
	}
}

// drSum2 adds the lane counters Yy and Y(y+1) into AX.
func drSum2(a *asm, y int) {
	a.op("VPADDD Y%d, Y%d, Y0", y+1, y)
	hsum(a)
}

// dr2Count counts ge lanes into Y10 Y11.
func dr2Count(a *asm, dt string) {
	name := drName(dt, false, "AVX2")
	drDeclare(name, dt, false, "AVX2")
	a.text(name, "$0-48", sigDRCount)
	drSetup2(a)
	a.op("VPXOR Y10, Y10, Y10")
	a.op("VPXOR Y11, Y11, Y11")
	loops2(a, []ptr{{"SI", size(dt)}, {"R10", 4}}, func(k int) {
		drVec2(a, dt, k, false)
		a.op("VPSUBD Y%d, Y%d, Y%d", k, 10+k%2, 10+k%2)
	})
	drSum2(a, 8)
	a.op("MOVQ AX, above+32(FP)")
	a.op("MOVQ AX, DX")
	drSum2(a, 10)
	a.op("SUBQ DX, AX")
	a.op("MOVQ AX, inside+40(FP)")
	a.op("VZEROUPPER")
	a.op("RET")
}

// dr2Idx writes indices as range2Idx does: DI is where the next index goes,
// DX idx, BX the index of the step's first element.
func dr2Idx(a *asm, dt string) {
	name := drName(dt, true, "AVX2")
	drDeclare(name, dt, true, "AVX2")
	a.text(name, "$0-64", sigDRIdx)
	drSetup2(a)
	a.op("MOVQ idx+32(FP), DI")
	a.op("MOVQ DI, DX")
	a.op("MOVQ first+40(FP), BX")
	idxLoops2(a, []ptr{{"SI", size(dt)}, {"R10", 4}, {"BX", 1}}, true, func(k int) {
		drVec2(a, dt, k%4, true)
	})
	drSum2(a, 8)
	a.op("MOVQ AX, above+48(FP)")
	a.op("SUBQ DX, DI")
	a.op("SHRQ $2, DI")
	a.op("MOVQ DI, inside+56(FP)")
	a.op("VZEROUPPER")
	a.op("RET")
}
