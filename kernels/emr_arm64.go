//go:build !noasm && !purego && gc

package kernels

func init() { neonSet.EMRElect = func(b *EMRBlock) { emrElectAsm(b, emrElectNEON) } }
