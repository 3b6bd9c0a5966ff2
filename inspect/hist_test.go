package inspect

import (
	"math"
	"math/rand/v2"
	"testing"

	topk "github.com/tiesmm/tiesmm/select"
)

// histValues draws task-vector-like values with zeros, specials and random
// patterns among them.
func histValues(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		switch k := r.IntN(20); {
		case k == 0:
			v[i] = 0
		case k == 1:
			v[i] = math.Float32frombits(r.Uint32())
		case k == 2:
			v[i] = float32([]float64{math.Inf(1), math.Inf(-1), math.NaN(), math.Copysign(0, -1), math.MaxFloat32}[r.IntN(5)])
		default:
			v[i] = float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(40)-30)))
		}
	}
	return v
}

// TestHighHistMatchesSelect counts the same values with blockHist and
// highHist and with select's Hist, in blocks of every small length, and
// compares every bin and the picks.
func TestHighHistMatchesSelect(t *testing.T) {
	r := rand.New(rand.NewPCG(51, 52))
	for _, n := range []int{0, 1, 3, 4, 5, 1000, 100003} {
		vals := histValues(r, n)
		var ref topk.Hist
		ref.AddHigh(vals)
		var w0, w1 blockHist
		for lo, k := 0, 0; lo < n; k++ {
			hi := min(n, lo+1+r.IntN(700))
			if k%2 == 0 {
				w0.add(vals[lo:hi])
			} else {
				w1.add(vals[lo:hi])
			}
			lo = hi
		}
		h := new(highHist)
		h.take(&w0)
		h.take(&w1)
		for b := uint32(0); b < hiBins; b++ {
			if got, want := h.count(b), ref.Count(b); got != want {
				t.Fatalf("n=%d bin %#x: %d, want %d", n, b, got, want)
			}
		}
		for _, w := range []*blockHist{&w0, &w1} {
			for k := range w.c {
				for b, c := range w.c[k] {
					if c != 0 {
						t.Fatalf("n=%d: take left counter %d of bin %#x at %d", n, k, b, c)
					}
				}
			}
		}
		for _, k := range []uint64{0, 1, 2, uint64(n / 3), uint64(n / 2), uint64(n), uint64(n + 1)} {
			bin, above, err := h.pick(k)
			wbin, wabove, werr := ref.Pick(k)
			if bin != wbin || above != wabove || (err == nil) != (werr == nil) {
				t.Fatalf("n=%d pick(%d) = %#x %d %v, want %#x %d %v", n, k, bin, above, err, wbin, wabove, werr)
			}
		}
		h.reset()
		for b := uint32(0); b < hiBins; b++ {
			if h.count(b) != 0 {
				t.Fatalf("n=%d: reset left bin %#x", n, b)
			}
		}
	}
}

// TestCountHighHandsOn checks that a worker's counts go to the tensor's
// histogram before they could overflow a counter.
func TestCountHighHandsOn(t *testing.T) {
	e := &engine{m: 1, d: 1, hi: make([]highHist, 1)}
	w := &worker{hi: make([]blockHist, 1), hiCount: make([]uint64, 1)}
	vals := []float32{1, 1, 2, 1, -1}
	e.countHigh(w, 0, vals)
	w.hiCount[0] = math.MaxUint32 - 2 // as if 2³² − 3 values had been counted
	e.countHigh(w, 0, vals)
	if w.hiCount[0] != uint64(len(vals)) {
		t.Fatalf("hiCount %d after the hand-on, want %d", w.hiCount[0], len(vals))
	}
	one := math.Float32bits(1) >> 16
	if got := e.hi[0].count(one); got != 4 {
		t.Fatalf("handed on %d values of bin 1.0 (|τ| = 1), want 4", got)
	}
	e.hi[0].take(&w.hi[0])
	if got := e.hi[0].count(one); got != 8 {
		t.Fatalf("%d values of bin 1.0 in all, want 8", got)
	}
}
