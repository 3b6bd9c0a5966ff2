package main

import "fmt"

// NEON statistics kernels over whole chunks, as the amd64 ones (stats.go).
// A chunk's four partial sums are two registers of two float64: V12 (or
// V14) holds s0, s1, fed by FCVTL from the low two of each group of four
// float32, V13 (V15) s2, s3, fed by FCVTL2; the chunk's sum is FADDP of
// each, then one FADD. Mask bits: each compare of four lanes is ANDed with
// the weights of its place in a half word (V16..V23: lane j of group q has
// bit 4q + j) and ORed into V24 or V25; ADDV of those (disjoint bits) is
// the half word. Counts are lane counters (minus one per all-ones mask), so
// calls stay below 2³² elements.

func fcvtl2d(d, n int) { word(0x0e617800|uint32(n)<<5|uint32(d), "FCVTL V%d.2D, V%d.2S", d, n) }
func fcvtl22d(d, n int) {
	word(0x4e617800|uint32(n)<<5|uint32(d), "FCVTL2 V%d.2D, V%d.4S", d, n)
}
func fadd2d(d, n, m int) {
	word(0x4e60d400|uint32(m)<<16|uint32(n)<<5|uint32(d), "FADD V%d.2D, V%d.2D, V%d.2D", d, n, m)
}
func fmul2d(d, n, m int) {
	word(0x6e60dc00|uint32(m)<<16|uint32(n)<<5|uint32(d), "FMUL V%d.2D, V%d.2D, V%d.2D", d, n, m)
}
func fabs2d(d, n int) { word(0x4ee0f800|uint32(n)<<5|uint32(d), "FABS V%d.2D, V%d.2D", d, n) }

// faddpd: Dd = Vn[0] + Vn[1]; faddd: Dd = Dn + Dm.
func faddpd(d, n int) { word(0x7e70d800|uint32(n)<<5|uint32(d), "FADDP D%d, V%d.2D", d, n) }
func faddd(d, n, m int) {
	word(0x1e602800|uint32(m)<<16|uint32(n)<<5|uint32(d), "FADD D%d, D%d, D%d", d, n, m)
}

// Integer compares with zero, signed.
func cmgtz(d, n int) { two(0x4ea08800, "CMGT", ", #0", d, n) }
func cmltz(d, n int) { two(0x4ea0a800, "CMLT", ", #0", d, n) }

func veor(d, n, m int) { p("VEOR V%d.B16, V%d.B16, V%d.B16", m, n, d) }

const sigStatsNEON = "(tau *float32, chunks int, l1 *float64, sq *float64, pos *uint64, neg *uint64) (nonzero int)"

// statsWeights fills V16..V23 with the mask-bit weights.
func statsWeights() {
	for q := 0; q < 8; q++ {
		for j := 0; j < 4; j++ {
			p("MOVW $0x%x, R10", uint32(1)<<(4*q+j))
			p("VMOV R10, V%d.S[%d]", 16+q, j)
		}
	}
}

// statsChunkSum writes (s0 + s1) + (s2 + s3) of V(v), V(v+1) with a
// post-increment store through reg, and zeroes them.
func statsChunkSum(v int, reg string) {
	faddpd(28, v)
	faddpd(29, v+1)
	faddd(28, 28, 29)
	p("FMOVD.P F28, 8(%s)", reg)
	vzero(v)
	vzero(v + 1)
}

// statsHalves runs half(h, v, q) for each of the 16 vectors of a word
// (elements 4·(8h + q) ..., in V(v)), loaded 16 elements at a time from
// R0 (and R1 when two), and after each half moves the ADDV of V24 and V25
// into R5 and R6 (low half) or ORs them in at bit 32, and zeroes them.
func statsHalves(loadB bool, half func(h, q, v int)) {
	for h := 0; h < 2; h++ {
		for l := 0; l < 2; l++ {
			p("VLD1.P 64(R0), %s", regs(0, 4, "S4"))
			if loadB {
				p("VLD1.P 64(R1), %s", regs(4, 4, "S4"))
			}
			for v := 0; v < 4; v++ {
				half(h, 4*l+v, v)
			}
		}
		if loadB {
			continue
		}
		for k, r := range []string{"R7", "R8"} {
			acc := 24 + k
			p("VADDV V%d.S4, V%d", acc, acc)
			p("VMOV V%d.S[0], %s", acc, r)
			vzero(acc)
		}
		if h == 0 {
			p("MOVD R7, R5")
			p("MOVD R8, R6")
		} else {
			p("ORR R7<<32, R5, R5")
			p("ORR R8<<32, R6, R6")
		}
	}
}

// genNorms: R0 tau, R2 l1, R3 sq, R4 chunks, R10 pos, R11 neg, R9 words
// left; V26 0x80000000, V27 the nonzero counter.
func genNorms() {
	name := "normsNEON"
	neonText(name, sigStatsNEON, "$0-56")
	p("MOVD tau+0(FP), R0")
	p("MOVD chunks+8(FP), R4")
	p("MOVD l1+16(FP), R2")
	p("MOVD sq+24(FP), R3")
	statsWeights()
	vdupc(26, 0x80000000) // before R10 holds pos: vdupc uses it
	p("MOVD pos+32(FP), R10")
	p("MOVD neg+40(FP), R11")
	for _, v := range []int{12, 13, 14, 15, 24, 25, 27} {
		vzero(v)
	}
	label("norms_chunk")
	p("MOVD $%d, R9", chunkWords)
	label("norms_word")
	statsHalves(false, func(_, q, v int) {
		cmgtz(8, v) // > 0: positive
		veor(9, v, 26)
		cmgtz(9, 9) // > 0x80000000: negative
		vorr(10, 8, 9)
		vsub(27, 27, 10)
		vand(8, 8, 16+q)
		vorr(24, 24, 8)
		vand(9, 9, 16+q)
		vorr(25, 25, 9)
		fcvtl2d(10, v)
		fcvtl22d(11, v)
		fabs2d(28, 10)
		fadd2d(12, 12, 28)
		fabs2d(29, 11)
		fadd2d(13, 13, 29)
		fmul2d(28, 10, 10)
		fadd2d(14, 14, 28)
		fmul2d(29, 11, 11)
		fadd2d(15, 15, 29)
	})
	for k, r := range []string{"R10", "R11"} {
		p("MOVD (%s), R7", r)
		p("ORR R%d, R7, R7", 5+k)
		p("MOVD.P R7, 8(%s)", r)
	}
	p("SUBS $1, R9, R9")
	p("BNE norms_word")
	statsChunkSum(12, "R2")
	statsChunkSum(14, "R3")
	p("SUBS $1, R4, R4")
	p("BNE norms_chunk")
	addv(27, "nonzero+48(FP)")
	p("RET")
}

// genDot: R0 a, R1 b, R4 chunks, R2 dot, R9 groups of 64 left.
func genDot() {
	name := "dotNEON"
	neonText(name, "(a *float32, b *float32, chunks int, dot *float64)", "$0-32")
	p("MOVD a+0(FP), R0")
	p("MOVD b+8(FP), R1")
	p("MOVD chunks+16(FP), R4")
	p("MOVD dot+24(FP), R2")
	vzero(12)
	vzero(13)
	label("dot_chunk")
	p("MOVD $%d, R9", chunkElems/64)
	label("dot_group")
	statsHalves(true, func(_, _, v int) {
		fcvtl2d(8, v)
		fcvtl22d(9, v)
		fcvtl2d(10, 4+v)
		fcvtl22d(11, 4+v)
		fmul2d(8, 8, 10)
		fmul2d(9, 9, 11)
		fadd2d(12, 12, 8)
		fadd2d(13, 13, 9)
	})
	p("SUBS $1, R9, R9")
	p("BNE dot_group")
	statsChunkSum(12, "R2")
	p("SUBS $1, R4, R4")
	p("BNE dot_chunk")
	p("RET")
}

// genTrimWords: R0 tau, R4 chunks, R10 kept, R11 sign, R2 removed, R9
// words left; V26 0x7fffffff, V30 gt, V27 the kept counter.
func genTrimWords() {
	name := "trimWordsNEON"
	neonText(name, "(tau *float32, chunks int, gt uint32, kept *uint64, sign *uint64, removed *float64) (count int)", "$0-56")
	p("MOVD tau+0(FP), R0")
	p("MOVD chunks+8(FP), R4")
	p("MOVWU gt+16(FP), R5")
	p("VDUP R5, V30.S4")
	statsWeights()
	vdupc(26, 0x7fffffff) // before R10 holds kept: vdupc uses it
	p("MOVD kept+24(FP), R10")
	p("MOVD sign+32(FP), R11")
	p("MOVD removed+40(FP), R2")
	for _, v := range []int{12, 13, 24, 25, 27} {
		vzero(v)
	}
	label("trim_chunk")
	p("MOVD $%d, R9", chunkWords)
	label("trim_word")
	statsHalves(false, func(_, q, v int) {
		vand(8, v, 26)  // a
		cmhi(9, 8, 30)  // a > gt: kept
		cmltz(10, v)    // the sign bit
		vand(10, 10, 9) // of the kept
		vsub(27, 27, 9)
		cmhs(11, 30, 8) // a ≤ gt: removed
		vand(11, 11, 8)
		vand(9, 9, 16+q)
		vorr(24, 24, 9)
		vand(10, 10, 16+q)
		vorr(25, 25, 10)
		fcvtl2d(28, 11)
		fcvtl22d(29, 11)
		fadd2d(12, 12, 28)
		fadd2d(13, 13, 29)
	})
	p("MOVD.P R5, 8(R10)")
	p("MOVD.P R6, 8(R11)")
	p("SUBS $1, R9, R9")
	p("BNE trim_word")
	statsChunkSum(12, "R2")
	p("SUBS $1, R4, R4")
	p("BNE trim_chunk")
	addv(27, "count+48(FP)")
	p("RET")
}

func genStatsNEON() {
	comment(fmt.Sprintf("Statistics kernels: whole chunks of %d elements.", chunkElems))
	genNorms()
	genDot()
	genTrimWords()
	genLowBits()
}

// genLowBits lists as genRange does: a group of 16 with any magnitude
// whose low bits are set writes every lane's magnitude at the list's next
// entry and advances it by the lane's match bit, once 16 entries fit.
//
//	R0 tau, R1 groups left, R3 the next entry, R4 the list's end, R5
//	done, R8 the list; V0..V3 magnitudes, V4..V7 matches, V25 0xffff,
//	V26 0x7fffffff.
func genLowBits() {
	name := "lowBitsNEON"
	neonText(name, "(tau *float32, n int, list *uint32, room int) (done, count int)", "$0-48")
	vdupc(26, 0x7fffffff)
	vdupc(25, 0xffff)
	p("MOVD tau+0(FP), R0")
	p("MOVD n+8(FP), R1")
	p("LSR $4, R1, R1")
	p("MOVD list+16(FP), R3")
	p("MOVD R3, R8")
	p("MOVD room+24(FP), R4")
	p("ADD R4<<2, R3, R4")
	p("MOVD $0, R5")
	p("CBZ R1, lowbits_done")
	label("lowbits_group")
	p("VLD1 (R0), %s", regs(0, 4, "S4"))
	for k := 0; k < 4; k++ {
		vand(k, k, 26)
		vcmtst(4+k, k, 25)
	}
	vorr(8, 4, 5)
	vorr(9, 6, 7)
	vorr(8, 8, 9)
	p("VMOV V8.D[0], R6")
	p("VMOV V8.D[1], R7")
	p("ORR R6, R7, R6")
	p("CBZ R6, lowbits_next")
	p("SUB R3, R4, R9")
	p("CMP $64, R9")
	p("BLO lowbits_done")
	for l := 0; l < 16; l++ {
		p("VMOV V%d.S[%d], R6", l/4, l%4)
		p("MOVW R6, (R3)")
		p("VMOV V%d.S[%d], R7", 4+l/4, l%4)
		p("AND $4, R7, R7")
		p("ADD R7, R3, R3")
	}
	label("lowbits_next")
	p("ADD $64, R0, R0")
	p("ADD $16, R5, R5")
	p("SUBS $1, R1, R1")
	p("BNE lowbits_group")
	label("lowbits_done")
	p("MOVD R5, done+32(FP)")
	p("SUB R8, R3, R3")
	p("LSR $2, R3, R3")
	p("MOVD R3, count+40(FP)")
	p("RET")
}
