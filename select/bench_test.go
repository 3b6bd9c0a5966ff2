package topk

import (
	"math"
	"math/rand/v2"
	"testing"
)

// bf16Taus returns n task-vector values as a bf16 merge sees them: the
// difference of a bf16 weight and its bf16 fine-tune, in float32.
func bf16Taus(n int) []float32 {
	rng := rand.New(rand.NewPCG(1, 2))
	round := func(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ 0xffff) }
	xs := make([]float32, n)
	for i := range xs {
		base := round(float32(rng.NormFloat64() * 0.02))
		d := rng.NormFloat64() * 0.0005
		if rng.IntN(50) == 0 {
			d *= 20
		}
		xs[i] = round(base+float32(d)) - base
	}
	return xs
}

// BenchmarkAddHigh is the sample's histogram update per value.
func BenchmarkAddHigh(b *testing.B) {
	xs := bf16Taus(1 << 16)
	side := make([]uint32, 0, 1<<16)
	var h Hist
	b.Run("AddHigh", func(b *testing.B) {
		for b.Loop() {
			h.AddHigh(xs)
		}
	})
	b.Run("AddHighSide", func(b *testing.B) {
		for b.Loop() {
			side = side[:0]
			h.AddHighSide(xs, &side)
		}
	})
}
