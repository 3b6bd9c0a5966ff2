package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// lowRankRef is LowRank by the definition: per element, the sum over the
// rank in order from the first product (mul and add pin the NaN a result
// carries, as in every kernel's reference).
func lowRankRef(acc, l, r []float32, stride int) {
	for j := range acc {
		var s float32
		for k := range l {
			p := mul(l[k], r[k*stride+j])
			if k == 0 {
				s = p
			} else {
				s = add(s, p)
			}
		}
		acc[j] = s
	}
}

func lowRankValue(rng *rand.Rand) float32 {
	switch rng.IntN(40) {
	case 0:
		return float32(math.NaN())
	case 1:
		return float32(math.Inf(1 - 2*rng.IntN(2)))
	case 2:
		return 0x1p-140
	case 3:
		return float32(math.Copysign(0, -1))
	}
	return float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(9)-4)))
}

// Every set's LowRank gives the reference's bits on every length and rank,
// with NaN, infinities, signed zeros and subnormals among the values, and
// leaves the columns past len(acc) alone.
func TestLowRankMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range Available() {
		for trial := range 400 {
			n, rank := rng.IntN(150), rng.IntN(11)
			stride := n + rng.IntN(5)
			l := make([]float32, rank)
			r := make([]float32, rank*stride+1)
			for i := range l {
				l[i] = lowRankValue(rng)
			}
			for i := range r {
				r[i] = lowRankValue(rng)
			}
			want := make([]float32, n+1)
			got := make([]float32, n+1)
			for i := range got {
				got[i] = lowRankValue(rng)
			}
			want[n] = got[n]
			lowRankRef(want[:n], l, r, stride)
			s.LowRank(got[:n], l, r, stride)
			for j := range want {
				if math.Float32bits(got[j]) != math.Float32bits(want[j]) {
					t.Fatalf("%s trial %d (n %d, rank %d): acc[%d] = %v (%#x), want %v (%#x)", s.Name, trial, n, rank, j, got[j], math.Float32bits(got[j]), want[j], math.Float32bits(want[j]))
				}
			}
		}
	}
}

// Golden: a 1×2 by 2×3 product worked by hand.
func TestLowRankGolden(t *testing.T) {
	for _, s := range Available() {
		acc := make([]float32, 3)
		s.LowRank(acc, []float32{2, -1}, []float32{1, 0.5, -3, 4, 1, 0.25}, 3)
		if want := []float32{2*1 - 4, 2*0.5 - 1, -6 - 0.25}; acc[0] != want[0] || acc[1] != want[1] || acc[2] != want[2] {
			t.Errorf("%s: %v, want %v", s.Name, acc, want)
		}
	}
}

func BenchmarkLowRank(b *testing.B) {
	const n, rank = 512, 64
	l := make([]float32, rank)
	r := make([]float32, rank*n)
	for i := range r {
		r[i] = float32(i%7) * 0.1
	}
	for i := range l {
		l[i] = float32(i) * 0.01
	}
	acc := make([]float32, n)
	for _, s := range Available() {
		b.Run(s.Name, func(b *testing.B) {
			b.SetBytes(4 * n * rank)
			for b.Loop() {
				s.LowRank(acc, l, r, n)
			}
			b.ReportMetric(float64(2*n*rank)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
