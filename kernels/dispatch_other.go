//go:build noasm || purego || !gc || !(amd64 || arm64)

package kernels

func detect() []*Set { return []*Set{Generic} }
