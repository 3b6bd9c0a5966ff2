//go:build !noasm && !purego && gc

package kernels

func init() {
	avx512Set.EMRElect = func(b *EMRBlock) { emrElectAsm(b, emrElectAVX512) }
	avx2Set.EMRElect = func(b *EMRBlock) { emrElectAsm(b, emrElectAVX2) }
}
