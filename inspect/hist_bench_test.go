package inspect

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkBlockHist counts one 32K block of task-vector-like values whose
// magnitudes fall in a few hundred high bins.
func BenchmarkBlockHist(b *testing.B) {
	r := rand.New(rand.NewPCG(53, 54))
	tau := make([]float32, 32768)
	for i := range tau {
		tau[i] = float32(r.NormFloat64()*1e-3) - float32(r.NormFloat64()*1e-3)
		if r.IntN(4) == 0 {
			tau[i] = 0
		}
	}
	h := new(blockHist)
	b.SetBytes(4 * int64(len(tau)))
	for b.Loop() {
		h.add(tau)
	}
}
