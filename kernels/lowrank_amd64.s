//go:build !noasm && !purego && gc

#include "textflag.h"

// func lowRankColsAVX2(acc, l []float32, r *float32, stride int)
// Per strip of 32 columns (then 8): four (one) sums in registers start
// from l[0]·row 0, then add l[k]·row k for k = 1 … len(l)−1, each product
// and sum rounded (VMULPS, VADDPS: no FMA; l, then the sum, as the first
// operand, as Go's mul and add pin NaNs).
TEXT ·lowRankColsAVX2(SB), NOSPLIT, $0-64
	MOVQ acc_base+0(FP), DI
	MOVQ acc_len+8(FP), CX
	MOVQ l_base+24(FP), SI
	MOVQ l_len+32(FP), DX
	MOVQ r+48(FP), R8
	MOVQ stride+56(FP), R9
	SHLQ $2, R9

strip32:
	CMPQ CX, $32
	JLT  strip8
	VBROADCASTSS (SI), Y8
	VMULPS       (R8), Y8, Y0
	VMULPS       32(R8), Y8, Y1
	VMULPS       64(R8), Y8, Y2
	VMULPS       96(R8), Y8, Y3
	MOVQ         R8, R10
	MOVQ         $1, R11

rank32:
	CMPQ         R11, DX
	JGE          store32
	ADDQ         R9, R10
	VBROADCASTSS (SI)(R11*4), Y8
	VMULPS       (R10), Y8, Y4
	VADDPS       Y4, Y0, Y0
	VMULPS       32(R10), Y8, Y5
	VADDPS       Y5, Y1, Y1
	VMULPS       64(R10), Y8, Y6
	VADDPS       Y6, Y2, Y2
	VMULPS       96(R10), Y8, Y7
	VADDPS       Y7, Y3, Y3
	INCQ         R11
	JMP          rank32

store32:
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	ADDQ    $128, DI
	ADDQ    $128, R8
	SUBQ    $32, CX
	JMP     strip32

strip8:
	CMPQ         CX, $8
	JLT          done
	VBROADCASTSS (SI), Y8
	VMULPS       (R8), Y8, Y0
	MOVQ         R8, R10
	MOVQ         $1, R11

rank8:
	CMPQ         R11, DX
	JGE          store8
	ADDQ         R9, R10
	VBROADCASTSS (SI)(R11*4), Y8
	VMULPS       (R10), Y8, Y4
	VADDPS       Y4, Y0, Y0
	INCQ         R11
	JMP          rank8

store8:
	VMOVUPS Y0, (DI)
	ADDQ    $32, DI
	ADDQ    $32, R8
	SUBQ    $8, CX
	JMP     strip8

done:
	VZEROUPPER
	RET

// func lowRankColsAVX512(acc, l []float32, r *float32, stride int)
// lowRankColsAVX2 in ZMM registers: strips of 64 columns (then 16).
TEXT ·lowRankColsAVX512(SB), NOSPLIT, $0-64
	MOVQ acc_base+0(FP), DI
	MOVQ acc_len+8(FP), CX
	MOVQ l_base+24(FP), SI
	MOVQ l_len+32(FP), DX
	MOVQ r+48(FP), R8
	MOVQ stride+56(FP), R9
	SHLQ $2, R9

strip64:
	CMPQ         CX, $64
	JLT          strip16
	VBROADCASTSS (SI), Z8
	VMULPS       (R8), Z8, Z0
	VMULPS       64(R8), Z8, Z1
	VMULPS       128(R8), Z8, Z2
	VMULPS       192(R8), Z8, Z3
	MOVQ         R8, R10
	MOVQ         $1, R11

rank64:
	CMPQ         R11, DX
	JGE          store64
	ADDQ         R9, R10
	VBROADCASTSS (SI)(R11*4), Z8
	VMULPS       (R10), Z8, Z4
	VADDPS       Z4, Z0, Z0
	VMULPS       64(R10), Z8, Z5
	VADDPS       Z5, Z1, Z1
	VMULPS       128(R10), Z8, Z6
	VADDPS       Z6, Z2, Z2
	VMULPS       192(R10), Z8, Z7
	VADDPS       Z7, Z3, Z3
	INCQ         R11
	JMP          rank64

store64:
	VMOVUPS Z0, (DI)
	VMOVUPS Z1, 64(DI)
	VMOVUPS Z2, 128(DI)
	VMOVUPS Z3, 192(DI)
	ADDQ    $256, DI
	ADDQ    $256, R8
	SUBQ    $64, CX
	JMP     strip64

strip16:
	CMPQ         CX, $16
	JLT          done512
	VBROADCASTSS (SI), Z8
	VMULPS       (R8), Z8, Z0
	MOVQ         R8, R10
	MOVQ         $1, R11

rank16:
	CMPQ         R11, DX
	JGE          store16
	ADDQ         R9, R10
	VBROADCASTSS (SI)(R11*4), Z8
	VMULPS       (R10), Z8, Z4
	VADDPS       Z4, Z0, Z0
	INCQ         R11
	JMP          rank16

store16:
	VMOVUPS Z0, (DI)
	ADDQ    $64, DI
	ADDQ    $64, R8
	SUBQ    $16, CX
	JMP     strip16

done512:
	VZEROUPPER
	RET
