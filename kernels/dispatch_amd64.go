//go:build !noasm && !purego && gc

package kernels

import "github.com/klauspost/cpuid/v2"

// detect offers AVX-512 (F, BW, VL) and AVX2 (with F16C and BMI1) where the CPU and
// the OS support them, best first, and always the Go reference last. cpuid
// checks the OS saves the wide registers (XCR0), not only the CPU flags.
func detect() []*Set {
	sets := make([]*Set, 0, 3)
	avx2 := cpuid.CPU.Supports(cpuid.AVX, cpuid.AVX2, cpuid.F16C, cpuid.POPCNT, cpuid.BMI1)
	if avx2 && cpuid.CPU.Supports(cpuid.AVX512F, cpuid.AVX512BW, cpuid.AVX512VL) {
		sets = append(sets, avx512Set)
	}
	if avx2 {
		sets = append(sets, avx2Set)
	}
	return append(sets, Generic)
}
