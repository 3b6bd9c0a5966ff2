//go:build !noasm && !purego && gc

package kernels

import "github.com/klauspost/cpuid/v2"

// detect offers NEON and the Go reference. FP and ASIMD are mandatory for
// Go's arm64 port (the compiler emits them unconditionally), so NEON is
// dropped only when cpuid positively reports one without the other; a
// platform where cpuid cannot read the features at all (it reports neither)
// keeps it.
func detect() []*Set {
	fp, simd := cpuid.CPU.Has(cpuid.FP), cpuid.CPU.Has(cpuid.ASIMD)
	if fp == simd {
		return []*Set{neonSet, Generic}
	}
	return []*Set{Generic}
}
