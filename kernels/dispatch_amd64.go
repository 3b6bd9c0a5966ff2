//go:build !noasm

package kernels

// detect is replaced when the AVX2 / AVX-512 sets land.
func detect() []*Set { return []*Set{Generic} }
