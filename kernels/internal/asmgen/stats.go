package main

import "fmt"

// Statistics kernels (kernels/stats.go): Norms, Dot and TrimWords over whole
// chunks of 1024 elements; the Go side takes a short last chunk and writes
// NaN sums as SumNaN.
//
// A chunk's four partial sums are the lanes of one YMM register of float64
// (the same on AVX-512: a lane holds the elements x ≡ j mod 4 in order, so
// wider vectors would change the order), starting at +0; the chunk's sum is
// (s0 + s1) + (s2 + s3): VHADDPD gives both halves, one VADDSD adds them.
// Products of float32 values are exact in float64, so VMULPD then VADDPD is
// the reference's product and sum. Each lane's sum is one chain of
// dependent additions, so the kernels run statsLockstep chunks side by side
// (independent chains), then the odd chunk alone.
//
// Mask words: AVX2 takes 8 elements a compare (VMOVMSKPS), AVX-512 16
// (KMOVW); the bits of a word go in with shifts.
const (
	sigNorms     = "(tau *float32, chunks int, l1 *float64, sq *float64, pos *uint64, neg *uint64) (nonzero int)"
	sigDot       = "(a *float32, b *float32, chunks int, dot *float64)"
	sigTrimWords = "(tau *float32, chunks int, gt uint32, kept *uint64, sign *uint64, removed *float64) (count int)"
)

const (
	chunkElems    = 1024
	chunkBytes    = 4 * chunkElems
	chunkWords    = chunkElems / 64
	statsLockstep = 2
)

// statsGen writes one statistics kernel for one ISA.
type statsGen struct {
	a    *asm
	z    bool // AVX-512
	isa  string
	step int // elements per mask compare: 8 or 16
}

func newStatsGen(a *asm, z bool) *statsGen {
	g := &statsGen{a: a, z: z, isa: "AVX2", step: 8}
	if z {
		g.isa, g.step = "AVX512", 16
	}
	return g
}

// chunks emits the loop over the chunks: statsLockstep at a time while
// there are that many (label prefix "pair"), then one at a time. DX counts the
// chunks left; body(l, lbl) emits the code for l chunks side by side; adv
// lists the pointers and their bytes per chunk.
func (g *statsGen) chunks(adv []ptr, body func(l int, lbl string)) {
	a := g.a
	a.label("pairs")
	a.op("CMPQ DX, $%d", statsLockstep)
	a.op("JB single")
	body(statsLockstep, "pair")
	for _, p := range adv {
		a.op("ADDQ $%d, %s", statsLockstep*p.sz, p.r)
	}
	a.op("SUBQ $%d, DX", statsLockstep)
	a.op("JMP pairs")
	a.label("single")
	a.op("TESTQ DX, DX")
	a.op("JZ done")
	body(1, "one")
	for _, p := range adv {
		a.op("ADDQ $%d, %s", p.sz, p.r)
	}
	a.op("DECQ DX")
	a.op("JMP single")
	a.label("done")
}

// words emits the loop over the 16 words of a chunk: CX counts them, body
// emits one word of each of l chunks (chunk k at k·chunkBytes from SI), and
// each pointer of adv advances by its bytes per word; afterwards they are
// back at the chunk's start.
func (g *statsGen) words(lbl string, adv []ptr, body func()) {
	a := g.a
	a.op("MOVQ $%d, CX", chunkWords)
	a.label(lbl + "words")
	body()
	for _, p := range adv {
		a.op("ADDQ $%d, %s", p.sz, p.r)
	}
	a.op("DECQ CX")
	a.op("JNZ %swords", lbl)
	for _, p := range adv {
		a.op("SUBQ $%d, %s", chunkWords*p.sz, p.r)
	}
}

// sumInto adds the 4 float64 lanes of Ysrc into the accumulator Yacc.
func (g *statsGen) sumInto(acc, src int) { g.a.op("VADDPD Y%d, Y%d, Y%d", src, acc, acc) }

// store writes the chunk sum of Yacc, (s0 + s1) + (s2 + s3), to mem and
// zeroes Yacc (clobbers Y0, Y1).
func (g *statsGen) store(acc int, mem string) {
	a := g.a
	a.op("VEXTRACTF128 $1, Y%d, X0", acc)
	a.op("VHADDPD X0, X%d, X0", acc) // [s0+s1, s2+s3]
	a.op("VPERMILPD $1, X0, X1")
	a.op("VADDSD X1, X0, X0")
	a.op("VMOVSD X0, %s", mem)
	a.op("VXORPD Y%d, Y%d, Y%d", acc, acc, acc)
}

// bits ORs the mask bits in AX, shifted to bit sh, into word register r
// (sh 0 sets it).
func (g *statsGen) bits(r string, sh int, src string) {
	a := g.a
	if sh == 0 {
		a.op("MOVQ %s, %s", src, r)
		return
	}
	a.op("SHLQ $%d, %s", sh, src)
	a.op("ORQ %s, %s", src, r)
}

func (g *statsGen) all() {
	g.norms()
	g.dot()
	g.trimWords()
	g.lowBits()
}

// norms: SI tau, DX chunks, DI l1, BX sq, R10 pos, R11 neg, R12 nonzero;
// R8, R9 a word's pos and neg bits. Y15 the float64 magnitude mask, Y14 0
// and Y13 0x80000000 (Z on AVX-512); accumulators Y8+2k (Σ|τ|) and Y9+2k
// (Στ²) of chunk k.
func (g *statsGen) norms() {
	a := g.a
	name := "norms" + g.isa
	declare(name, sigNorms, name+" runs Norms over whole chunks: sums to l1 and sq (NaNs as they come), words ORed into pos and neg.")
	a.text(name, "$0-56", sigNorms)
	a.op("MOVQ tau+0(FP), SI")
	a.op("MOVQ chunks+8(FP), DX")
	a.op("MOVQ l1+16(FP), DI")
	a.op("MOVQ sq+24(FP), BX")
	a.op("MOVQ pos+32(FP), R10")
	a.op("MOVQ neg+40(FP), R11")
	a.op("XORQ R12, R12")
	a.op("MOVQ $0x7fffffffffffffff, AX")
	a.op("MOVQ AX, X15")
	a.op("VPBROADCASTQ X15, Y15")
	if g.z {
		a.op("VPXORD Z14, Z14, Z14")
		broadcast512(a, "$0x80000000", 13)
	} else {
		a.op("VPXOR Y14, Y14, Y14")
		broadcast2(a, "0x80000000", 13)
	}
	for y := 8; y < 8+2*statsLockstep; y++ {
		a.op("VXORPD Y%d, Y%d, Y%d", y, y, y)
	}
	g.chunks([]ptr{{"SI", chunkBytes}, {"DI", 8}, {"BX", 8}, {"R10", 8 * chunkWords}, {"R11", 8 * chunkWords}}, func(l int, lbl string) {
		g.words(lbl, []ptr{{"SI", 256}, {"R10", 8}, {"R11", 8}}, func() {
			for k := 0; k < l; k++ {
				g.normsWord(k)
			}
		})
		for k := 0; k < l; k++ {
			g.store(8+2*k, fmt.Sprintf("%d(DI)", 8*k))
			g.store(9+2*k, fmt.Sprintf("%d(BX)", 8*k))
		}
	})
	a.op("MOVQ R12, nonzero+48(FP)")
	a.op("VZEROUPPER")
	a.op("RET")
}

// normsWord does one word of chunk k.
func (g *statsGen) normsWord(k int) {
	a := g.a
	base := chunkBytes * k
	for s := 0; s < 64; s += g.step {
		mem := fmt.Sprintf("%d(SI)", base+4*s)
		if g.z {
			a.op("VMOVDQU32 %s, Z0", mem)
			a.op("VPCMPD $6, Z14, Z0, K1")  // > 0: positive
			a.op("VPCMPUD $6, Z13, Z0, K2") // > 0x80000000: negative
			a.op("KMOVW K1, AX")
			a.op("KMOVW K2, R13")
		} else {
			a.op("VMOVDQU %s, Y0", mem)
			a.op("VPCMPGTD Y14, Y0, Y1") // > 0: positive
			a.op("VPXOR Y13, Y0, Y2")
			a.op("VPCMPGTD Y14, Y2, Y2") // > 0x80000000: negative
			a.op("VMOVMSKPS Y1, AX")
			a.op("VMOVMSKPS Y2, R13")
		}
		g.bits("R8", s, "AX")
		g.bits("R9", s, "R13")
		for q := 0; q < g.step; q += 4 {
			a.op("VCVTPS2PD %d(SI), Y3", base+4*(s+q))
			a.op("VANDPD Y15, Y3, Y4")
			g.sumInto(8+2*k, 4)
			a.op("VMULPD Y3, Y3, Y3")
			g.sumInto(9+2*k, 3)
		}
	}
	off := 8 * chunkWords * k
	a.op("ORQ R8, %d(R10)", off)
	a.op("ORQ R9, %d(R11)", off)
	a.op("ORQ R9, R8")
	a.op("POPCNTQ R8, R8")
	a.op("ADDQ R8, R12")
}

// dot: SI a, R10 b, DX chunks, DI dot; accumulators Y8+k.
func (g *statsGen) dot() {
	a := g.a
	name := "dot" + g.isa
	declare(name, sigDot, name+" runs Dot over whole chunks (NaNs as they come).")
	a.text(name, "$0-32", sigDot)
	a.op("MOVQ a+0(FP), SI")
	a.op("MOVQ b+8(FP), R10")
	a.op("MOVQ chunks+16(FP), DX")
	a.op("MOVQ dot+24(FP), DI")
	for y := 8; y < 8+statsLockstep; y++ {
		a.op("VXORPD Y%d, Y%d, Y%d", y, y, y)
	}
	g.chunks([]ptr{{"SI", chunkBytes}, {"R10", chunkBytes}, {"DI", 8}}, func(l int, lbl string) {
		g.words(lbl, []ptr{{"SI", 256}, {"R10", 256}}, func() {
			for k := 0; k < l; k++ {
				for q := 0; q < 64; q += 4 {
					off := chunkBytes*k + 4*q
					a.op("VCVTPS2PD %d(SI), Y0", off)
					a.op("VCVTPS2PD %d(R10), Y1", off)
					a.op("VMULPD Y1, Y0, Y0")
					g.sumInto(8+k, 0)
				}
			}
		})
		for k := 0; k < l; k++ {
			g.store(8+k, fmt.Sprintf("%d(DI)", 8*k))
		}
	})
	a.op("VZEROUPPER")
	a.op("RET")
}

// trimWords: SI tau, DX chunks, R10 kept, R11 sign, DI removed, R12 count;
// R8, R9 a word's kept and sign bits. Y15 0x7fffffff, Y14 gt (Z on
// AVX-512; AVX2 compares signed: the Go side passes gt ≤ 0x7fffffff),
// Y13 0 on AVX-512; accumulators Y8+k.
func (g *statsGen) trimWords() {
	a := g.a
	name := "trimWords" + g.isa
	doc := name + " runs TrimWords over whole chunks (NaN sums as they come)."
	if !g.z {
		doc += " gt is at most 0x7fffffff."
	}
	declare(name, sigTrimWords, doc)
	a.text(name, "$0-56", sigTrimWords)
	a.op("MOVQ tau+0(FP), SI")
	a.op("MOVQ chunks+8(FP), DX")
	a.op("MOVQ kept+24(FP), R10")
	a.op("MOVQ sign+32(FP), R11")
	a.op("MOVQ removed+40(FP), DI")
	a.op("XORQ R12, R12")
	if g.z {
		broadcast512(a, "$0x7fffffff", 15)
		broadcast512(a, "gt+16(FP)", 14)
		a.op("VPXORD Z13, Z13, Z13")
	} else {
		broadcast2(a, "0x7fffffff", 15)
		a.op("MOVL gt+16(FP), AX")
		a.op("MOVD AX, X14")
		a.op("VPBROADCASTD X14, Y14")
	}
	for y := 8; y < 8+statsLockstep; y++ {
		a.op("VXORPD Y%d, Y%d, Y%d", y, y, y)
	}
	g.chunks([]ptr{{"SI", chunkBytes}, {"DI", 8}, {"R10", 8 * chunkWords}, {"R11", 8 * chunkWords}}, func(l int, lbl string) {
		g.words(lbl, []ptr{{"SI", 256}, {"R10", 8}, {"R11", 8}}, func() {
			for k := 0; k < l; k++ {
				g.trimWord(k)
			}
		})
		for k := 0; k < l; k++ {
			g.store(8+k, fmt.Sprintf("%d(DI)", 8*k))
		}
	})
	a.op("MOVQ R12, count+48(FP)")
	a.op("VZEROUPPER")
	a.op("RET")
}

// trimWord does one word of chunk k: Y2 (Z2) holds the removed magnitudes,
// 0 where kept.
func (g *statsGen) trimWord(k int) {
	a := g.a
	base := chunkBytes * k
	for s := 0; s < 64; s += g.step {
		mem := fmt.Sprintf("%d(SI)", base+4*s)
		if g.z {
			a.op("VMOVDQU32 %s, Z0", mem)
			a.op("VPANDD Z15, Z0, Z1")
			a.op("VPCMPUD $6, Z14, Z1, K1") // a > gt: kept
			a.op("VPCMPD $1, Z13, Z0, K2")  // < 0: the sign bit
			a.op("KNOTW K1, K3")
			a.op("VMOVDQA32.Z Z1, K3, Z2")
			a.op("KMOVW K1, AX")
			a.op("KMOVW K2, R13")
		} else {
			a.op("VMOVDQU %s, Y0", mem)
			a.op("VPAND Y15, Y0, Y1")
			a.op("VPCMPGTD Y14, Y1, Y2") // a > gt: kept
			a.op("VMOVMSKPS Y2, AX")
			a.op("VMOVMSKPS Y0, R13") // the sign bits
			a.op("VPANDN Y1, Y2, Y2")
		}
		g.bits("R8", s, "AX")
		g.bits("R9", s, "R13")
		for q := 0; q < g.step; q += 4 {
			src := "X2"
			if q > 0 {
				if g.z {
					a.op("VEXTRACTF32X4 $%d, Z2, X3", q/4)
				} else {
					a.op("VEXTRACTF128 $1, Y2, X3")
				}
				src = "X3"
			}
			a.op("VCVTPS2PD %s, Y4", src)
			g.sumInto(8+k, 4)
		}
	}
	off := 8 * chunkWords * k
	a.op("MOVQ R8, %d(R10)", off)
	a.op("ANDQ R8, R9")
	a.op("MOVQ R9, %d(R11)", off)
	a.op("POPCNTQ R8, R8")
	a.op("ADDQ R8, R12")
}

// LowBits kernels: groups of 64 elements, tested for any magnitude with
// low bits at once (such values are rare in task vectors of bf16 or f16
// models). Before writing a group's values the kernel checks that 64 more
// fit in the list, and returns where it stopped otherwise; the Go side
// goes on with the reference.
const sigLowBits = "(tau *float32, n int, list *uint32, room int) (done, count int)"

// lowBits: SI tau, CX groups of 64 left, DI list, R9 room, R8 count, R10
// done.
func (g *statsGen) lowBits() {
	a := g.a
	name := "lowBits" + g.isa
	declare(name, sigLowBits, name+" runs LowBits over n (a multiple of 64) values while 64 more fit in room; done is where it stopped.")
	a.text(name, "$0-48", sigLowBits)
	a.op("MOVQ tau+0(FP), SI")
	a.op("MOVQ n+8(FP), CX")
	a.op("SHRQ $6, CX")
	a.op("MOVQ list+16(FP), DI")
	a.op("MOVQ room+24(FP), R9")
	a.op("XORQ R8, R8")
	a.op("XORQ R10, R10")
	if g.z {
		broadcast512(a, "$0x7fffffff", 15)
		broadcast512(a, "$0xffff", 14)
	} else {
		broadcast2(a, "0x7fffffff", 15)
		broadcast2(a, "0xffff", 14)
		a.op("VPXOR Y13, Y13, Y13")
	}
	a.op("TESTQ CX, CX")
	a.op("JZ done")
	a.label("group")
	if g.z {
		for k := 0; k < 4; k++ {
			a.op("VPANDD %d(SI), Z15, Z%d", 64*k, k)
			a.op("VPTESTMD Z14, Z%d, K%d", k, k+1)
		}
		a.op("KORW K1, K2, K5")
		a.op("KORW K3, K4, K6")
		a.op("KORTESTW K5, K6")
	} else {
		for k := 0; k < 8; k++ {
			a.op("VPAND %d(SI), Y15, Y%d", 32*k, k)
		}
		a.op("VPOR Y1, Y0, Y8")
		for k := 2; k < 8; k++ {
			a.op("VPOR Y%d, Y8, Y8", k)
		}
		a.op("VPTEST Y14, Y8")
	}
	a.op("JZ next")
	a.op("MOVQ R9, AX")
	a.op("SUBQ R8, AX")
	a.op("CMPQ AX, $64")
	a.op("JB done")
	if g.z {
		for k := 0; k < 4; k++ {
			// To a register, then a whole store (room for 64 is checked):
			// a compressing store to memory is slow on some CPUs.
			a.op("VPCOMPRESSD Z%d, K%d, Z5", k, k+1)
			a.op("VMOVDQU32 Z5, (DI)(R8*4)")
			a.op("KMOVW K%d, AX", k+1)
			a.op("POPCNTL AX, AX")
			a.op("ADDQ AX, R8")
		}
	} else {
		for k := 0; k < 8; k++ {
			a.op("VPAND Y%d, Y14, Y8", k)
			a.op("VPCMPEQD Y13, Y8, Y8") // no low bits
			a.op("VMOVMSKPS Y8, AX")
			a.op("XORL $0xff, AX")
			a.op("JZ skip%d", k)
			a.label(fmt.Sprintf("bits%d", k))
			a.op("TZCNTL AX, R11")
			a.op("MOVL %d(SI)(R11*4), R12", 32*k)
			a.op("ANDL $0x7fffffff, R12")
			a.op("MOVL R12, (DI)(R8*4)")
			a.op("INCQ R8")
			a.op("BLSRL AX, AX")
			a.op("JNZ bits%d", k)
			a.label(fmt.Sprintf("skip%d", k))
		}
	}
	a.label("next")
	a.op("ADDQ $256, SI")
	a.op("ADDQ $64, R10")
	a.op("DECQ CX")
	a.op("JNZ group")
	a.label("done")
	a.op("MOVQ R10, done+32(FP)")
	a.op("MOVQ R8, count+40(FP)")
	a.op("VZEROUPPER")
	a.op("RET")
}
