package main

// NEON EMR election over whole chunks, as the amd64 kernels (emr.go). The
// sixteen float64 partial sums are V16..V23, two lanes each: vector v of
// the chunk (elements 4v..4v+3) adds its FCVTL half to V(16+2(v mod 4))
// and its FCVTL2 half to V(17+2(v mod 4)). Mask bits: each compare of four
// lanes is ANDed with the weights of its place in a half word (V24..V27)
// and the ADDV of their OR is the half word; back, VCMTST against the
// weights gives the lanes.
//
//	R0 U, R1 τ of task 0, R4 row 0 of the mask, each at the chunk; R2
//	stride in bytes, R3 tasks, R5 row, R6 ASum, R7 BSum, R8 AMin, R9 BMin
//	at the next sum, R11 chunks left, R12 scratch; R13 a task's τ, R14 its
//	mask, R15 U, R16 scratch as they go, R17 tasks left, R19 groups left,
//	R20, R21 temporaries. V28 0x80000000, V29 all ones, V30 0x7fffffff,
//	V15 the minimum.

func umax(d, n, m int) { three(0x6ea06400, "UMAX", d, n, m) }
func umin(d, n, m int) { three(0x6ea06c00, "UMIN", d, n, m) }
func uminv(d, n int) {
	word(0x6eb1a800|uint32(n)<<5|uint32(d), "UMINV S%d, V%d.4S", d, n)
}

func genEMRNEON() {
	comment("EMR election: whole chunks of 256 elements.")
	neonText("emrElectNEON", sigEMR, "$0-96")
	p("MOVD u+0(FP), R0")
	p("MOVD taus+8(FP), R1")
	p("MOVD stride+16(FP), R2")
	p("LSL $2, R2, R2")
	p("MOVD tasks+24(FP), R3")
	p("MOVD mask+32(FP), R4")
	p("MOVD row+40(FP), R5")
	p("MOVD asum+48(FP), R6")
	p("MOVD bsum+56(FP), R7")
	p("MOVD amin+64(FP), R8")
	p("MOVD bmin+72(FP), R9")
	p("MOVD chunks+80(FP), R11")
	p("MOVD scratch+88(FP), R12")
	for q := 0; q < 4; q++ {
		for j := 0; j < 4; j++ {
			p("MOVW $0x%x, R10", uint32(1)<<(4*q+j))
			p("VMOV R10, V%d.S[%d]", 24+q, j)
		}
	}
	vdupc(28, 0x80000000)
	vdupc(30, 0x7fffffff)
	vdupc(29, 0xffffffff)
	label("emr_chunk")
	// S and γ's sign bits, 32 elements a group; U zeroed.
	p("MOVD R0, R15")
	p("MOVD R12, R16")
	p("MOVD R1, R13")
	p("MOVD $%d, R19", emrChunk/32)
	label("emr_sgroup")
	p("VLD1 (R13), %s", regs(0, 4, "S4"))
	p("ADD $64, R13, R20")
	p("VLD1 (R20), %s", regs(4, 4, "S4"))
	p("MOVD R13, R21")
	p("SUB $1, R3, R17")
	p("CBZ R17, emr_sdone")
	label("emr_stask")
	p("ADD R2, R21, R21")
	p("VLD1 (R21), %s", regs(8, 4, "S4"))
	p("ADD $64, R21, R20")
	p("VLD1 (R20), %s", regs(12, 4, "S4"))
	for i := 0; i < 8; i++ {
		fadd(i, i, 8+i)
	}
	p("SUBS $1, R17, R17")
	p("BNE emr_stask")
	label("emr_sdone")
	for i := 0; i < 8; i++ {
		fcmgtz(i, i)
		veor(i, i, 29)
		vand(i, i, 28)
	}
	p("VST1.P %s, 64(R16)", regs(0, 4, "S4"))
	p("VST1.P %s, 64(R16)", regs(4, 4, "S4"))
	for i := 8; i < 12; i++ {
		vzero(i)
	}
	p("VST1.P %s, 64(R15)", regs(8, 4, "S4"))
	p("VST1.P %s, 64(R15)", regs(8, 4, "S4"))
	p("ADD $128, R13, R13")
	p("SUBS $1, R19, R19")
	p("BNE emr_sgroup")
	// Per task: mask bits, the maximum, Σ|τ|.
	p("MOVD R1, R13")
	p("MOVD R4, R14")
	p("MOVD R3, R17")
	label("emr_atask")
	emrNEONStart()
	label("emr_agroup")
	p("VLD1.P 64(R20), %s", regs(0, 4, "S4"))
	p("VLD1.P 64(R16), %s", regs(4, 4, "S4"))
	p("VLD1 (R15), %s", regs(8, 4, "S4"))
	for q := 0; q < 4; q++ {
		veor(4+q, q, 4+q) // p = τ with γ's sign
		fcmgtz(12, 4+q)   // agrees
		vand(13, 4+q, 12)
		umax(8+q, 8+q, 13)
		vand(12, 12, 24+q)
		if q == 0 {
			vorr(14, 12, 12)
		} else {
			vorr(14, 14, 12)
		}
		vand(13, q, 30)
		emrNEONAdd(13, q)
	}
	p("VADDV V14.S4, V14")
	p("VMOV V14.S[0], R21")
	p("MOVH.P R21, 2(R14)")
	p("VST1.P %s, 64(R15)", regs(8, 4, "S4"))
	p("SUBS $1, R19, R19")
	p("BNE emr_agroup")
	emrNEONStore("R6", "R8")
	p("ADD R2, R13, R13")
	p("SUB $%d, R14, R14", emrChunk/8)
	p("ADD R5, R14, R14")
	p("SUBS $1, R17, R17")
	p("BNE emr_atask")
	// Per task: Σ Mₜ·|U|.
	p("MOVD R4, R14")
	p("MOVD R3, R17")
	label("emr_btask")
	emrNEONStart()
	label("emr_bgroup")
	p("VLD1.P 64(R15), %s", regs(8, 4, "S4"))
	p("MOVHU.P 2(R14), R21")
	p("VDUP R21, V14.S4")
	for q := 0; q < 4; q++ {
		vcmtst(13, 14, 24+q)
		vand(13, 13, 8+q)
		emrNEONAdd(13, q)
	}
	p("SUBS $1, R19, R19")
	p("BNE emr_bgroup")
	emrNEONStore("R7", "R9")
	p("SUB $%d, R14, R14", emrChunk/8)
	p("ADD R5, R14, R14")
	p("SUBS $1, R17, R17")
	p("BNE emr_btask")
	// U: γ's sign where the maximum is not zero.
	p("MOVD R0, R15")
	p("MOVD R12, R16")
	p("MOVD $%d, R19", emrChunk/16)
	label("emr_ugroup")
	p("VLD1 (R15), %s", regs(0, 4, "S4"))
	p("VLD1.P 64(R16), %s", regs(4, 4, "S4"))
	for q := 0; q < 4; q++ {
		vcmtst(8, q, q)
		vand(8, 8, 4+q)
		vorr(q, q, 8)
	}
	p("VST1.P %s, 64(R15)", regs(0, 4, "S4"))
	p("SUBS $1, R19, R19")
	p("BNE emr_ugroup")
	p("ADD $%d, R0, R0", emrChunkBytes)
	p("ADD $%d, R1, R1", emrChunkBytes)
	p("ADD $%d, R4, R4", emrChunk/8)
	p("SUBS $1, R11, R11")
	p("BNE emr_chunk")
	p("RET")
}

// emrNEONStart starts a task's pass over the chunk: R20 its τ, R15 U, R16
// the scratch, R19 the groups of 16; the sums cleared, the minimum all ones.
func emrNEONStart() {
	p("MOVD R13, R20")
	p("MOVD R0, R15")
	p("MOVD R12, R16")
	p("MOVD $%d, R19", emrChunk/16)
	for v := 16; v < 24; v++ {
		vzero(v)
	}
	vorr(15, 29, 29)
}

// emrNEONAdd adds the magnitudes in V(v), vector q of a group, to the
// minimum and the partial sums (clobbers V12, V13 unless v is one).
func emrNEONAdd(v, q int) {
	vadd(12, v, 29) // minus one
	umin(15, 15, 12)
	fcvtl2d(12, v)
	fcvtl22d(13, v)
	fadd2d(16+2*q, 16+2*q, 12)
	fadd2d(17+2*q, 17+2*q, 13)
}

// emrNEONStore halves the partial sums into (sum) and the minimum into
// (min), post-incrementing both.
func emrNEONStore(sum, mn string) {
	for k := 0; k < 4; k++ {
		fadd2d(16+k, 16+k, 20+k)
	}
	fadd2d(16, 16, 18)
	fadd2d(17, 17, 19)
	fadd2d(16, 16, 17)
	faddpd(16, 16)
	p("FMOVD.P F16, 8(%s)", sum)
	uminv(15, 15)
	p("VMOV V15.S[0], R21")
	p("MOVW.P R21, 4(%s)", mn)
}
