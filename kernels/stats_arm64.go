//go:build !noasm && !purego && gc

package kernels

func init() {
	for _, s := range []*Set{neonSet} {
		s.Norms, s.Dot, s.TrimWords = normsGeneric, dotGeneric, trimWordsGeneric
	}
}
