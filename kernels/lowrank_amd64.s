//go:build !noasm && !purego && gc

#include "textflag.h"

// func lowRankStep4AVX2(acc, a, b, c, d []float32, l *[4]float32)
// acc[j] = (((acc[j] + l0·a[j]) + l1·b[j]) + l2·c[j]) + l3·d[j], each
// product and sum rounded (VMULPS, VADDPS: no FMA), 8 lanes at a time.
TEXT ·lowRankStep4AVX2(SB), NOSPLIT, $0-128
	MOVQ acc_base+0(FP), DI
	MOVQ acc_len+8(FP), CX
	MOVQ a_base+24(FP), R8
	MOVQ b_base+48(FP), R9
	MOVQ c_base+72(FP), R10
	MOVQ d_base+96(FP), R11
	MOVQ l+120(FP), AX
	VBROADCASTSS 0(AX), Y0
	VBROADCASTSS 4(AX), Y1
	VBROADCASTSS 8(AX), Y2
	VBROADCASTSS 12(AX), Y3
	XORQ SI, SI
	SHRQ $3, CX
	JZ   done

loop:
	VMOVUPS (DI)(SI*4), Y4
	VMULPS  (R8)(SI*4), Y0, Y5
	VADDPS  Y5, Y4, Y4
	VMULPS  (R9)(SI*4), Y1, Y5
	VADDPS  Y5, Y4, Y4
	VMULPS  (R10)(SI*4), Y2, Y5
	VADDPS  Y5, Y4, Y4
	VMULPS  (R11)(SI*4), Y3, Y5
	VADDPS  Y5, Y4, Y4
	VMOVUPS Y4, (DI)(SI*4)
	ADDQ    $8, SI
	DECQ    CX
	JNZ     loop

done:
	VZEROUPPER
	RET
