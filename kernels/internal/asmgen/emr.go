package main

import "fmt"

// EMR election kernels (kernels/emr.go) over whole chunks of emrChunk
// elements; the Go side takes a short last chunk and writes NaN sums as
// SumNaN. Per chunk: S over the tasks (γ's sign bits to scratch, U zeroed
// as the running maximum), then per task the mask bits, the maximum and
// Σ|τₜ|, then per task Σ Mₜ·|U|, then U's signs. The sixteen float64
// partial sums are the lanes of two ZMM (four YMM) accumulators, element
// x of the chunk in lane x mod 16, halved at the end as the reference
// does; the least magnitude bits minus one is an unsigned minimum.
//
// Registers: DI U, SI τ of task 0, R10 row 0 of the mask, BX scratch, each
// at the chunk; R12 ASum, R13 BSum, R14 AMin, R15 BMin at the next sum
// (chunk-major); AX a task's τ, CX its mask row, DX tasks left; R8, R9,
// R11 temporaries. The chunk count is decremented in its argument slot.
const sigEMR = "(u *float32, taus *float32, stride int, tasks int, mask *byte, row int, asum *float64, bsum *float64, amin *uint32, bmin *uint32, chunks int, scratch *float32)"

const (
	emrChunk      = 256
	emrChunkBytes = 4 * emrChunk
	cmpNGTU       = "$0x1a" // NGT_UQ: not greater, or unordered
)

func emrGen(a *asm, z bool) {
	isa, vb := "AVX2", 32
	if z {
		isa, vb = "AVX512", 64
	}
	nv := emrChunkBytes / vb // vectors per chunk
	name := "emrElect" + isa
	declare(name, sigEMR, name+" runs EMRElect over whole chunks (NaN sums as they come); stride and row in elements and bytes as the block's, sums chunk-major.")
	a.text(name, "$0-96", sigEMR)
	a.op("MOVQ u+0(FP), DI")
	a.op("MOVQ taus+8(FP), SI")
	a.op("MOVQ mask+32(FP), R10")
	a.op("MOVQ asum+48(FP), R12")
	a.op("MOVQ bsum+56(FP), R13")
	a.op("MOVQ amin+64(FP), R14")
	a.op("MOVQ bmin+72(FP), R15")
	a.op("MOVQ scratch+88(FP), BX")
	a.op("SHLQ $2, stride+16(FP)") // bytes
	if z {
		a.op("VPXORD Z31, Z31, Z31")
		broadcast512(a, "$0x7fffffff", 30)
		a.op("VPTERNLOGD $0xff, Z29, Z29, Z29")
		broadcast512(a, "$0x80000000", 28)
	} else {
		a.op("VPXOR Y15, Y15, Y15")
		broadcast2(a, "0x7fffffff", 14)
		a.op("VPCMPEQD Y13, Y13, Y13")
		broadcast2(a, "0x80000000", 12)
	}
	a.label("chunk")
	// S and γ, groups of up to 16 vectors.
	g := min(nv, 16)
	if !z {
		g = 8
	}
	for g0 := 0; g0 < nv; g0 += g {
		r := func(v int) string {
			if z {
				return fmt.Sprintf("Z%d", v)
			}
			return fmt.Sprintf("Y%d", v)
		}
		for v := 0; v < g; v++ {
			a.op("VMOVUPS %d(SI), %s", vb*(g0+v), r(v))
		}
		a.op("MOVQ SI, AX")
		a.op("MOVQ tasks+24(FP), DX")
		a.op("DECQ DX")
		a.op("JZ sdone%d", g0)
		a.label(fmt.Sprintf("sum%d", g0))
		a.op("ADDQ stride+16(FP), AX")
		for v := 0; v < g; v++ {
			a.op("VADDPS %d(AX), %s, %s", vb*(g0+v), r(v), r(v))
		}
		a.op("DECQ DX")
		a.op("JNZ sum%d", g0)
		a.label(fmt.Sprintf("sdone%d", g0))
		for v := 0; v < g; v++ {
			off := vb * (g0 + v)
			if z {
				a.op("VCMPPS %s, Z31, Z%d, K1", cmpNGTU, v)
				a.op("VMOVDQA32.Z Z28, K1, Z16")
				a.op("VMOVDQU32 Z16, %d(BX)", off)
				a.op("VMOVDQU32 Z31, %d(DI)", off)
			} else {
				a.op("VCMPPS %s, Y15, Y%d, Y%d", cmpNGTU, v, v)
				a.op("VANDPS Y12, Y%d, Y%d", v, v)
				a.op("VMOVDQU Y%d, %d(BX)", v, off)
				a.op("VMOVDQU Y15, %d(DI)", off)
			}
		}
	}
	// Per task: mask bits, the maximum, Σ|τ|.
	a.op("MOVQ SI, AX")
	a.op("MOVQ R10, CX")
	a.op("MOVQ tasks+24(FP), DX")
	a.label("atask")
	emrZeroAcc(a, z)
	for v := 0; v < nv; v++ {
		off := vb * v
		if z {
			a.op("VMOVDQU32 %d(AX), Z3", off)
			a.op("VPXORD %d(BX), Z3, Z4", off)
			a.op("VCMPPS %s, Z31, Z4, K1", cmpGT)
			a.op("KMOVW K1, %d(CX)", 2*v)
			a.op("VMOVDQU32 %d(DI), Z5", off)
			a.op("VPMAXUD Z4, Z5, K1, Z5")
			a.op("VMOVDQU32 Z5, %d(DI)", off)
			a.op("VPANDD Z30, Z3, Z6")
		} else {
			a.op("VMOVDQU %d(AX), Y0", off)
			a.op("VPXOR %d(BX), Y0, Y1", off)
			a.op("VCMPPS %s, Y15, Y1, Y2", cmpGT)
			a.op("VMOVMSKPS Y2, R8")
			a.op("MOVB R8, %d(CX)", v)
			a.op("VPAND Y2, Y1, Y3")
			a.op("VPMAXUD %d(DI), Y3, Y3", off)
			a.op("VMOVDQU Y3, %d(DI)", off)
			a.op("VPAND Y14, Y0, Y4")
		}
		emrAdd(a, z, v)
	}
	emrStore(a, z, "R12", "R14")
	a.op("ADDQ stride+16(FP), AX")
	a.op("ADDQ row+40(FP), CX")
	a.op("DECQ DX")
	a.op("JNZ atask")
	// Per task: Σ Mₜ·|U| (U is still the maximum, non-negative).
	a.op("MOVQ SI, AX")
	a.op("MOVQ R10, CX")
	a.op("MOVQ tasks+24(FP), DX")
	a.label("btask")
	emrZeroAcc(a, z)
	for v := 0; v < nv; v++ {
		off := vb * v
		if z {
			a.op("KMOVW %d(CX), K1", 2*v)
			a.op("VMOVDQU32.Z %d(DI), K1, Z6", off)
		} else {
			// The mask bit again, from τ and γ.
			a.op("VMOVDQU %d(AX), Y0", off)
			a.op("VPXOR %d(BX), Y0, Y1", off)
			a.op("VCMPPS %s, Y15, Y1, Y2", cmpGT)
			a.op("VPAND %d(DI), Y2, Y4", off)
		}
		emrAdd(a, z, v)
	}
	emrStore(a, z, "R13", "R15")
	a.op("ADDQ stride+16(FP), AX")
	a.op("ADDQ row+40(FP), CX")
	a.op("DECQ DX")
	a.op("JNZ btask")
	// U: γ's sign where the maximum is not zero.
	for v := 0; v < nv; v++ {
		off := vb * v
		if z {
			a.op("VMOVDQU32 %d(DI), Z3", off)
			a.op("VPTESTMD Z3, Z3, K1")
			a.op("VPORD %d(BX), Z3, K1, Z3", off)
			a.op("VMOVDQU32 Z3, %d(DI)", off)
		} else {
			a.op("VMOVDQU %d(DI), Y0", off)
			a.op("VPCMPEQD Y15, Y0, Y1")
			a.op("VPANDN %d(BX), Y1, Y1", off)
			a.op("VPOR Y1, Y0, Y0")
			a.op("VMOVDQU Y0, %d(DI)", off)
		}
	}
	a.op("ADDQ $%d, DI", emrChunkBytes)
	a.op("ADDQ $%d, SI", emrChunkBytes)
	a.op("ADDQ $%d, R10", emrChunk/8)
	a.op("DECQ chunks+80(FP)")
	a.op("JNZ chunk")
	a.op("VZEROUPPER")
	a.op("RET")
}

// emrZeroAcc clears the sum accumulators (Z1, Z10; Y8..Y11) and sets the
// minimum (Z2; Y7) to all ones.
func emrZeroAcc(a *asm, z bool) {
	if z {
		a.op("VPXORQ Z1, Z1, Z1")
		a.op("VPXORQ Z10, Z10, Z10")
		a.op("VMOVDQA32 Z29, Z2")
		return
	}
	for y := 8; y < 12; y++ {
		a.op("VXORPD Y%d, Y%d, Y%d", y, y, y)
	}
	a.op("VMOVDQA Y13, Y7")
}

// emrAdd adds the magnitudes of vector v (Z6; Y4) to the minimum and the
// partial sums.
func emrAdd(a *asm, z bool, v int) {
	if z {
		a.op("VPADDD Z29, Z6, Z7")
		a.op("VPMINUD Z7, Z2, Z2")
		a.op("VCVTPS2PD Y6, Z8")
		a.op("VEXTRACTF64X4 $1, Z6, Y9")
		a.op("VCVTPS2PD Y9, Z9")
		a.op("VADDPD Z8, Z1, Z1")
		a.op("VADDPD Z9, Z10, Z10")
		return
	}
	acc := 8 + 2*(v&1) // elements x mod 16 in 0..7 or 8..15
	a.op("VPADDD Y13, Y4, Y5")
	a.op("VPMINUD Y5, Y7, Y7")
	a.op("VCVTPS2PD X4, Y5")
	a.op("VEXTRACTF128 $1, Y4, X6")
	a.op("VCVTPS2PD X6, Y6")
	a.op("VADDPD Y5, Y%d, Y%d", acc, acc)
	a.op("VADDPD Y6, Y%d, Y%d", acc+1, acc+1)
}

// emrStore halves the partial sums (s_j + s_j+8, + s_j+4, + s_j+2, + s_j+1)
// into (sum) and the minimum into (min), and advances both.
func emrStore(a *asm, z bool, sum, mn string) {
	if z {
		a.op("VADDPD Z10, Z1, Z1")
		a.op("VEXTRACTF64X4 $1, Z1, Y11")
		a.op("VADDPD Y11, Y1, Y1")
		a.op("VEXTRACTI64X4 $1, Z2, Y11")
		a.op("VPMINUD Y11, Y2, Y2")
		a.op("VMOVAPD Y1, Y8")
		a.op("VMOVDQA Y2, Y7")
	} else {
		a.op("VADDPD Y10, Y8, Y8")
		a.op("VADDPD Y11, Y9, Y9")
		a.op("VADDPD Y9, Y8, Y8")
	}
	a.op("VEXTRACTF128 $1, Y8, X9")
	a.op("VADDPD X9, X8, X8")
	a.op("VPERMILPD $1, X8, X9")
	a.op("VADDSD X9, X8, X8")
	a.op("VMOVSD X8, (%s)", sum)
	a.op("VEXTRACTI128 $1, Y7, X6")
	a.op("VPMINUD X6, X7, X7")
	a.op("VPSHUFD $0x4e, X7, X6")
	a.op("VPMINUD X6, X7, X7")
	a.op("VPSHUFD $0xb1, X7, X6")
	a.op("VPMINUD X6, X7, X7")
	a.op("VMOVD X7, (%s)", mn)
	a.op("ADDQ $8, %s", sum)
	a.op("ADDQ $4, %s", mn)
}
