package main

import (
	"bytes"
	"flag"
	"fmt"
	"slices"
	"strings"
)

// The fused Ties kernels: per vector, widen θ₀, then per model widen θ,
// τ = θ − θ₀, trim, and vote; then the disjoint aggregate over the same τ
// and θ₀ + λ·τₘ rounded to the stored dtype, with the arithmetic of the
// stage kernels above, operation for operation, consensus Sum. One kernel
// per stored dtype (input and output alike) and weighting (U, W, 1, as the
// vote); the model count (1..8), the aggregate (Mean, Sum) and whether to
// count Equal are run-time parameters. The code is unrolled over eight
// models, so the τ vectors stay in registers, and a model past the count
// branches to the end of the vote or the aggregate; the branches, the same
// on every step, cost less than noise, while specialising the weighting
// pays (kernels/README.md).
//
// With weighting W the register holds a = w·τ from the start: it is both
// what the vote sees and what the aggregate adds.

var fusedDTypes = []string{"F32", "F16", "BF16"} // in DType order

const maxFused = 8

// fusedPrefetch is the fused kernels' prefetch distance: they read N + 1
// streams at once, and do best on RAM-sized inputs with a shorter distance
// than the stage kernels' (kernels/README.md).
var fusedPrefetch = flag.Int("fused-prefetch", 512, "prefetch distance of the fused kernels in bytes (0: none)")

const sigTies = "(a *tiesArgs, n int) (pos, neg, zero, conflicts int)"

// fkind is one fused kernel's specialisation: stored dtype and weighting.
type fkind struct{ dt, wt string }

// Run-time flags of the fused kernels (tiesArgs.flags).
const (
	tiesFlagMean = 1
	tiesFlagEq   = 2
)

// tiesArgs is the parameter block of the x86 fused kernels.
var tiesArgs = newLayout("tiesArgs", "tiesArgs is the parameter block of the fused Ties kernels.",
	field{"models", "[8]*byte", "model i's first element; those past nm point at base (prefetched, never read)"},
	field{"thr", "[8][8]uint32", "thr[i] is model i's threshold in every lane: DeltaTrim's thrBits\n(AVX-512), or min(thrBits, 0x80000000) − 1 compared signed (AVX2)."},
	field{"w", "[8]float32", ""},
	field{"kept", "[8]int", "the kernels add each model's kept count"},
	field{"zero", "uintptr", "zero is where the next zero-sum index goes (the kernels advance it),\n0 if none are wanted. A uintptr: the assembly writes it back, and\nTiesBlock.Zero keeps the memory alive."},
	field{"base", "*byte", ""},
	field{"dst", "*byte", ""},
	field{"lambda", "float32", ""},
	field{"_", "uint32", ""},
	field{"idx", "[16]int32", "lane k's block index at the call's first element"},
	field{"eq", "[8][8]uint32", "eq[i] is model i's threshold (thrBits) in every lane, and equal[i]\ngets the count of |τ| with exactly that pattern (flag tiesFlagEq)."},
	field{"equal", "[8]int", ""},
	field{"nm", "int", "the model count, 1..8"},
	field{"flags", "int", "tiesFlagMean, tiesFlagEq"},
)

// Offsets in tiesArgs.
var (
	argModels = tiesArgs.at("models")
	argThr    = tiesArgs.at("thr")
	argW      = tiesArgs.at("w")
	argKept   = tiesArgs.at("kept")
	argZero   = tiesArgs.at("zero")
	argBase   = tiesArgs.at("base")
	argDst    = tiesArgs.at("dst")
	argLambda = tiesArgs.at("lambda")
	argIdx    = tiesArgs.at("idx")
	argEq     = tiesArgs.at("eq")
	argEqual  = tiesArgs.at("equal")
	argNM     = tiesArgs.at("nm")
	argFlags  = tiesArgs.at("flags")
)

func tiesName(k fkind, isa string) string { return "ties" + k.dt + k.wt + isa }

// fusedVariants calls f for every kernel, with its indices in the generated
// tables: the DType and the weighting (weightU, weightW, weight1).
func fusedVariants(f func(dt, wt int, k fkind)) {
	for di, dt := range fusedDTypes {
		for wi, wt := range weightings {
			f(di, wi, fkind{dt, wt})
		}
	}
}

// fusedGo writes tiesArgs, the flags and the tables of kernels.
func fusedGo(b *bytes.Buffer) {
	tiesArgs.goDecl(b)
	fmt.Fprintf(b, `
// Run-time flags of the fused kernels (tiesArgs.flags).
const (
	tiesFlagMean = %d // aggregate Mean, else Sum
	tiesFlagEq   = %d // count Equal
)

// tiesMaxModels is the most models a fused kernel takes.
const tiesMaxModels = %d

// tiesFunc is a fused kernel: it merges n elements.
type tiesFunc func(a *tiesArgs, n int) (pos, neg, zero, conflicts int)

// tiesKernel is one generated fused kernel.
type tiesKernel struct {
	name string
	fn   tiesFunc
	isa  string // "avx512", "avx2"
	dt   DType  // stored and output
	wt   int    // weightU, weightW, weight1
}
`, tiesFlagMean, tiesFlagEq, maxFused)
	for _, isa := range []string{"AVX512", "AVX2"} {
		fmt.Fprintf(b, "\n// ties%sKernels[dt][wt] is the %s fused kernel for DType dt and weighting wt.\n", isa, isa)
		fmt.Fprintf(b, "var ties%sKernels = [%d][%d]tiesFunc{\n", isa, len(fusedDTypes), len(weightings))
		for _, dt := range fusedDTypes {
			fmt.Fprintf(b, "\t%s: {", dt)
			for wi, wt := range weightings {
				if wi > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(b, "weight%s: %s", wt, tiesName(fkind{dt, wt}, isa))
			}
			b.WriteString("},\n")
		}
		b.WriteString("}\n")
	}
	b.WriteString("\n// tiesKernels lists every generated fused kernel.\nvar tiesKernels = []tiesKernel{\n")
	for _, isa := range []string{"AVX512", "AVX2"} {
		fusedVariants(func(dt, wt int, k fkind) {
			name := tiesName(k, isa)
			fmt.Fprintf(b, "\t{%q, %s, %q, %s, weight%s},\n", name, name, strings.ToLower(isa), k.dt, k.wt)
		})
	}
	b.WriteString("}\n")
}

func declareTies(name string, k fkind, lanes string) {
	declare(name, sigTies, fmt.Sprintf("%s merges n %selements of a.nm %s models (consensus Sum, weights %s; aggregate and Equal counts by a.flags).",
		name, lanes, strings.ToLower(k.dt), k.wt))
}

// ---------------------------------------------------------------- AVX-512

func fused512All(a *asm) {
	fusedVariants(func(_, _ int, k fkind) { fused512(a, k) })
}

// fused512 takes 16 elements per step, the last ones masked (K7).
// Registers:
//
//	BX args, CX element index, DX the model count, SI θ₀, DI output,
//	R8..R15 model i's θ.
//	Z0 θ₀, Z1..Z8 τ (or a) of models 0..7, Z9 s, Z10 max v, Z11 min v,
//	Z12 |τ| then flip, Z13 num, Z14 den, Z15 Z17 temporaries, Z16 Z18
//	models 0 and 1's kept lanes (the others go through KMOVW and POPCNT to
//	memory), Z19..Z22 lane counters: conflicts, zero sum, negative,
//	positive, Z23 sign bit, Z24..Z26 bf16: widen and pack tables, 0x7fff,
//	Z27 int 1, Z28 0x7fffffff, Z29 λ, Z30 1.0, Z31 0.
func fused512(a *asm, k fkind) {
	name := tiesName(k, "AVX512")
	declareTies(name, k, "")
	a.text(name, "$0-48", sigTies)
	a.op("MOVQ a+0(FP), BX")
	a.op("MOVQ %d(BX), DX", argNM)
	a.op("MOVQ %d(BX), SI", argBase)
	a.op("MOVQ %d(BX), DI", argDst)
	for i := 0; i < maxFused; i++ {
		a.op("MOVQ %d(BX), R%d", argModels+8*i, 8+i)
	}
	a.op("VPXORD Z31, Z31, Z31")
	a.op("VBROADCASTSS %d(BX), Z29", argLambda)
	broadcast512(a, "$0x7fffffff", 28)
	broadcast512(a, "$1", 27)
	broadcast512(a, "$0x80000000", 23)
	broadcast512(a, "$0x3f800000", 30)
	if k.dt == "BF16" {
		loadSetup512(a, k.dt)
		a.op("VMOVDQU64 bf16pack<>(SB), Z25")
		broadcast512(a, "$0x7fff", 26)
	}
	for z := 19; z <= 22; z++ {
		a.op("VPXORD Z%d, Z%d, Z%d", z, z, z)
	}
	for i := 0; i < maxFused; i++ {
		if z := keptReg512(i); z > 0 {
			a.op("VPXORD Z%d, Z%d, Z%d", z, z, z)
		}
	}
	a.op("XORQ CX, CX")
	sz := size(k.dt)
	var outOfLine []func()
	a.label("loop")
	a.op("LEAQ 16(CX), AX")
	a.op("CMPQ AX, n+8(FP)")
	a.op("JA tail")
	prefetchLines(a, 16*sz, sz, "DX")
	outOfLine = append(outOfLine, fused512Body(a, k, false))
	a.op("ADDQ $16, CX")
	a.op("JMP loop")
	a.label("tail")
	a.op("MOVQ n+8(FP), AX")
	a.op("SUBQ CX, AX")
	a.op("JZ done")
	a.op("MOVQ CX, DX")
	a.op("MOVQ AX, CX")
	tailMask512(a)
	a.op("MOVQ DX, CX")
	a.op("MOVQ %d(BX), DX", argNM)
	outOfLine = append(outOfLine, fused512Body(a, k, true))
	a.label("done")
	for i := 0; i < maxFused; i++ {
		if z := keptReg512(i); z > 0 {
			a.op("VEXTRACTI64X4 $1, Z%d, Y0", z)
			a.op("VPADDD Y%d, Y0, Y0", z)
			hsum(a)
			a.op("ADDQ AX, %d(BX)", argKept+8*i)
		}
	}
	for i, r := range []string{"pos", "neg", "zero", "conflicts"} {
		z := 22 - i
		a.op("VEXTRACTI64X4 $1, Z%d, Y0", z)
		a.op("VPADDD Y%d, Y0, Y0", z)
		hsum(a)
		a.op("MOVQ AX, %s+%d(FP)", r, 16+8*i)
	}
	a.op("VZEROUPPER")
	a.op("RET")
	for _, f := range outOfLine {
		f()
	}
}

// keptReg512 is the Z register counting model i's kept lanes, or 0.
func keptReg512(i int) int {
	switch i {
	case 0:
		return 16
	case 1:
		return 18
	}
	return 0
}

// prefetchLines prefetches θ₀ and each model's stream (element index CX,
// sz bytes an element) once per 64-byte line: where a step (bytes per
// stream) is shorter, only on steps that start a line. Models past the
// count (nm, as modelGuard) are not prefetched.
func prefetchLines(a *asm, step, sz int, nm string) {
	if *fusedPrefetch <= 0 {
		return
	}
	if step < 64 {
		a.op("TESTQ $%d, CX", 64/sz-1)
		a.op("JNZ noprefetch")
	}
	a.op("PREFETCHT0 %d(SI)(CX*%d)", *fusedPrefetch, sz)
	for i := 0; i < maxFused; i++ {
		modelGuard(a, i, "noprefetch", nm)
		a.op("PREFETCHT0 %d(R%d)(CX*%d)", *fusedPrefetch, 8+i, sz)
	}
	a.label("noprefetch")
}

// modelGuard skips to label once model i is past the model count, held
// in nm (a register or memory).
func modelGuard(a *asm, i int, label, nm string) {
	if i > 0 {
		a.op("CMPQ %s, $%d", nm, i)
		a.op("JLS %s", label)
	}
}

// flagTest jumps to label unless the run-time flag is set.
func flagTest(a *asm, flag int, label string) {
	a.op("TESTB $%d, %d(BX)", flag, argFlags)
	a.op("JZ %s", label)
}

// fused512Body merges the 16 elements at CX (the K7 lanes if masked). It
// returns the code to place out of line: writing zero-sum indices, which
// are rare.
//
// The weights multiply as an embedded broadcast, w the second operand:
// with W a NaN a = w·τ never joins the aggregate (it agrees with no sign),
// and with U the τ that join are not NaN, so which NaN operand a product
// keeps never shows.
func fused512Body(a *asm, k fkind, masked bool) func() {
	dt, wt := k.dt, k.wt
	sz := size(dt)
	sfx, k7 := "", ""
	if masked {
		sfx, k7 = "tail", "K7, "
	}
	mem := func(r string) string { return fmt.Sprintf("(%s)(CX*%d)", r, sz) }
	load512(a, dt, mem("SI"), 0, masked)
	for i := 0; i < maxFused; i++ {
		modelGuard(a, i, "voted"+sfx, "DX")
		t := 1 + i
		load512(a, dt, mem(fmt.Sprintf("R%d", 8+i)), t, masked)
		a.op("VSUBPS Z0, Z%d, Z%d", t, t) // τ = θ − θ₀
		a.op("VPANDD Z28, Z%d, Z12", t)
		a.op("VPCMPUD.BCST $5, %d(BX), Z12, %sK1", argThr+32*i, k7) // |τ| ≥ thr
		noeq := fmt.Sprintf("noeq%d%s", i, sfx)
		flagTest(a, tiesFlagEq, noeq)
		a.op("VPCMPUD.BCST $0, %d(BX), Z12, %sK6", argThr+32*i, k7) // |τ| = thr
		a.op("KMOVW K6, AX")
		a.op("POPCNTL AX, AX")
		a.op("ADDQ AX, %d(BX)", argEqual+8*i)
		a.label(noeq)
		a.op("VMOVAPS.Z Z%d, K1, Z%d", t, t)
		if z := keptReg512(i); z > 0 {
			a.op("VPADDD Z27, Z%d, K1, Z%d", z, z)
		} else {
			a.op("KMOVW K1, AX")
			a.op("POPCNTL AX, AX")
			a.op("ADDQ AX, %d(BX)", argKept+8*i)
		}
		if wt == "W" {
			a.op("VMULPS.BCST %d(BX), Z%d, Z%d", argW+4*i, t, t) // a = w·τ
		}
		if i == 0 {
			a.op("VMAXPS Z31, Z%d, Z10", t)
			a.op("VMINPS Z31, Z%d, Z11", t)
			a.op("VADDPS Z%d, Z31, Z9", t) // s = 0 + v
		} else {
			a.op("VMAXPS Z10, Z%d, Z10", t)
			a.op("VMINPS Z11, Z%d, Z11", t)
			a.op("VADDPS Z%d, Z9, Z9", t)
		}
	}
	a.label("voted" + sfx)
	a.op("VCMPPS %s, Z31, Z10, K2", cmpGT) // some v > 0
	a.op("VCMPPS %s, Z31, Z11, K3", cmpLT) // some v < 0
	a.op("KANDW K2, K3, K4")
	a.op("VPADDD Z27, Z19, K4, Z19") // conflicts
	a.op("VCMPPS %s, Z31, Z9, K4", cmpGT)
	a.op("VPADDD Z27, Z22, K4, Z22") // positive
	// Masked-off lanes read 0, but 0·w is NaN for a NaN or infinite weight:
	// the tail counts only its own lanes.
	a.op("VCMPPS %s, Z31, Z9, %sK1", cmpNGEU, k7) // ¬up: s < 0 or NaN
	a.op("VPADDD Z27, Z21, K1, Z21")              // negative
	a.op("VMOVDQA32.Z Z23, K1, Z12")              // flip
	a.op("KORW K2, K3, K5")
	a.op("VCMPPS %s, Z31, Z9, K5, K4", cmpEQ)
	a.op("VPADDD Z27, Z20, K4, Z20") // zero sum
	a.op("CMPQ %d(BX), $0", argZero)
	a.op("JNE zero%s", sfx)
	a.label("back" + sfx)
	for i := 0; i < maxFused; i++ {
		modelGuard(a, i, "summed"+sfx, "DX")
		t := 1 + i
		a.op("VPXORD Z12, Z%d, Z15", t)
		a.op("VCMPPS %s, Z31, Z15, K2", cmpGT) // v agrees with the vote
		ar := t
		if wt == "U" {
			a.op("VMULPS.BCST %d(BX), Z%d, Z15", argW+4*i, t) // a = w·τ
			ar = 15
		}
		if i == 0 {
			a.op("VADDPS.Z Z31, Z%d, K2, Z13", ar) // num = a + 0
			a.op("VMOVAPS.Z Z30, K2, Z14")
		} else {
			a.op("VADDPS Z13, Z%d, K2, Z13", ar) // a + num
			a.op("VADDPS Z14, Z30, K2, Z14")
		}
	}
	a.label("summed" + sfx)
	flagTest(a, tiesFlagMean, "nodiv"+sfx)
	a.op("VMAXPS Z30, Z14, Z14") // a zero divisor becomes 1
	a.op("VDIVPS Z14, Z13, Z13")
	a.label("nodiv" + sfx)
	a.op("VMULPS Z13, Z29, Z13") // λ·τₘ
	a.op("VADDPS Z13, Z0, Z13")  // θ₀ + λ·τₘ
	dst := mem("DI")
	switch dt {
	case "F32":
		a.op("VMOVUPS Z13, %s%s", k7, dst)
	case "F16":
		if masked {
			a.op("VCVTPS2PH $0, Z13, Y13")
			a.op("VMOVDQU16 Y13, K7, %s", dst)
		} else {
			a.op("VCVTPS2PH $0, Z13, %s", dst)
		}
	case "BF16":
		roundBF16_512(a, 13, 17, 26, 27, 25)
		if masked {
			a.op("VMOVDQU16 Y17, K7, %s", dst)
		} else {
			a.op("VMOVDQU32 Y17, %s", dst)
		}
	}
	return func() {
		a.label("zero" + sfx)
		a.op("KORTESTW K4, K4")
		a.op("JZ back%s", sfx)
		a.op("MOVQ %d(BX), AX", argZero)
		a.op("VPBROADCASTD CX, Z15")
		a.op("VPADDD %d(BX), Z15, Z15", argIdx)
		a.op("VPCOMPRESSD Z15, K4, (AX)")
		a.op("KMOVW K4, AX")
		a.op("POPCNTL AX, AX")
		a.op("SHLQ $2, AX")
		a.op("ADDQ AX, %d(BX)", argZero)
		a.op("JMP back%s", sfx)
	}
}

// ---------------------------------------------------------------- AVX2

func fused2All(a *asm) {
	for _, c := range []struct {
		name string
		v    string
	}{{"c7fff", "0x7fff"}, {"c40", "0x40"}, {"cnan", "0x7f800000"}, {"cmag", "0x7fffffff"}, {"csign", "0x80000000"}} {
		for i := 0; i < 8; i++ {
			a.b.WriteString(fmt.Sprintf("DATA %s<>+%d(SB)/4, $%s\n", c.name, 4*i, c.v))
		}
		a.b.WriteString(fmt.Sprintf("GLOBL %s<>(SB), RODATA|NOPTR, $32\n", c.name))
	}
	fusedVariants(func(_, _ int, k fkind) { fused2(a, k) })
}

// fused2heldMax is how many τ vectors the AVX2 kernels keep between the
// vote and the aggregate; the aggregate recomputes the others from the
// inputs (L1 hits).
const fused2heldMax = 7

// counter2 is one count of an AVX2 kernel: lanes of Yy (y ≥ 0, the mask
// subtracted: −1 per lane), or mask bits popcounted into the memory at mem.
type counter2 struct {
	y   int
	mem string
}

func (c counter2) add(a *asm, mask int) {
	if c.y >= 0 {
		a.op("VPSUBD Y%d, Y%d, Y%d", mask, c.y, c.y)
		return
	}
	a.op("VMOVMSKPS Y%d, AX", mask)
	a.op("POPCNTL AX, AX")
	a.op("ADDQ AX, %s", c.mem)
}

// fused2 takes 8 elements per step, n a multiple of 8; bf16 takes 16 per
// step, n a multiple of 16, in two halves widened by unpacking against
// zero (one instruction): half A holds elements 0–3 and 8–11, half B 4–7
// and 12–15, and VPACKUSDW of the two puts the output back in order.
// Registers:
//
//	BX args, CX element index, SI θ₀, DI output, R8.. model i's θ,
//	AX DX temporaries (DX: half A's zero-sum mask).
//	Y0..Y6 τ (or a) of models 0..6, Y7 Y8 temporaries, Y9 s then flip,
//	Y10 max v then num, Y11 min v then den, Y12 θ₀, Y14 half A's output,
//	Y15 0.
//	The counts (up, i.e. s ≥ 0, positive, conflicts, zero sum, then each
//	model's kept) take the registers left, Y13 (and Y14 but for bf16), in
//	that order; the others are popcounted into their results.
func fused2(a *asm, k fkind) {
	g := &fused2Gen{a: a, dt: k.dt, wt: k.wt, nm: maxFused, held: fused2heldMax, sz: size(k.dt), pair: k.dt == "BF16"}
	name := tiesName(k, "AVX2")
	lanes := "(a multiple of 8) "
	if g.pair {
		lanes = "(a multiple of 16) "
	}
	declareTies(name, k, lanes)
	a.text(name, "$0-48", sigTies)
	g.prologue()
	a.label("loop")
	a.op("CMPQ CX, n+8(FP)")
	a.op("JAE done")
	stepLen := 8
	if g.pair {
		stepLen = 16
	}
	prefetchLines(a, stepLen*g.sz, g.sz, fmt.Sprintf("%d(BX)", argNM))
	if g.pair {
		g.step("A")
		g.step("B")
	} else {
		g.step("")
	}
	a.op("ADDQ $%d, CX", stepLen)
	a.op("JMP loop")
	a.label("done")
	g.results()
	a.op("VZEROUPPER")
	a.op("RET")
	g.zeroIndices()
}

// fused2Gen writes one AVX2 fused kernel, in steps.
type fused2Gen struct {
	a                           *asm
	dt, wt                      string
	nm, held, sz                int
	pair                        bool // bf16: two halves per step
	cs                          []counter2
	up, pos, conflicts, zeroSum counter2
	kept                        []counter2
}

// prologue loads the pointers and clears the counts.
func (g *fused2Gen) prologue() {
	a := g.a
	a.op("MOVQ a+0(FP), BX")
	a.op("MOVQ %d(BX), SI", argBase)
	a.op("MOVQ %d(BX), DI", argDst)
	for i := 0; i < g.nm; i++ {
		a.op("MOVQ %d(BX), R%d", argModels+8*i, 8+i)
	}
	a.op("VXORPS Y15, Y15, Y15")
	free := []int{13}
	if !g.pair {
		free = append(free, 14)
	}
	mems := []string{"neg+24(FP)", "pos+16(FP)", "conflicts+40(FP)", "zero+32(FP)"}
	for i := 0; i < g.nm; i++ {
		mems = append(mems, fmt.Sprintf("%d(BX)", argKept+8*i))
	}
	g.cs = make([]counter2, len(mems))
	for i, m := range mems {
		g.cs[i] = counter2{-1, m}
		if i < len(free) {
			g.cs[i].y = free[i]
			a.op("VPXOR Y%d, Y%d, Y%d", free[i], free[i], free[i])
		}
		if i < 4 {
			a.op("MOVQ $0, %s", m)
		}
	}
	g.up, g.pos, g.conflicts, g.zeroSum, g.kept = g.cs[0], g.cs[1], g.cs[2], g.cs[3], g.cs[4:]
	a.op("XORQ CX, CX")
}

// mem is register r's element CX.
func (g *fused2Gen) mem(r string) string { return fmt.Sprintf("(%s)(CX*%d)", r, g.sz) }

// load widens the values at r's element CX into Yy (half: "", A, B).
func (g *fused2Gen) load(r string, y int, half string) {
	switch half {
	case "A":
		g.a.op("VPUNPCKLWD %s, Y15, Y%d", g.mem(r), y)
	case "B":
		g.a.op("VPUNPCKHWD %s, Y15, Y%d", g.mem(r), y)
	default:
		load2(g.a, g.dt, g.mem(r), y)
	}
}

// trim loads model i's τ (w·τ for W) into Yt, counting (count) the equal
// and kept values; clobbers Y8.
func (g *fused2Gen) trim(i, t int, half string, count bool) {
	a := g.a
	g.load(fmt.Sprintf("R%d", 8+i), t, half)
	a.op("VSUBPS Y12, Y%d, Y%d", t, t) // τ = θ − θ₀
	if count {
		g.countEq(i, t, half)
	}
	a.op("VPAND cmag<>(SB), Y%d, Y8", t)
	a.op("VPCMPGTD %d(BX), Y8, Y8", argThr+32*i) // |τ| > thr − 1
	a.op("VPAND Y8, Y%d, Y%d", t, t)
	if count {
		g.kept[i].add(a, 8)
	}
	if g.wt == "W" {
		a.op("VBROADCASTSS %d(BX), Y8", argW+4*i)
		a.op("VMULPS Y%d, Y8, Y%d", t, t) // a = w·τ
	}
}

// countEq adds model i's count of |τ| = thr (τ in Yt) when flag
// tiesFlagEq asks for it; clobbers Y8.
func (g *fused2Gen) countEq(i, t int, half string) {
	a := g.a
	noeq := fmt.Sprintf("noeq%d%s", i, half)
	flagTest(a, tiesFlagEq, noeq)
	a.op("VPAND cmag<>(SB), Y%d, Y8", t)
	a.op("VPCMPEQD %d(BX), Y8, Y8", argEq+32*i) // |τ| = thr
	a.op("VMOVMSKPS Y8, AX")
	a.op("POPCNTL AX, AX")
	a.op("ADDQ AX, %d(BX)", argEqual+8*i)
	a.label(noeq)
}

// step writes one step (or half step) over the models.
func (g *fused2Gen) step(half string) {
	g.load("SI", 12, half)
	g.vote(half)
	g.count(half)
	g.aggregate(half)
	g.store(half)
}

// vote trims each model's τ and sums the votes, with their max and min.
func (g *fused2Gen) vote(half string) {
	a := g.a
	for i := 0; i < g.nm; i++ {
		modelGuard(a, i, "voted"+half, fmt.Sprintf("%d(BX)", argNM))
		t := 7
		if i < g.held {
			t = i
		}
		g.trim(i, t, half, true)
		if i == 0 {
			a.op("VMAXPS Y15, Y%d, Y10", t)
			a.op("VMINPS Y15, Y%d, Y11", t)
			a.op("VADDPS Y%d, Y15, Y9", t) // s = 0 + v
		} else {
			a.op("VMAXPS Y10, Y%d, Y10", t)
			a.op("VMINPS Y11, Y%d, Y11", t)
			a.op("VADDPS Y%d, Y9, Y9", t)
		}
	}
	a.label("voted" + half)
}

// count adds the vote's outcome to the counts, writes the zero-sum
// indices if wanted, and sets the flip.
func (g *fused2Gen) count(half string) {
	a := g.a
	a.op("VCMPPS %s, Y15, Y9, Y8", cmpGE) // up
	g.up.add(a, 8)
	a.op("VCMPPS %s, Y15, Y10, Y10", cmpGT) // some v > 0
	a.op("VCMPPS %s, Y15, Y11, Y11", cmpLT) // some v < 0
	a.op("VANDPS Y10, Y11, Y7")
	g.conflicts.add(a, 7)
	a.op("VORPS Y10, Y11, Y10")
	a.op("VCMPPS %s, Y15, Y9, Y11", cmpEQ)
	a.op("VANDPS Y10, Y11, Y11")
	g.zeroSum.add(a, 11)
	a.op("CMPQ %d(BX), $0", argZero)
	a.op("JNE zero%s", half)
	a.label("back" + half)
	a.op("VCMPPS %s, Y15, Y9, Y10", cmpGT)
	g.pos.add(a, 10)
	a.op("VANDNPS csign<>(SB), Y8, Y9") // flip = ¬up & sign
}

// aggregate sums the values that agree with the vote (num, Y10) and
// counts them (den, Y11).
func (g *fused2Gen) aggregate(half string) {
	a := g.a
	for i := 0; i < g.nm; i++ {
		modelGuard(a, i, "summed"+half, fmt.Sprintf("%d(BX)", argNM))
		t, w := i, 7
		if i >= g.held {
			g.trim(i, 7, half, false)
			t, w = 7, 0
		}
		a.op("VXORPS Y9, Y%d, Y8", t)
		a.op("VCMPPS %s, Y15, Y8, Y8", cmpGT) // v agrees with the vote
		ar := t
		if g.wt == "U" {
			a.op("VBROADCASTSS %d(BX), Y%d", argW+4*i, w)
			a.op("VMULPS Y%d, Y%d, Y%d", t, w, w) // a = w·τ
			ar = w
		}
		// A value that does not agree adds +0, as vote2 explains.
		a.op("VANDPS Y8, Y%d, Y%d", ar, ar)
		if i == 0 {
			a.op("VADDPS Y15, Y%d, Y10", ar) // num = a + 0
			a.op("VPSUBD Y8, Y15, Y11")
		} else {
			a.op("VADDPS Y10, Y%d, Y10", ar) // a + num
			a.op("VPSUBD Y8, Y11, Y11")
		}
	}
	a.label("summed" + half)
}

// store writes θ₀ + λ·τₘ in the stored dtype (bf16: half A waits in Y14
// for half B).
func (g *fused2Gen) store(half string) {
	a := g.a
	flagTest(a, tiesFlagMean, "nodiv"+half)
	a.op("VPMAXSD ones32<>(SB), Y11, Y11")
	a.op("VCVTDQ2PS Y11, Y11")
	a.op("VDIVPS Y11, Y10, Y10")
	a.label("nodiv" + half)
	a.op("VBROADCASTSS %d(BX), Y8", argLambda)
	a.op("VMULPS Y10, Y8, Y10")  // λ·τₘ
	a.op("VADDPS Y10, Y12, Y10") // θ₀ + λ·τₘ
	dst := g.mem("DI")
	switch g.dt {
	case "F32":
		a.op("VMOVUPS Y10, %s", dst)
	case "F16":
		a.op("VCVTPS2PH $0, Y10, %s", dst)
	case "BF16":
		a.op("VPSRLD $16, Y10, Y7")
		a.op("VPAND ones32<>(SB), Y7, Y8")
		a.op("VPADDD c7fff<>(SB), Y10, Y11")
		a.op("VPADDD Y8, Y11, Y11")
		a.op("VPSRLD $16, Y11, Y11")
		a.op("VPOR c40<>(SB), Y7, Y7")
		a.op("VPAND cmag<>(SB), Y10, Y8")
		a.op("VPCMPGTD cnan<>(SB), Y8, Y8") // NaN
		if half == "A" {
			a.op("VPBLENDVB Y8, Y7, Y11, Y14")
		} else {
			a.op("VPBLENDVB Y8, Y7, Y11, Y11")
			a.op("VPACKUSDW Y11, Y14, Y11")
			a.op("VMOVDQU Y11, %s", dst)
		}
	}
}

// results adds the register counts to their results and makes negative
// of up.
func (g *fused2Gen) results() {
	a := g.a
	// Register counts in ascending order: hsum clobbers Y0 and Y1.
	var regs []counter2
	for _, c := range g.cs {
		if c.y >= 0 {
			regs = append(regs, c)
		}
	}
	slices.SortFunc(regs, func(p, q counter2) int { return p.y - q.y })
	for _, c := range regs {
		a.op("VMOVDQA Y%d, Y0", c.y)
		hsum(a)
		a.op("ADDQ AX, %s", c.mem)
	}
	a.op("MOVQ n+8(FP), AX")
	a.op("SUBQ neg+24(FP), AX") // negative = n − up
	a.op("MOVQ AX, neg+24(FP)")
}

// zeroIndices writes the zero-sum indices (mask in Y11), in order. SI is
// θ₀'s pointer, reloaded after.
func (g *fused2Gen) zeroIndices() {
	a := g.a
	back := "back"
	if g.pair {
		g.zeroMaskPair()
		back = "bits0"
	} else {
		a.label("zero")
		a.op("VMOVMSKPS Y11, AX")
	}
	a.op("TESTL AX, AX")
	a.op("JZ %s", back)
	a.op("MOVQ %d(BX), SI", argZero)
	a.label("bits")
	a.op("TZCNTL AX, DX")
	a.op("ADDL CX, DX")
	a.op("ADDL %d(BX), DX", argIdx)
	a.op("MOVL DX, (SI)")
	a.op("ADDQ $4, SI")
	a.op("BLSRL AX, AX")
	a.op("JNZ bits")
	a.op("MOVQ SI, %d(BX)", argZero)
	if g.pair {
		a.label("bits0")
	}
	a.op("MOVQ %d(BX), SI", argBase)
	if g.pair {
		a.op("JMP backB")
	} else {
		a.op("JMP back")
	}
}

// zeroMaskPair gathers the zero-sum masks of bf16's two halves into AX,
// in element order.
func (g *fused2Gen) zeroMaskPair() {
	a := g.a
	a.label("zeroA")
	a.op("VMOVMSKPS Y11, DX")
	a.op("JMP backA")
	a.label("zeroB")
	a.op("VMOVMSKPS Y11, AX")
	// Bit k of the halves is element k (A) or k + 4 (B), plus 4 from k = 4.
	a.op("MOVL DX, SI")
	a.op("ANDL $0x0f, SI")
	a.op("ANDL $0xf0, DX")
	a.op("SHLL $4, DX")
	a.op("ORL DX, SI")
	a.op("MOVL AX, DX")
	a.op("ANDL $0x0f, DX")
	a.op("SHLL $4, DX")
	a.op("ORL DX, SI")
	a.op("ANDL $0xf0, AX")
	a.op("SHLL $8, AX")
	a.op("ORL SI, AX")
}
