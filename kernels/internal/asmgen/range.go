package main

import "fmt"

// Range kernels. The Go side turns [lo, hi] into lo and width = hi − lo
// (lo ≤ hi), so a magnitude m is in range when m − lo ≤ width, unsigned.
// Matches are rare, so the index variants test a whole unrolled step for
// any match first and write indices only for the vectors that have one.
const (
	sigRangeCount = "(tau *float32, n int, lo uint32, width uint32) (count int)"
	sigRangeIdx   = "(tau *float32, n int, lo uint32, width uint32, idx *int32) (count int)"
)

// iotaData defines iota32<>, the int32 lane numbers 0..15.
func iotaData(a *asm) {
	for i := 0; i < 16; i++ {
		a.b.WriteString(fmt.Sprintf("DATA iota32<>+%d(SB)/4, $%d\n", 4*i, i))
	}
	a.b.WriteString("GLOBL iota32<>(SB), RODATA|NOPTR, $64\n")
	// VPERMW tables for bf16: widen puts word i in the high half of dword i
	// (index 16 picks a word of the zero upper half); pack takes them back.
	for i := 0; i < 32; i++ {
		w, p := 16, 0
		if i%2 == 1 {
			w = i / 2
		}
		if i < 16 {
			p = 2*i + 1
		}
		a.b.WriteString(fmt.Sprintf("DATA bf16widen<>+%d(SB)/2, $%d\n", 2*i, w))
		a.b.WriteString(fmt.Sprintf("DATA bf16pack<>+%d(SB)/2, $%d\n", 2*i, p))
	}
	a.b.WriteString("GLOBL bf16widen<>(SB), RODATA|NOPTR, $64\n")
	a.b.WriteString("GLOBL bf16pack<>(SB), RODATA|NOPTR, $64\n")
	a.b.WriteString("DATA bf16lsb<>+0(SB)/4, $0x10000\n")
	a.b.WriteString("GLOBL bf16lsb<>(SB), RODATA|NOPTR, $4\n")
	a.b.WriteString("DATA bf16quiet<>+0(SB)/4, $0x400000\n")
	a.b.WriteString("GLOBL bf16quiet<>(SB), RODATA|NOPTR, $4\n")
}

// rangeSetup512: SI tau, CX n, Z30 lo, Z29 width, Z28 0x7fffffff.
func rangeSetup512(a *asm) {
	a.op("MOVQ tau+0(FP), SI")
	a.op("MOVQ n+8(FP), CX")
	a.op("MOVL lo+16(FP), AX")
	a.op("VPBROADCASTD AX, Z30")
	a.op("MOVL width+20(FP), AX")
	a.op("VPBROADCASTD AX, Z29")
	a.op("MOVL $0x7fffffff, AX")
	a.op("VPBROADCASTD AX, Z28")
}

// inRange512 sets Kk to the lanes of the 16 values at mem (through K7 if
// masked) whose magnitude is in range; clobbers Zz.
func inRange512(a *asm, mem string, z, k int, masked bool) {
	if masked {
		a.op("VMOVDQU32.Z %s, K7, Z%d", mem, z)
		a.op("VPANDD Z28, Z%d, Z%d", z, z)
	} else {
		a.op("VPANDD %s, Z28, Z%d", mem, z)
	}
	a.op("VPSUBD Z30, Z%d, Z%d", z, z)
	if masked {
		a.op("VPCMPUD $2, Z29, Z%d, K7, K%d", z, k) // m − lo ≤ width
	} else {
		a.op("VPCMPUD $2, Z29, Z%d, K%d", z, k)
	}
}

// range512Count counts into lane counters Z20..Z23 (Z27 = int 1).
func range512Count(a *asm) {
	name := "rangeCountAVX512"
	declare(name, sigRangeCount, name+" counts the n values at tau whose magnitude minus lo is at most width.")
	a.text(name, "$0-32", sigRangeCount)
	rangeSetup512(a)
	a.op("MOVL $1, AX")
	a.op("VPBROADCASTD AX, Z27")
	for z := 20; z < 24; z++ {
		a.op("VPXORD Z%d, Z%d, Z%d", z, z, z)
	}
	a.label("loop64")
	a.op("CMPQ CX, $64")
	a.op("JB loop16")
	for k := 0; k < 4; k++ {
		inRange512(a, fmt.Sprintf("%d(SI)", 64*k), k, k+1, false)
		a.op("VPADDD Z27, Z%d, K%d, Z%d", 20+k, k+1, 20+k)
	}
	a.op("ADDQ $256, SI")
	a.op("SUBQ $64, CX")
	a.op("JMP loop64")
	a.label("loop16")
	a.op("CMPQ CX, $16")
	a.op("JB tail")
	inRange512(a, "(SI)", 0, 1, false)
	a.op("VPADDD Z27, Z20, K1, Z20")
	a.op("ADDQ $64, SI")
	a.op("SUBQ $16, CX")
	a.op("JMP loop16")
	a.label("tail")
	a.op("TESTQ CX, CX")
	a.op("JZ done")
	tailMask512(a)
	inRange512(a, "(SI)", 0, 1, true)
	a.op("VPADDD Z27, Z20, K1, Z20")
	a.label("done")
	a.op("VPADDD Z21, Z20, Z20")
	a.op("VPADDD Z23, Z22, Z22")
	a.op("VPADDD Z22, Z20, Z20")
	a.op("VEXTRACTI64X4 $1, Z20, Y0")
	a.op("VPADDD Y20, Y0, Y0")
	hsum(a)
	a.op("MOVQ AX, count+24(FP)")
	a.op("VZEROUPPER")
	a.op("RET")
}

// range512Idx writes indices with VPCOMPRESSD: Z26 holds the lanes' indices,
// Z25 16; DI is where the next index goes. A full vector's compressed
// indices are stored whole: the write ends at most 15 past the count, which
// is within idx[:n] since at most the vector's own elements precede it.
func range512Idx(a *asm) {
	name := "rangeIdxAVX512"
	declare(name, sigRangeIdx, name+" writes the indices of the n values at tau whose magnitude minus lo is at most width to idx.")
	a.text(name, "$0-40", sigRangeIdx)
	rangeSetup512(a)
	a.op("MOVQ idx+24(FP), DI")
	a.op("MOVQ DI, DX")
	a.op("VMOVDQU32 iota32<>(SB), Z26")
	a.op("MOVL $16, AX")
	a.op("VPBROADCASTD AX, Z25")
	idxLoops512(a, []ptr{{"SI", 4}}, false, func(k int, masked bool) {
		if k < 4 {
			inRange512(a, fmt.Sprintf("%d(SI)", 64*k), k, k+1, masked)
		} else {
			inRange512(a, "(SI)", 0, 1, masked)
		}
	})
	a.op("SUBQ DX, DI")
	a.op("SHRQ $2, DI")
	a.op("MOVQ DI, count+32(FP)")
	a.op("VZEROUPPER")
	a.op("RET")
}

// inRange2 sets Yy to all ones in the lanes of the 8 values at mem whose
// magnitude is in range (Y15 lo, Y14 width, Y13 0x7fffffff); clobbers Yt.
// AVX2 has no unsigned compare: x ≤ width is min(x, width) = x.
func inRange2(a *asm, mem string, y, t int) {
	a.op("VPAND %s, Y13, Y%d", mem, y)
	a.op("VPSUBD Y15, Y%d, Y%d", y, y)
	a.op("VPMINUD Y14, Y%d, Y%d", y, t)
	a.op("VPCMPEQD Y%d, Y%d, Y%d", t, y, y)
}

func rangeSetup2(a *asm) {
	a.op("MOVQ tau+0(FP), SI")
	a.op("MOVQ n+8(FP), CX")
	a.op("MOVL lo+16(FP), AX")
	a.op("MOVD AX, X15")
	a.op("VPBROADCASTD X15, Y15")
	a.op("MOVL width+20(FP), AX")
	a.op("MOVD AX, X14")
	a.op("VPBROADCASTD X14, Y14")
	broadcast2(a, "0x7fffffff", 13)
}

func range2Count(a *asm) {
	name := "rangeCountAVX2"
	declare(name, sigRangeCount, name+" counts the n (a multiple of 8) values at tau whose magnitude minus lo is at most width.")
	a.text(name, "$0-32", sigRangeCount)
	rangeSetup2(a)
	for y := 8; y < 12; y++ {
		a.op("VPXOR Y%d, Y%d, Y%d", y, y, y)
	}
	loops2(a, []ptr{{"SI", 4}}, func(k int) {
		inRange2(a, fmt.Sprintf("%d(SI)", 32*k), k, k+4)
		a.op("VPSUBD Y%d, Y%d, Y%d", k, 8+k, 8+k)
	})
	a.op("VPADDD Y9, Y8, Y8")
	a.op("VPADDD Y11, Y10, Y10")
	a.op("VPADDD Y10, Y8, Y0")
	hsum(a)
	a.op("MOVQ AX, count+24(FP)")
	a.op("VZEROUPPER")
	a.op("RET")
}

// range2Idx: DI is where the next index goes, BX the index of the step's
// first element.
func range2Idx(a *asm) {
	name := "rangeIdxAVX2"
	declare(name, sigRangeIdx, name+" writes the indices of the n (a multiple of 8) values at tau whose magnitude minus lo is at most width to idx.")
	a.text(name, "$0-40", sigRangeIdx)
	rangeSetup2(a)
	a.op("MOVQ idx+24(FP), DI")
	a.op("MOVQ DI, DX")
	a.op("XORQ BX, BX")
	idxLoops2(a, []ptr{{"SI", 4}, {"BX", 1}}, false, func(k int) {
		if k < 4 {
			inRange2(a, fmt.Sprintf("%d(SI)", 32*k), k, k+4)
		} else {
			inRange2(a, "(SI)", 0, 4)
		}
	})
	a.op("SUBQ DX, DI")
	a.op("SHRQ $2, DI")
	a.op("MOVQ DI, count+32(FP)")
	a.op("VZEROUPPER")
	a.op("RET")
}

// bitIndices2 writes to DI on the indices of the set bits of AX, for the
// vector at element BX + first (label suffix k); it clobbers R8.
func bitIndices2(a *asm, k, first int) {
	a.op("TESTL AX, AX")
	a.op("JZ skip%d", k)
	a.label(fmt.Sprintf("bits%d", k))
	a.op("TZCNTL AX, R8")
	a.op("LEAL %d(BX)(R8*1), R8", first)
	a.op("MOVL R8, (DI)")
	a.op("ADDQ $4, DI")
	a.op("BLSRL AX, AX")
	a.op("JNZ bits%d", k)
	a.label(fmt.Sprintf("skip%d", k))
}

// compressIndices512 writes to DI on the indices (in Z26) of the lanes of
// mask Kk, then steps Z26 by Z25 to the next vector (label lbl skips the
// write); it clobbers Z5 and AX.
func compressIndices512(a *asm, k int, lbl string) {
	a.op("KORTESTW K%d, K%d", k, k)
	a.op("JZ %s", lbl)
	a.op("VPCOMPRESSD Z26, K%d, Z5", k)
	a.op("VMOVDQU32 Z5, (DI)")
	a.op("KMOVW K%d, AX", k)
	a.op("POPCNTL AX, AX")
	a.op("LEAQ (DI)(AX*4), DI")
	a.label(lbl)
	a.op("VPADDD Z25, Z26, Z26")
}

// idxLoops2 writes to DI the indices of the lanes vec(k) sets in Yk, over
// CX elements: four vectors a step (vec(0..3)), skipped at once where none
// is set, then one (vec(4) into Y0), advancing each pointer by its element
// size (BX: the step's first index); with pf, the first pointer's stream is
// prefetched.
func idxLoops2(a *asm, adv []ptr, pf bool, vec func(k int)) {
	a.label("loop32")
	a.op("CMPQ CX, $32")
	a.op("JB loop8")
	if pf {
		prefetch(a, adv[0].r, 32*adv[0].sz)
	}
	for k := 0; k < 4; k++ {
		vec(k)
	}
	a.op("VPOR Y1, Y0, Y4")
	a.op("VPOR Y3, Y2, Y5")
	a.op("VPOR Y5, Y4, Y4")
	a.op("VPTEST Y4, Y4")
	a.op("JNZ some32")
	a.label("next32")
	nextStep(a, adv, 32, "loop32")
	a.label("some32")
	for k := 0; k < 4; k++ {
		a.op("VMOVMSKPS Y%d, AX", k)
		bitIndices2(a, k, 8*k)
	}
	a.op("JMP next32")
	a.label("loop8")
	a.op("TESTQ CX, CX")
	a.op("JZ done")
	vec(4)
	a.op("VMOVMSKPS Y0, AX")
	bitIndices2(a, 4, 0)
	nextStep(a, adv, 8, "loop8")
	a.label("done")
}

// idxLoops512 writes to DI the indices (Z26, stepped by Z25 = 16) of the
// lanes vec(k, masked) sets in K(k+1), over CX elements: four vectors a step
// (vec(0..3)), skipped at once where none is set, then one (vec(4) into K1),
// then the last few masked (K7), advancing each pointer by its element
// size; with pf, the first pointer's stream is prefetched. It ends at label
// done.
func idxLoops512(a *asm, adv []ptr, pf bool, vec func(k int, masked bool)) {
	a.label("loop64")
	a.op("CMPQ CX, $64")
	a.op("JB loop16")
	if pf {
		prefetch(a, adv[0].r, 64*adv[0].sz)
	}
	for k := 0; k < 4; k++ {
		vec(k, false)
	}
	a.op("KORW K1, K2, K5")
	a.op("KORW K3, K4, K6")
	a.op("KORTESTW K5, K6")
	a.op("JNZ some64")
	a.op("VPSLLD $2, Z25, Z0") // 64
	a.op("VPADDD Z0, Z26, Z26")
	a.label("next64")
	nextStep(a, adv, 64, "loop64")
	a.label("some64")
	for k := 0; k < 4; k++ {
		compressIndices512(a, k+1, fmt.Sprintf("skip%d", k))
	}
	a.op("JMP next64")
	a.label("loop16")
	a.op("CMPQ CX, $16")
	a.op("JB tail")
	vec(4, false)
	compressIndices512(a, 1, "skip16")
	nextStep(a, adv, 16, "loop16")
	a.label("tail")
	a.op("TESTQ CX, CX")
	a.op("JZ done")
	tailMask512(a)
	vec(4, true)
	a.op("VPCOMPRESSD Z26, K1, (DI)") // writes only the matches
	a.op("KMOVW K1, AX")
	a.op("POPCNTL AX, AX")
	a.op("LEAQ (DI)(AX*4), DI")
	a.label("done")
}
