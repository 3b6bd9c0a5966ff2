//go:build !noasm && !purego && gc

package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestNEONStatsCalls splits the statistics kernels' work into calls of one
// and two chunks, and below one chunk (one a call), against the reference.
func TestNEONStatsCalls(t *testing.T) {
	defer func(c int) { neonCallMax = c }(neonCallMax)
	r := rand.New(rand.NewPCG(47, 48))
	tau, other := randFloats(r, 5*SumChunk+77), randFloats(r, 5*SumChunk+77)
	for _, c := range []int{16, SumChunk, 2 * SumChunk} {
		neonCallMax = c
		what := fmt.Sprintf("calls of %d", c)
		checkNorms(t, []*Set{neonSet}, what, tau, randWords(r, 2*Words(len(tau))), 1)
		checkDot(t, []*Set{neonSet}, what, tau, other, 2)
		checkTrimWords(t, []*Set{neonSet}, what, tau, AbsBits(tau[3]), 3)
	}
}
