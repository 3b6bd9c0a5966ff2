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

// BenchmarkAddHigh is a sample's histogram update: 64K values in calls of
// 4096 (a sampled run), then a read of the counts.
func BenchmarkAddHigh(b *testing.B) {
	xs := bf16Taus(1 << 16)
	side := make([]uint32, 0, 1<<16)
	var h Hist
	const run = 4096
	b.Run("AddHigh", func(b *testing.B) {
		for b.Loop() {
			for i := 0; i < len(xs); i += run {
				h.AddHigh(xs[i : i+run])
			}
			h.Total()
		}
	})
	b.Run("AddHighSide", func(b *testing.B) {
		for b.Loop() {
			side = side[:0]
			for i := 0; i < len(xs); i += run {
				h.AddHighSide(xs[i:i+run], &side)
			}
			h.Total()
		}
	})
}
