//go:build !noasm && !purego && gc

package kernels

func init() {
	avx512Set.LowRank = lowRankAVX512
	avx2Set.LowRank = lowRankAVX2
}

// lowRankAVX512 is LowRank with AVX-512: strips of 64 (then 16) columns
// in ZMM registers; the rest as lowRankAVX2 does it.
func lowRankAVX512(acc, l, r []float32, stride int) {
	if len(l) == 0 {
		clear(acc)
		return
	}
	n := len(acc) &^ 15
	if n > 0 {
		_ = r[(len(l)-1)*stride+n-1]
		lowRankColsAVX512(acc[:n], l, &r[0], stride)
	}
	if n < len(acc) {
		lowRankAVX2(acc[n:], l, r[n:], stride)
	}
}

// lowRankAVX2 is LowRank with AVX2: strips of 32 (then 8) columns whose
// sums stay in registers over the whole rank; the last len%8 columns go
// through the Go loop.
func lowRankAVX2(acc, l, r []float32, stride int) {
	if len(l) == 0 {
		clear(acc)
		return
	}
	n := len(acc) &^ 7
	if n > 0 {
		_ = r[(len(l)-1)*stride+n-1]
		lowRankColsAVX2(acc[:n], l, &r[0], stride)
	}
	if n < len(acc) {
		lowRankGeneric(acc[n:], l, r[n:], stride)
	}
}

// lowRankColsAVX2 is LowRank for len(acc) a multiple of 8 and len(l) ≥ 1,
// r pointing at row 0 of len(l) rows of stride values.
//
//go:noescape
func lowRankColsAVX2(acc, l []float32, r *float32, stride int)

// lowRankColsAVX512 is LowRank for len(acc) a multiple of 16 and len(l) ≥
// 1, r pointing at row 0 of len(l) rows of stride values.
//
//go:noescape
func lowRankColsAVX512(acc, l []float32, r *float32, stride int)
