//go:build !noasm && !purego && gc

package kernels

func init() {
	neonSet.EMRElect = emrElectGeneric
}
