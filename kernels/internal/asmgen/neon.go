// The NEON kernels (neon_arm64.s). Go's arm64 assembler lacks the vector
// floating-point instructions (FADD, FCMGT, FCVTL, ...) and CMHS, so this
// program encodes them as WORDs carrying the instruction, in the syntax
// golang.org/x/arch/arm64/arm64asm prints, as a comment;
// neon_words_test.go decodes every WORD and checks it against its comment.
//
// The arithmetic mirrors generic.go operation by operation, including which
// operand comes first where both may be NaN (arm64 returns a signalling NaN
// first, else the first operand's, quieted): generic.go pins that order with
// mul and add, and the NaN-payload tests guard it.

package main

import (
	"bytes"
	"fmt"
	"go/format"
	"log"
	"path/filepath"
	"strings"
)

var out bytes.Buffer

// neonDecls are the Go declarations of the NEON kernels (asm_arm64.go).
var neonDecls []decl

// neonDocs are the declarations' comments, by function name; %s is the name.
var neonDocs = map[string]string{
	"voteNEON": "%s votes groups×8 elements; it returns, summed over them, how many\n" +
		"vote sums are > 0, ≥ 0 (up), exactly zero with a nonzero value, and how\n" +
		"many elements saw both signs. stride is in elements, n ≥ 1; flags are vote….",
	"rangeNEON": "%s counts the n values (a positive multiple of 16) whose magnitude\n" +
		"bits lie in [lo, hi]; with idx != nil it writes start+j for each match j,\n" +
		"in order, to idx[:count], and may overwrite idx[count:n].",
	"deltaRange": "%s computes τ from the n stored values (a positive multiple\n" +
		"of 16) of src and base and counts the magnitude bits above hi and inside\n" +
		"[lo, hi]; with idx != nil it writes start+j for each inside j, in order,\n" +
		"to idx[:inside], and may overwrite idx[inside:n].",
	"widen":     "%s widens n (a positive multiple of 16) stored values at src into dst.",
	"deltaTrim": "%s computes τ = θ − θ₀ for n (a positive multiple of 16) stored values\nand zeroes |τ| bits < thr.",
	"finish":    "%s writes θ₀ + λ·τₘ for n (a positive multiple of 16) elements.",
	"ties":      "%s merges a.groups×4 elements of a.nm models (flags ties…).",
	"norms":     "%s runs Norms over whole chunks: sums to l1 and sq (NaNs as they\ncome), words ORed into pos and neg.",
	"dot":       "%s runs Dot over whole chunks (NaNs as they come).",
	"trimWords": "%s runs TrimWords over whole chunks (NaN sums as they come).",
	"emrElect":  "%s runs EMRElect over whole chunks (NaN sums as they come);\nstride and row in elements and bytes as the block's, sums chunk-major.",
	"lowBits":   "%s runs LowBits over n (a multiple of 16) values while 16 more\nfit in room; done is where it stopped.",
}

// neonText starts the assembly of one kernel and declares it.
func neonText(name, sig, frame string) {
	fmt.Fprintf(&out, "\n// func %s%s\n", name, sig)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, %s\n", name, frame)
	doc := ""
	for k := range neonDocs {
		if strings.HasPrefix(name, k) && len(k) > len(doc) {
			doc = k
		}
	}
	neonDecls = append(neonDecls, decl{name, sig, fmt.Sprintf(neonDocs[doc], name)})
}

func p(format string, args ...any) { fmt.Fprintf(&out, "\t"+format+"\n", args...) }
func label(l string)               { fmt.Fprintf(&out, "%s:\n", l) }
func comment(c string)             { fmt.Fprintf(&out, "\n\t// %s\n", c) }

func word(enc uint32, format string, args ...any) {
	p("WORD $0x%08x // %s", enc, fmt.Sprintf(format, args...))
}

// Three registers, same arrangement, vector .4S (Q=1, size/sz as encoded).
func three(base uint32, name string, d, n, m int) {
	word(base|uint32(m)<<16|uint32(n)<<5|uint32(d), "%s V%d.4S, V%d.4S, V%d.4S", name, d, n, m)
}

func fadd(d, n, m int)  { three(0x4e20d400, "FADD", d, n, m) }  // d = n + m
func fsub(d, n, m int)  { three(0x4ea0d400, "FSUB", d, n, m) }  // d = n - m
func fmul(d, n, m int)  { three(0x6e20dc00, "FMUL", d, n, m) }  // d = n * m
func fdiv(d, n, m int)  { three(0x6e20fc00, "FDIV", d, n, m) }  // d = n / m
func fcmgt(d, n, m int) { three(0x6ea0e400, "FCMGT", d, n, m) } // d = n > m
func cmhs(d, n, m int)  { three(0x6ea03c00, "CMHS", d, n, m) }  // d = n >= m, unsigned
func cmhi(d, n, m int)  { three(0x6ea03400, "CMHI", d, n, m) }  // d = n > m, unsigned

// Two registers, .4S.
func two(base uint32, name, suffix string, d, n int) {
	word(base|uint32(n)<<5|uint32(d), "%s V%d.4S, V%d.4S%s", name, d, n, suffix)
}

func fabs(d, n int)   { two(0x4ea0f800, "FABS", "", d, n) }
func fneg(d, n int)   { two(0x6ea0f800, "FNEG", "", d, n) }
func fcmgtz(d, n int) { two(0x4ea0c800, "FCMGT", ", #0", d, n) } // d = n > 0
func fcmltz(d, n int) { two(0x4ea0e800, "FCMLT", ", #0", d, n) } // d = n < 0
func fcmeqz(d, n int) { two(0x4ea0d800, "FCMEQ", ", #0", d, n) } // d = n == 0
func fcmgez(d, n int) { two(0x6ea0c800, "FCMGE", ", #0", d, n) } // d = n >= 0

// ucvtf converts unsigned 32-bit integer lanes to float32 (exact below 2²⁴).
func ucvtf(d, n int) { two(0x6e21d800, "UCVTF", "", d, n) }

// fcmeq(d, n, n) is "not NaN".
func fcmeq(d, n, m int) { three(0x4e20e400, "FCMEQ", d, n, m) }

// Half-precision conversions: FCVTL widens the low four halves, FCVTL2 the
// high four; FCVTN narrows into the low half, FCVTN2 into the high half.
func fcvtl(d, n int) {
	word(0x0e217800|uint32(n)<<5|uint32(d), "FCVTL V%d.4S, V%d.4H", d, n)
}
func fcvtl2(d, n int) {
	word(0x4e217800|uint32(n)<<5|uint32(d), "FCVTL2 V%d.4S, V%d.8H", d, n)
}
func fcvtn(d, n int) {
	word(0x0e216800|uint32(n)<<5|uint32(d), "FCVTN V%d.4H, V%d.4S", d, n)
}
func fcvtn2(d, n int) {
	word(0x4e216800|uint32(n)<<5|uint32(d), "FCVTN2 V%d.8H, V%d.4S", d, n)
}

// Mnemonics Go does know; arguments in ARM order (destination first).
func vand(d, n, m int) { p("VAND V%d.B16, V%d.B16, V%d.B16", m, n, d) }
func vorr(d, n, m int) { p("VORR V%d.B16, V%d.B16, V%d.B16", m, n, d) }

// vbit: d = m ? n : d, bitwise.
func vbit(d, n, m int)     { p("VBIT V%d.B16, V%d.B16, V%d.B16", m, n, d) }
func vadd(d, n, m int)     { p("VADD V%d.S4, V%d.S4, V%d.S4", m, n, d) }
func vsub(d, n, m int)     { p("VSUB V%d.S4, V%d.S4, V%d.S4", m, n, d) } // d = n - m
func vushr(d, n, sh int)   { p("VUSHR $%d, V%d.S4, V%d.S4", sh, n, d) }
func vcmtst(d, n, m int)   { p("VCMTST V%d.S4, V%d.S4, V%d.S4", m, n, d) }
func vcmeq(d, n, m int)    { p("VCMEQ V%d.S4, V%d.S4, V%d.S4", m, n, d) }
func vaddp(d, n, m int)    { p("VADDP V%d.S4, V%d.S4, V%d.S4", m, n, d) } // d = [n0+n1, n2+n3, m0+m1, m2+m3]
func vzip1h(d, n, m int)   { p("VZIP1 V%d.H8, V%d.H8, V%d.H8", m, n, d) }
func vzip2h(d, n, m int)   { p("VZIP2 V%d.H8, V%d.H8, V%d.H8", m, n, d) }
func vuzp2h(d, n, m int)   { p("VUZP2 V%d.H8, V%d.H8, V%d.H8", m, n, d) }
func vzero(d int)          { p("VEOR V%d.B16, V%d.B16, V%d.B16", d, d, d) }
func vdupc(d int, c int64) { p("MOVW $0x%x, R10", c); p("VDUP R10, V%d.S4", d) }

// addv returns the lane sum of counter register v (which it clobbers) in
// R10 and stores it to the named result.
func addv(v int, result string) {
	p("VADDV V%d.S4, V%d", v, v)
	p("VMOV V%d.S[0], R10", v)
	p("MOVD R10, %s", result)
}

func regs(first, n int, arr string) string {
	s := "["
	for i := 0; i < n; i++ {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("V%d.%s", first+i, arr)
	}
	return s + "]"
}

type dtype int

const (
	f32 dtype = iota
	f16
	bf16
)

var dtNames = []string{"F32", "F16", "BF16"}

// load16 reads 16 stored values from (R1), post-incrementing, and leaves them
// widened in V0..V3. raw is a pair of free registers; zero holds 0.
func load16(dt dtype, raw, zero int) {
	switch dt {
	case f32:
		p("VLD1.P 64(R1), %s", regs(0, 4, "S4"))
	case bf16:
		p("VLD1.P 32(R1), %s", regs(raw, 2, "H8"))
		// bf16 is the high half of a float32: interleave with zero halves.
		for k := 0; k < 2; k++ {
			vzip1h(2*k, zero, raw+k)
			vzip2h(2*k+1, zero, raw+k)
		}
	case f16:
		p("VLD1.P 32(R1), %s", regs(raw, 2, "H8"))
		for k := 0; k < 2; k++ {
			fcvtl(2*k, raw+k)
			fcvtl2(2*k+1, raw+k)
		}
	}
}

func neonHeader() {
	out.WriteString("// Code generated by kernels/internal/asmgen. DO NOT EDIT.\n\n")
	out.WriteString("//go:build !noasm && !purego && gc\n\n")
	out.WriteString("#include \"textflag.h\"\n")
}

// widen: dst *float32, src *byte, n int (a positive multiple of 16).
func genWiden(dt dtype) {
	name := "widen" + dtNames[dt] + "NEON"
	neonText(name, "(dst *float32, src *byte, n int)", "$0-24")
	p("MOVD dst+0(FP), R0")
	p("MOVD src+8(FP), R1")
	p("MOVD n+16(FP), R2")
	vzero(31)
	label(name + "_loop")
	load16(dt, 4, 31)
	p("VST1.P %s, 64(R0)", regs(0, 4, "S4"))
	p("SUBS $16, R2, R2")
	p("BNE %s_loop", name)
	p("RET")
}

// deltaTrim: tau *float32, src *byte, base *float32, n int (multiple of 16,
// > 0), thr uint32; returns kept int.
func genDeltaTrim(dt dtype) {
	name := "deltaTrim" + dtNames[dt] + "NEON"
	neonText(name, "(tau *float32, src *byte, base *float32, n int, thr uint32) (kept int)", "$0-48")
	p("MOVD tau+0(FP), R0")
	p("MOVD src+8(FP), R1")
	p("MOVD base+16(FP), R2")
	p("MOVD n+24(FP), R3")
	p("MOVWU thr+32(FP), R4")
	p("VDUP R4, V30.S4")
	vdupc(29, 0x7fffffff)
	vzero(31)
	vzero(26) // kept counters, minus one per kept lane
	vzero(27)
	label(name + "_loop")
	load16(dt, 12, 31)
	p("VLD1.P 64(R2), %s", regs(4, 4, "S4"))
	for k := 0; k < 4; k++ {
		fsub(k, k, 4+k) // t = θ − θ₀
	}
	for k := 0; k < 4; k++ {
		vand(8+k, k, 29) // magnitude bits
	}
	for k := 0; k < 4; k++ {
		cmhs(8+k, 8+k, 30) // keep = |t| bits >= thr
	}
	for k := 0; k < 4; k++ {
		vand(k, k, 8+k)
		vsub(26+k%2, 26+k%2, 8+k)
	}
	p("VST1.P %s, 64(R0)", regs(0, 4, "S4"))
	p("SUBS $16, R3, R3")
	p("BNE %s_loop", name)
	vadd(26, 26, 27)
	addv(26, "kept+40(FP)")
	p("RET")
}

// finish: dst *byte, base *float32, tm *float32, n int (multiple of 16, > 0),
// lambda float32.
func genFinish(dt dtype) {
	name := "finish" + dtNames[dt] + "NEON"
	neonText(name, "(dst *byte, base *float32, tm *float32, n int, lambda float32)", "$0-36")
	p("MOVD dst+0(FP), R0")
	p("MOVD base+8(FP), R1")
	p("MOVD tm+16(FP), R2")
	p("MOVD n+24(FP), R3")
	p("MOVWU lambda+32(FP), R4")
	p("VDUP R4, V31.S4")
	if dt == bf16 {
		vdupc(28, 1)
		vdupc(29, 0x7fff)
		vdupc(30, 0x00400000) // the bf16 quiet bit, 0x40, in the high half
	}
	label(name + "_loop")
	p("VLD1.P 64(R2), %s", regs(0, 4, "S4"))
	p("VLD1.P 64(R1), %s", regs(4, 4, "S4"))
	for k := 0; k < 4; k++ {
		fmul(k, 31, k) // λ·τₘ, rounded
	}
	for k := 0; k < 4; k++ {
		fadd(k, 4+k, k) // θ₀ + λ·τₘ
	}
	switch dt {
	case f32:
		p("VST1.P %s, 64(R0)", regs(0, 4, "S4"))
	case f16:
		fcvtn(8, 0)
		fcvtn2(8, 1)
		fcvtn(9, 2)
		fcvtn2(9, 3)
		p("VST1.P %s, 32(R0)", regs(8, 2, "H8"))
	case bf16:
		// u = bits; non-NaN: (u + 0x7fff + ((u>>16)&1)) >> 16;
		// NaN: (u>>16) | 0x40. The >>16 is the UZP2 that keeps high halves.
		for k := 0; k < 4; k++ {
			fcmeq(8+k, k, k) // not NaN
			vushr(12+k, k, 16)
			vand(12+k, 12+k, 28)
			vadd(16+k, k, 29)
			vadd(16+k, 16+k, 12+k)
			vorr(20+k, k, 30)
			vbit(20+k, 16+k, 8+k)
		}
		vuzp2h(24, 20, 21)
		vuzp2h(25, 22, 23)
		p("VST1.P %s, 32(R0)", regs(24, 2, "H8"))
	}
	p("SUBS $16, R3, R3")
	p("BNE %s_loop", name)
	p("RET")
}

// Vote flags, set by voteNEON in neon_arm64.go.
const (
	flagWeighted = 0 // bit: vote on w·τ
	flagCount    = 1 // bit: sum signs
	flagNone     = 2 // bit: no vote, every value counts
	flagSum      = 3 // bit: aggregate sum
	flagMax      = 4 // bit: aggregate max
	flagDivW     = 5 // bit: mean divides by Σw
)

// genVote processes groups of 8 elements (two vectors, k = 0, 1).
//
//	R0 out, R1 taus (group start), R2 stride in bytes, R3 weights, R4 n > 0,
//	R5 groups > 0, R6 flags; R7 model pointer, R8 weight pointer, R9 models left.
//
// Registers: V0,1 s; V2,3 pos; V4,5 neg; V6,7 nonzero; V8,9 up;
// V10,11 num; V12,13 den or mx; V16,17 t; V18,19 a; V20 w;
// V21,22 gt; V23,24 lt, then the inclusion mask; V25,26 temporaries;
// counters V14 positive, V15 up, V27 zero sums, V31 conflicts;
// constants V28 −1.0, V29 1.0, V30 0x7fffffff.
func genVote() {
	const (
		s, pos, neg, nz, up, num, den, mx = 0, 2, 4, 6, 8, 10, 12, 12
		t, a, w, gt, lt, tmp              = 16, 18, 20, 21, 23, 25
		cPos, cUp, cZero, cConf           = 14, 15, 27, 31
		mone, one, absmask                = 28, 29, 30
	)
	name := "voteNEON"
	neonText(name, "(out *float32, taus *float32, stride int, w *float32, n int, groups int, flags int) (pos, up, zero, conflicts int)", "$0-88")
	p("MOVD out+0(FP), R0")
	p("MOVD taus+8(FP), R1")
	p("MOVD stride+16(FP), R2")
	p("LSL $2, R2, R2")
	p("MOVD w+24(FP), R3")
	p("MOVD n+32(FP), R4")
	p("MOVD groups+40(FP), R5")
	p("MOVD flags+48(FP), R6")
	vdupc(mone, 0xbf800000)
	vdupc(one, 0x3f800000)
	vdupc(absmask, 0x7fffffff)
	for _, c := range []int{cPos, cUp, cZero, cConf} {
		vzero(c)
	}

	label("vote_group")
	comment("Pass 1, the vote: s, and whether any value is >0, <0, !=0.")
	for k := 0; k < 2; k++ {
		vzero(s + k)
		vzero(pos + k)
		vzero(neg + k)
		vzero(nz + k)
	}
	p("MOVD R1, R7")
	p("MOVD R3, R8")
	p("MOVD R4, R9")
	label("vote_p1")
	p("VLD1 (R7), %s", regs(t, 2, "S4"))
	p("ADD R2, R7, R7")
	p("TBZ $%d, R6, vote_p1_cmp", flagWeighted)
	p("VLD1R.P 4(R8), [V%d.S4]", w)
	for k := 0; k < 2; k++ {
		fmul(t+k, w, t+k) // v = w·τ
	}
	label("vote_p1_cmp")
	for k := 0; k < 2; k++ {
		fcmgtz(gt+k, t+k)
		fcmltz(lt+k, t+k)
		vcmtst(tmp+k, t+k, absmask) // v != 0, NaN included
	}
	for k := 0; k < 2; k++ {
		vorr(pos+k, pos+k, gt+k)
		vorr(neg+k, neg+k, lt+k)
		vorr(nz+k, nz+k, tmp+k)
	}
	p("TBNZ $%d, R6, vote_p1_count", flagCount)
	for k := 0; k < 2; k++ {
		fadd(s+k, t+k, s+k) // s += v; s is only compared, so the order is free
	}
	p("B vote_p1_next")
	label("vote_p1_count")
	for k := 0; k < 2; k++ {
		vand(gt+k, gt+k, one)
		vand(lt+k, lt+k, mone)
		vorr(gt+k, gt+k, lt+k) // sign(v): 1, −1 or +0
		fadd(s+k, s+k, gt+k)
	}
	label("vote_p1_next")
	p("SUBS $1, R9, R9")
	p("BNE vote_p1")

	comment("The elected sign and the stats.")
	for k := 0; k < 2; k++ {
		fcmgez(up+k, s+k) // !(s < 0) && s == s
		vand(tmp, pos+k, neg+k)
		vsub(cConf, cConf, tmp)
		fcmgtz(tmp, s+k)
		vsub(cPos, cPos, tmp)
		vsub(cUp, cUp, up+k)
		fcmeqz(tmp, s+k)
		vand(tmp, tmp, nz+k)
		vsub(cZero, cZero, tmp)
	}

	comment("Pass 2, the disjoint aggregate.")
	for k := 0; k < 2; k++ {
		vzero(num + k)
		vzero(den + k) // also mx
	}
	p("MOVD R1, R7")
	p("MOVD R3, R8")
	p("MOVD R4, R9")
	label("vote_p2")
	p("VLD1 (R7), %s", regs(t, 2, "S4"))
	p("ADD R2, R7, R7")
	p("VLD1R.P 4(R8), [V%d.S4]", w)
	for k := 0; k < 2; k++ {
		fmul(a+k, w, t+k) // a = w·τ
	}
	p("TBNZ $%d, R6, vote_p2_all", flagNone)
	p("TBZ $%d, R6, vote_p2_unweighted", flagWeighted)
	for k := 0; k < 2; k++ {
		fcmgtz(gt+k, a+k)
		fcmltz(lt+k, a+k)
	}
	p("B vote_p2_mask")
	label("vote_p2_unweighted")
	for k := 0; k < 2; k++ {
		fcmgtz(gt+k, t+k)
		fcmltz(lt+k, t+k)
	}
	label("vote_p2_mask")
	for k := 0; k < 2; k++ {
		vbit(lt+k, gt+k, up+k) // include = up ? v > 0 : v < 0
	}
	p("B vote_p2_agg")
	label("vote_p2_all")
	for k := 0; k < 2; k++ {
		vcmeq(lt+k, t+k, t+k) // all ones
	}
	label("vote_p2_agg")
	p("TBNZ $%d, R6, vote_p2_max", flagMax)
	for k := 0; k < 2; k++ {
		fadd(tmp+k, a+k, num+k) // num = add(a, num)
		vbit(num+k, tmp+k, lt+k)
	}
	p("TBNZ $%d, R6, vote_p2_next", flagSum)
	p("TBZ $%d, R6, vote_p2_den1", flagDivW)
	for k := 0; k < 2; k++ {
		fadd(tmp+k, w, den+k) // den = add(w, den)
		vbit(den+k, tmp+k, lt+k)
	}
	p("B vote_p2_next")
	label("vote_p2_den1")
	for k := 0; k < 2; k++ {
		fadd(tmp+k, one, den+k) // den += 1
		vbit(den+k, tmp+k, lt+k)
	}
	p("B vote_p2_next")
	label("vote_p2_max")
	for k := 0; k < 2; k++ {
		fabs(tmp, a+k)
		fcmgt(tmp+1, tmp, mx+k) // |a| > mx; false for NaN
		vand(tmp+1, tmp+1, lt+k)
		vbit(mx+k, tmp, tmp+1)
	}
	label("vote_p2_next")
	p("SUBS $1, R9, R9")
	p("BNE vote_p2")

	comment("The result.")
	p("TBNZ $%d, R6, vote_out_max", flagMax)
	p("TBNZ $%d, R6, vote_out_sum", flagSum)
	for k := 0; k < 2; k++ {
		fcmeqz(tmp, den+k)
		vbit(den+k, one, tmp) // a zero divisor becomes 1
		fdiv(t+k, num+k, den+k)
	}
	p("VST1.P %s, 32(R0)", regs(t, 2, "S4"))
	p("B vote_next")
	label("vote_out_sum")
	p("VST1.P %s, 32(R0)", regs(num, 2, "S4"))
	p("B vote_next")
	label("vote_out_max")
	for k := 0; k < 2; k++ {
		fneg(t+k, mx+k)
		vbit(t+k, mx+k, up+k) // up ? mx : −mx
	}
	p("VST1.P %s, 32(R0)", regs(t, 2, "S4"))
	label("vote_next")
	p("ADD $32, R1, R1")
	p("SUBS $1, R5, R5")
	p("BNE vote_group")

	addv(cPos, "pos+56(FP)")
	addv(cUp, "up+64(FP)")
	addv(cZero, "zero+72(FP)")
	addv(cConf, "conflicts+80(FP)")
	p("RET")
}

// genRange counts (and, with idx != nil, lists) the values whose magnitude
// bits lie in [lo, hi], 16 at a time (four vectors).
//
//	R0 tau, R1 n (a positive multiple of 16), R3 idx (or 0), R4 index of the
//	group's first element; V28 lo, V29 hi, V26, V27 counters (minus one per
//	match), V0..V3 values, V4..V7 masks, V8..V11 temporaries.
func genRange() {
	name := "rangeNEON"
	neonText(name, "(tau *float32, n int, lo, hi uint32, idx *int32, start int) (count int)", "$0-48")
	p("MOVD tau+0(FP), R0")
	p("MOVD n+8(FP), R1")
	p("MOVWU lo+16(FP), R5")
	p("VDUP R5, V28.S4")
	p("MOVWU hi+20(FP), R5")
	p("VDUP R5, V29.S4")
	p("MOVD idx+24(FP), R3")
	p("MOVD start+32(FP), R4")
	vzero(26)
	vzero(27)
	// The compare, shared by both loops: masks in V4..V7, counted.
	match := func() {
		p("VLD1.P 64(R0), %s", regs(0, 4, "S4"))
		for k := 0; k < 4; k++ {
			fabs(4+k, k) // the magnitude bits, NaN payloads kept
		}
		for k := 0; k < 4; k++ {
			cmhs(8+k, 4+k, 28) // m >= lo
			cmhs(4+k, 29, 4+k) // hi >= m
		}
		for k := 0; k < 4; k++ {
			vand(4+k, 4+k, 8+k)
			vsub(26+k%2, 26+k%2, 4+k)
		}
	}
	p("CBNZ R3, range_idx")
	label("range_count")
	match()
	p("SUBS $16, R1, R1")
	p("BNE range_count")
	p("B range_done")

	comment("With indices: a group with any match writes the index of every lane at idx[count] and advances count by its match bit, so the indices land in order; what lies past count is scratch, and count never passes the lane's own index.")
	label("range_idx")
	match()
	vorr(8, 4, 5)
	vorr(9, 6, 7)
	vorr(8, 8, 9)
	p("VMOV V8.D[0], R6")
	p("VMOV V8.D[1], R7")
	p("ORR R6, R7, R6")
	p("CBZ R6, range_idx_next")
	for l := 0; l < 16; l++ {
		p("ADD $%d, R4, R6", l)
		p("MOVW R6, (R3)")
		p("VMOV V%d.S[%d], R7", 4+l/4, l%4)
		p("AND $4, R7, R7")
		p("ADD R7, R3, R3")
	}
	label("range_idx_next")
	p("ADD $16, R4, R4")
	p("SUBS $16, R1, R1")
	p("BNE range_idx")

	label("range_done")
	vadd(26, 26, 27)
	addv(26, "count+40(FP)")
	p("RET")
}

// genDeltaRange computes τ = θ − θ₀ as genDeltaTrim does, 16 at a time,
// without storing it, and counts the magnitude patterns m above hi
// (m >u hi) and inside [lo, hi] ((m − lo) ≤u (hi − lo), the reference's
// test, which agrees with it even for lo > hi); with idx != nil it lists
// the inside ones as genRange does.
//
//	R1 src, R2 base, R3 n (a positive multiple of 16), R4 idx (or 0), R5
//	index of the group's first element, R6, R7 temporaries; V0..V3 τ, then
//	its magnitude bits m; V4..V7 θ₀, then the inside masks; V8..V11 the
//	above masks; V12, V13 raw halves; V14, V15 temporaries; V20 0x7fffffff,
//	V21 lo, V22 hi − lo, V23 hi; V24, V25 above counters, V26, V27 inside
//	counters (minus one per lane); V31 0.
func genDeltaRange(dt dtype) {
	name := "deltaRange" + dtNames[dt] + "NEON"
	neonText(name, "(src *byte, base *float32, n int, lo, hi uint32, idx *int32, start int) (above, inside int)", "$0-64")
	p("MOVD src+0(FP), R1")
	p("MOVD base+8(FP), R2")
	p("MOVD n+16(FP), R3")
	p("MOVWU lo+24(FP), R6")
	p("MOVWU hi+28(FP), R7")
	p("MOVD idx+32(FP), R4")
	p("MOVD start+40(FP), R5")
	p("VDUP R6, V21.S4")
	p("VDUP R7, V23.S4")
	p("SUBW R6, R7, R7") // hi − lo
	p("VDUP R7, V22.S4")
	vdupc(20, 0x7fffffff)
	vzero(31)
	for c := 24; c < 28; c++ {
		vzero(c)
	}
	// The compare, shared by both loops: inside masks in V4..V7, above
	// masks in V8..V11, both counted.
	match := func() {
		load16(dt, 12, 31)
		p("VLD1.P 64(R2), %s", regs(4, 4, "S4"))
		for k := 0; k < 4; k++ {
			fsub(k, k, 4+k) // t = θ − θ₀
		}
		for k := 0; k < 4; k++ {
			vand(k, k, 20) // magnitude bits
		}
		for k := 0; k < 4; k++ {
			vsub(4+k, k, 21)   // m − lo
			cmhs(4+k, 22, 4+k) // inside = hi − lo >= m − lo
			cmhi(8+k, k, 23)   // above = m > hi
		}
		for k := 0; k < 4; k++ {
			vsub(26+k%2, 26+k%2, 4+k)
			vsub(24+k%2, 24+k%2, 8+k)
		}
	}
	p("CBNZ R4, %s_idx", name)
	label(name + "_count")
	match()
	p("SUBS $16, R3, R3")
	p("BNE %s_count", name)
	p("B %s_done", name)

	comment("With indices, as rangeNEON writes them: a group with any inside lane writes the index of every lane at idx[inside] and advances by the lane's mask bit.")
	label(name + "_idx")
	match()
	vorr(14, 4, 5)
	vorr(15, 6, 7)
	vorr(14, 14, 15)
	p("VMOV V14.D[0], R6")
	p("VMOV V14.D[1], R7")
	p("ORR R6, R7, R6")
	p("CBZ R6, %s_idx_next", name)
	for l := 0; l < 16; l++ {
		p("ADD $%d, R5, R6", l)
		p("MOVW R6, (R4)")
		p("VMOV V%d.S[%d], R7", 4+l/4, l%4)
		p("AND $4, R7, R7")
		p("ADD R7, R4, R4")
	}
	label(name + "_idx_next")
	p("ADD $16, R5, R5")
	p("SUBS $16, R3, R3")
	p("BNE %s_idx", name)

	label(name + "_done")
	vadd(24, 24, 25)
	addv(24, "above+48(FP)")
	vadd(26, 26, 27)
	addv(26, "inside+56(FP)")
	p("RET")
}

// neonTiesArgs is the fused NEON kernel's parameter block.
var neonTiesArgs = newLayout("neonTiesArgs", "neonTiesArgs is the fused NEON kernels' parameter block.",
	field{"dst", "*byte", ""},
	field{"base", "*byte", ""},
	field{"models", "[8]*byte", ""},
	field{"groups", "int", "of 4 elements, > 0"},
	field{"nm", "int", "1..8"},
	field{"zero", "*int32", ""},
	field{"start", "int", "index of the first element, for the zero-sum indices"},
	field{"flags", "int", ""},
	field{"thr", "[8]uint32", ""},
	field{"w", "[8]float32", ""},
	field{"vw", "[8]float32", "the vote's weights: w for a weighted vote, else 1"},
	field{"lambda", "float32", ""},
	field{"_", "uint32", ""},
	field{"kept", "[8]int", "Results."},
	field{"pos", "int", ""},
	field{"up", "int", ""},
	field{"zeroSum", "int", ""},
	field{"conflicts", "int", ""},
	field{"equal", "[8]int", "with tiesEqual"},
)

// Offsets in neonTiesArgs.
var (
	taDst     = neonTiesArgs.at("dst")
	taBase    = neonTiesArgs.at("base")
	taModels  = neonTiesArgs.at("models")
	taGroups  = neonTiesArgs.at("groups")
	taNM      = neonTiesArgs.at("nm")
	taZero    = neonTiesArgs.at("zero")
	taStart   = neonTiesArgs.at("start")
	taFlags   = neonTiesArgs.at("flags")
	taThr     = neonTiesArgs.at("thr")
	taW       = neonTiesArgs.at("w")
	taVW      = neonTiesArgs.at("vw")
	taLambda  = neonTiesArgs.at("lambda")
	taKept    = neonTiesArgs.at("kept")
	taPos     = neonTiesArgs.at("pos")
	taUp      = neonTiesArgs.at("up")
	taZeroSum = neonTiesArgs.at("zeroSum")
	taConf    = neonTiesArgs.at("conflicts")
	taEqual   = neonTiesArgs.at("equal")
)

// Ties flag bits, as neon_arm64.go sets them.
const (
	neonTiesFlagMean = 0 // bit: aggregate mean with the count divisor, else sum
	neonTiesFlagZero = 1 // bit: write zero-sum indices
	neonTiesFlagDivW = 2 // bit: the mean divides by the sum of the weights
	neonTiesFlagEq   = 3 // bit: count the values at the threshold (Equal)
)

// genTies is the fused TIES merge of groups of 4 elements for dt in and out,
// consensus sum, aggregate mean (count or weight divisor) or sum, 1..8 models. Each
// model count has its own fully unrolled loop, so that per-model state lives
// in registers: thresholds and weights packed four to a vector (DUP by lane),
// the kept counters one vector each. With the Equal flag, a second set of
// loops also counts the values whose magnitude bits equal the threshold: the
// keep and equal masks are added pairwise (ADDP) into the same counter, kept
// in lanes 0 and 1, equal in lanes 2 and 3 (each lane at most 2 per group,
// far from overflowing 32 bits); without the flag, one branch per call is
// the cost. The vote weights vw are the weights for a weighted vote, else 1
// (1·τ is τ bit for bit: τ is never a signalling NaN, being a difference).
// τ is recomputed from the inputs in the aggregate pass.
//
//	R0 dst, R1 base, R2 groups left, R3 zero-sum index pointer, R4 index of
//	the group's first element, R5 args, R6..R9 temporaries, R10..R17 model
//	pointers, R19 flags, R20 models.
//
// Vector registers: V0 θ₀; V1 s, then up; V2 pos, then num; V3 neg, then the
// count (an integer) or Σw (a float); V4..V8 temporaries; V9..V11 bf16 rounding constants; V12 positive,
// V13 up, V14 zero sums, V15 conflicts (counters); V16..V23 kept counters
// (and Equal counters, in lanes 2 and 3, with the Equal flag);
// V24, V25 vote weights; V26, V27 weights; V28, V29 thresholds; V30 λ; V31 0.
func genTies(dt dtype) {
	name := "ties" + dtNames[dt] + "NEON"
	const (
		theta, s, up, pos, num, neg, cnt = 0, 1, 1, 2, 2, 3, 3
		cPos, cUp, cZero, cConf, kept    = 12, 13, 14, 15, 16
		vwP, wP, thrP, lambda, zero      = 24, 26, 28, 30, 31
		bfOne, bfRound, bfQuiet          = 9, 10, 11
	)
	neonText(name, "(a *neonTiesArgs)", "$0-8")
	p("MOVD a+0(FP), R5")
	p("MOVD %d(R5), R0", taDst)
	p("MOVD %d(R5), R1", taBase)
	p("MOVD %d(R5), R2", taGroups)
	p("MOVD %d(R5), R3", taZero)
	p("MOVD %d(R5), R4", taStart)
	p("MOVD %d(R5), R19", taFlags)
	p("MOVD %d(R5), R20", taNM)
	for _, c := range []struct{ off, v int }{{taThr, thrP}, {taW, wP}, {taVW, vwP}} {
		p("ADD $%d, R5, R6", c.off)
		p("VLD1 (R6), %s", regs(c.v, 2, "S4"))
	}
	p("MOVWU %d(R5), R6", taLambda)
	p("VDUP R6, V%d.S4", lambda)
	vzero(zero)
	for v := cPos; v < kept+8; v++ {
		vzero(v)
	}
	if dt == bf16 {
		vdupc(bfOne, 1)
		vdupc(bfRound, 0x7fff)
		vdupc(bfQuiet, 0x00400000) // the bf16 quiet bit, 0x40, in the high half
	}
	// After vdupc, which uses R10.
	for i := 0; i < 8; i++ {
		p("MOVD %d(R5), R%d", taModels+8*i, 10+i)
	}
	p("TBNZ $%d, R19, %s_eq", neonTiesFlagEq, name)
	for nm := 1; nm <= 8; nm++ {
		p("CMP $%d, R20", nm)
		p("BEQ %s_n%d", name, nm)
	}
	p("B %s_done", name) // not reached: the Go code passes 1..8 models
	label(name + "_eq")
	for nm := 1; nm <= 8; nm++ {
		p("CMP $%d, R20", nm)
		p("BEQ %s_e%d", name, nm)
	}
	p("B %s_done_eq", name) // not reached

	widen := func(d, raw int) {
		if dt == bf16 {
			vzip1h(d, zero, raw)
		} else {
			fcvtl(d, raw)
		}
	}
	dupLane := func(d, packed, i int) {
		p("VDUP V%d.S[%d], V%d.S4", packed+i/4, i%4, d)
	}
	// tau leaves model i's trimmed τ in V5 (V4, V6 clobbered), its mask in
	// V6; with eq, the mask of |t| bits == thr in V7.
	tau := func(i int, load string, eq bool) {
		p(load, 10+i)
		widen(5, 4)
		fsub(5, 5, theta) // t = θ − θ₀
		dupLane(4, thrP, i)
		fabs(6, 5)
		if eq {
			vcmeq(7, 6, 4) // at = |t| bits == thr
		}
		cmhs(6, 6, 4) // keep = |t| bits >= thr
		vand(5, 5, 6)
	}
	for _, eq := range []bool{false, true} {
		for nm := 1; nm <= 8; nm++ {
			pre := fmt.Sprintf("%s_n%d", name, nm)
			if eq {
				pre = fmt.Sprintf("%s_e%d", name, nm)
			}
			label(pre)
			if eq {
				comment(fmt.Sprintf("%d models, counting Equal: widen θ₀; pass 1, trim and vote.", nm))
			} else {
				comment(fmt.Sprintf("%d models: widen θ₀; pass 1, trim and vote.", nm))
			}
			p("FMOVD.P 8(R1), F4")
			widen(theta, 4)
			vzero(s)
			vzero(pos)
			vzero(neg)
			for i := 0; i < nm; i++ {
				tau(i, "FMOVD (R%d), F4", eq)
				if eq {
					vaddp(7, 6, 7) // [keep, keep, at, at], pairwise
					vsub(kept+i, kept+i, 7)
				} else {
					vsub(kept+i, kept+i, 6)
				}
				dupLane(4, vwP, i)
				fmul(5, 4, 5) // v = vw·τ
				fcmgtz(6, 5)
				fcmltz(7, 5)
				vorr(pos, pos, 6)
				vorr(neg, neg, 7)
				fadd(s, 5, s) // s += v; s is only compared, so the order is free
			}

			comment("The elected sign and the stats. A sum of exactly zero holds no NaN, so some value is nonzero iff one is > 0 or < 0.")
			vand(4, pos, neg)
			vsub(cConf, cConf, 4)
			fcmgtz(4, s)
			vsub(cPos, cPos, 4)
			fcmeqz(7, s)
			vorr(4, pos, neg)
			vand(7, 7, 4) // zero sum
			vsub(cZero, cZero, 7)
			fcmgez(up, s) // !(s < 0) && s == s
			vsub(cUp, cUp, up)
			p("TBZ $%d, R19, %s_pass2", neonTiesFlagZero, pre)
			p("VMOV V7.D[0], R6")
			p("VMOV V7.D[1], R7")
			p("ORR R6, R7, R6")
			p("CBZ R6, %s_pass2", pre)
			for l := 0; l < 4; l++ {
				p("VMOV V7.S[%d], R6", l)
				p("CBZW R6, %s_z%d", pre, l)
				p("ADD $%d, R4, R7", l)
				p("MOVW.P R7, 4(R3)")
				label(fmt.Sprintf("%s_z%d", pre, l))
			}

			label(pre + "_pass2")
			comment("Pass 2, the disjoint aggregate, τ recomputed.")
			vzero(num)
			vzero(cnt)
			for i := 0; i < nm; i++ {
				tau(i, "FMOVD.P 8(R%d), F4", false)
				dupLane(4, vwP, i)
				fmul(6, 4, 5) // v = vw·τ
				fcmgtz(7, 6)
				fcmltz(8, 6)
				vbit(8, 7, up) // include = up ? v > 0 : v < 0
				dupLane(4, wP, i)
				fmul(6, 4, 5)   // a = w·τ
				fadd(7, 6, num) // num = add(a, num)
				vbit(num, 7, 8)
				p("TBNZ $%d, R19, %s_dw%d", neonTiesFlagDivW, pre, i)
				vsub(cnt, cnt, 8) // the count
				p("B %s_next%d", pre, i)
				label(fmt.Sprintf("%s_dw%d", pre, i))
				fadd(7, 4, cnt) // den = add(w, den)
				vbit(cnt, 7, 8)
				label(fmt.Sprintf("%s_next%d", pre, i))
			}

			comment("The merged τ, then θ₀ + λ·τₘ rounded and stored.")
			p("TBZ $%d, R19, %s_finish", neonTiesFlagMean, pre)
			p("TBNZ $%d, R19, %s_divw", neonTiesFlagDivW, pre)
			vcmeq(4, cnt, zero)
			vsub(cnt, cnt, 4) // a zero divisor becomes 1
			ucvtf(cnt, cnt)
			p("B %s_div", pre)
			label(pre + "_divw")
			fcmeqz(4, cnt)
			p("MOVW $0x3f800000, R6")
			p("VDUP R6, V5.S4") // 1.0
			vbit(cnt, 5, 4)     // a zero divisor becomes 1
			label(pre + "_div")
			fdiv(num, num, cnt)
			label(pre + "_finish")
			fmul(num, lambda, num) // λ·τₘ, rounded
			fadd(num, theta, num)  // θ₀ + λ·τₘ
			if dt == f16 {
				fcvtn(4, num)
				p("FMOVD.P F4, 8(R0)")
			} else {
				fcmeq(4, num, num) // not NaN
				vushr(5, num, 16)
				vand(5, 5, bfOne)
				vadd(6, num, bfRound)
				vadd(6, 6, 5)
				vorr(7, num, bfQuiet)
				vbit(7, 6, 4)
				vuzp2h(7, 7, 7)
				p("FMOVD.P F7, 8(R0)")
			}
			p("ADD $4, R4, R4")
			p("SUBS $1, R2, R2")
			p("BNE %s", pre)
			if eq {
				p("B %s_done_eq", name)
			} else {
				p("B %s_done", name)
			}
		}
	}

	label(name + "_done_eq")
	for i := 0; i < 8; i++ {
		vaddp(kept+i, kept+i, kept+i) // [kept, equal, kept, equal]
		p("VMOV V%d.S[0], R6", kept+i)
		p("MOVD R6, %d(R5)", taKept+8*i)
		p("VMOV V%d.S[1], R6", kept+i)
		p("MOVD R6, %d(R5)", taEqual+8*i)
	}
	p("B %s_stats", name)

	label(name + "_done")
	for i := 0; i < 8; i++ {
		p("VADDV V%d.S4, V%d", kept+i, kept+i)
		p("VMOV V%d.S[0], R6", kept+i)
		p("MOVD R6, %d(R5)", taKept+8*i)
	}
	label(name + "_stats")
	for _, c := range []struct{ v, off int }{{cPos, taPos}, {cUp, taUp}, {cZero, taZeroSum}, {cConf, taConf}} {
		p("VADDV V%d.S4, V%d", c.v, c.v)
		p("VMOV V%d.S[0], R6", c.v)
		p("MOVD R6, %d(R5)", c.off)
	}
	p("RET")
}

// genNEON writes neon_arm64.s into dir.
func genNEON(dir string) {
	neonHeader()
	for _, dt := range []dtype{f16, bf16} {
		genWiden(dt)
	}
	for _, dt := range []dtype{f32, f16, bf16} {
		genDeltaTrim(dt)
	}
	genVote()
	for _, dt := range []dtype{f32, f16, bf16} {
		genFinish(dt)
	}
	genRange()
	for _, dt := range []dtype{f32, f16, bf16} {
		genDeltaRange(dt)
	}
	for _, dt := range []dtype{f16, bf16} {
		genTies(dt)
	}
	genStatsNEON()
	genEMRNEON()
	write(filepath.Join(dir, "neon_arm64.s"), out.Bytes())
	write(filepath.Join(dir, "asm_arm64.go"), neonGo())
}

// neonGo is asm_arm64.go: the kernels' declarations, the parameter block
// and the flag bits.
func neonGo() []byte {
	var b bytes.Buffer
	b.WriteString(goHeader)
	for _, d := range neonDecls {
		fmt.Fprintf(&b, "\n// %s\n//\n//go:noescape\nfunc %s%s\n", strings.ReplaceAll(d.doc, "\n", "\n// "), d.name, d.sig)
	}
	neonTiesArgs.goDecl(&b)
	fmt.Fprintf(&b, `
// Ties flag bits (neonTiesArgs.flags).
const (
	tiesMean  = 1 << %d // aggregate mean with the count divisor, else sum
	tiesZero  = 1 << %d // write zero-sum indices
	tiesDivW  = 1 << %d // the mean divides by Σ m·w
	tiesEqual = 1 << %d // count the values at the threshold (TiesBlock.Equal)
)

// Vote flag bits (voteNEON's flags).
const (
	voteWeighted = 1 << %d // vote on w·τ
	voteCount    = 1 << %d // sum signs
	voteNone     = 1 << %d // no vote, every value counts
	voteSum      = 1 << %d // aggregate sum
	voteMax      = 1 << %d // aggregate max
	voteDivW     = 1 << %d // mean divides by Σw
)
`, neonTiesFlagMean, neonTiesFlagZero, neonTiesFlagDivW, neonTiesFlagEq,
		flagWeighted, flagCount, flagNone, flagSum, flagMax, flagDivW)
	src, err := format.Source(b.Bytes())
	if err != nil {
		log.Fatalf("format: %v\n%s", err, b.Bytes())
	}
	return src
}
