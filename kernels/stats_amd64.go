//go:build !noasm && !purego && gc

package kernels

func init() {
	for _, s := range []*Set{avx512Set, avx2Set} {
		s.Norms, s.Dot, s.TrimWords = normsGeneric, dotGeneric, trimWordsGeneric
	}
}
