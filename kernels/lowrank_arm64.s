//go:build !noasm && !purego && gc

#include "textflag.h"

// func lowRankColsNEON(acc, l []float32, r *float32, stride int)
// Per strip of 16 columns (then 4): four (one) sums in registers start
// from l[0]·row 0, then add l[k]·row k for k = 1 … len(l)−1, each product
// and sum rounded (FMUL, FADD: no FMLA; l, then the sum, as the first
// operand, as Go's mul and add pin NaNs).
TEXT ·lowRankColsNEON(SB), NOSPLIT, $0-64
	MOVD acc_base+0(FP), R0
	MOVD acc_len+8(FP), R1
	MOVD l_base+24(FP), R2
	MOVD l_len+32(FP), R3
	MOVD r+48(FP), R4
	MOVD stride+56(FP), R5
	LSL  $2, R5, R5

strip16:
	CMP   $16, R1
	BLT   strip4
	MOVD  R2, R9
	MOVWU.P 4(R9), R10
	VDUP  R10, V8.S4
	VLD1  (R4), [V4.S4, V5.S4, V6.S4, V7.S4]
	WORD  $0x6e24dd00 // FMUL V0.4S, V8.4S, V4.4S
	WORD  $0x6e25dd01 // FMUL V1.4S, V8.4S, V5.4S
	WORD  $0x6e26dd02 // FMUL V2.4S, V8.4S, V6.4S
	WORD  $0x6e27dd03 // FMUL V3.4S, V8.4S, V7.4S
	MOVD  R4, R6
	MOVD  $1, R7

rank16:
	CMP   R3, R7
	BGE   store16
	ADD   R5, R6, R6
	MOVWU.P 4(R9), R10
	VDUP  R10, V8.S4
	VLD1  (R6), [V4.S4, V5.S4, V6.S4, V7.S4]
	WORD  $0x6e24dd04 // FMUL V4.4S, V8.4S, V4.4S
	WORD  $0x6e25dd05 // FMUL V5.4S, V8.4S, V5.4S
	WORD  $0x6e26dd06 // FMUL V6.4S, V8.4S, V6.4S
	WORD  $0x6e27dd07 // FMUL V7.4S, V8.4S, V7.4S
	WORD  $0x4e24d400 // FADD V0.4S, V0.4S, V4.4S
	WORD  $0x4e25d421 // FADD V1.4S, V1.4S, V5.4S
	WORD  $0x4e26d442 // FADD V2.4S, V2.4S, V6.4S
	WORD  $0x4e27d463 // FADD V3.4S, V3.4S, V7.4S
	ADD   $1, R7
	B     rank16

store16:
	VST1.P [V0.S4, V1.S4, V2.S4, V3.S4], 64(R0)
	ADD   $64, R4
	SUB   $16, R1
	B     strip16

strip4:
	CMP   $4, R1
	BLT   done
	MOVD  R2, R9
	MOVWU.P 4(R9), R10
	VDUP  R10, V8.S4
	VLD1  (R4), [V4.S4]
	WORD  $0x6e24dd00 // FMUL V0.4S, V8.4S, V4.4S
	MOVD  R4, R6
	MOVD  $1, R7

rank4:
	CMP   R3, R7
	BGE   store4
	ADD   R5, R6, R6
	MOVWU.P 4(R9), R10
	VDUP  R10, V8.S4
	VLD1  (R6), [V4.S4]
	WORD  $0x6e24dd04 // FMUL V4.4S, V8.4S, V4.4S
	WORD  $0x4e24d400 // FADD V0.4S, V0.4S, V4.4S
	ADD   $1, R7
	B     rank4

store4:
	VST1.P [V0.S4], 16(R0)
	ADD   $16, R4
	SUB   $4, R1
	B     strip4

done:
	RET
