//go:build !noasm && !purego && gc

package kernels

func init() { neonSet.LowRank = lowRankNEON }

// lowRankNEON is LowRank with NEON: strips of 16 (then 4) columns whose
// sums stay in registers over the whole rank; the last len%4 columns go
// through the Go loop.
func lowRankNEON(acc, l, r []float32, stride int) {
	if len(l) == 0 {
		clear(acc)
		return
	}
	n := len(acc) &^ 3
	if n > 0 {
		_ = r[(len(l)-1)*stride+n-1]
		lowRankColsNEON(acc[:n], l, &r[0], stride)
	}
	if n < len(acc) {
		lowRankGeneric(acc[n:], l, r[n:], stride)
	}
}

// lowRankColsNEON is LowRank for len(acc) a multiple of 4 and len(l) ≥ 1,
// r pointing at row 0 of len(l) rows of stride values.
//
//go:noescape
func lowRankColsNEON(acc, l []float32, r *float32, stride int)
