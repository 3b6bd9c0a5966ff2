//go:build !noasm && !purego && gc

package kernels

func init() {
	avx512Set.LowRank = lowRankAVX2
	avx2Set.LowRank = lowRankAVX2
}

// lowRankAVX2 is LowRank with the four-rank sweep in AVX2, 8 lanes; the
// last len%8 columns go through the Go step.
func lowRankAVX2(acc, l, r []float32, stride int) {
	lowRankWith(acc, l, r, stride, func(acc, a, b, c, d []float32, l *[4]float32) {
		n := len(acc) &^ 7
		if n > 0 {
			lowRankStep4AVX2(acc[:n], a[:n], b[:n], c[:n], d[:n], l)
		}
		lowRankStep4Generic(acc[n:], a[n:], b[n:], c[n:], d[n:], l)
	})
}

// lowRankStep4AVX2 is lowRankStep4Generic for len(acc) a multiple of 8.
//
//go:noescape
func lowRankStep4AVX2(acc, a, b, c, d []float32, l *[4]float32)
