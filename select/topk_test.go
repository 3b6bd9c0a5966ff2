package topk

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// sortedThreshold is the plain reference: sort magnitudes descending and read the k-th.
func sortedThreshold(xs []float32, k int) Threshold {
	mags := make([]uint32, len(xs))
	for i, x := range xs {
		mags[i] = math.Float32bits(x) & 0x7fffffff
	}
	slices.Sort(mags)
	slices.Reverse(mags)
	t := Threshold{Bits: mags[k-1]}
	for _, m := range mags {
		switch {
		case m > t.Bits:
			t.Greater++
		case m == t.Bits:
			t.Equal++
		}
	}
	return t
}

// radix selects with the two passes, and checks that the low histogram made
// from AddHighSide's lists (two halves, as two workers would) gives the same.
func radix(t *testing.T, xs []float32, k uint64) Threshold {
	t.Helper()
	var high, low Hist
	// Feed in two halves to check that merging partial histograms is exact.
	var h2 Hist
	n := len(xs)
	side, side2 := make([]uint32, 0, n), make([]uint32, 0, n)
	if !high.AddHighSide(xs[:n/2], &side) || !h2.AddHighSide(xs[n/2:], &side2) {
		t.Fatal("a list with room for every value overflowed")
	}
	high.Take(&h2)
	if h2.Total() != 0 {
		t.Fatalf("Take left %d values behind", h2.Total())
	}
	hi, above, err := high.Pick(k)
	if err != nil {
		t.Fatal(err)
	}
	low.AddLow(xs, hi)
	th, err := Exact(k, hi, above, &low)
	if err != nil {
		t.Fatal(err)
	}
	low.LowFrom(hi, high.Count(hi), append(side, side2...)) // clears the pass's counts first
	if fromSide, err := Exact(k, hi, above, &low); err != nil || fromSide != th {
		t.Fatalf("n=%d k=%d: from the lists %+v (%v), from the pass %+v", n, k, fromSide, err, th)
	}
	return th
}

func TestExactMatchesSort(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 200; trial++ {
		n := 1 + r.IntN(3000)
		xs := make([]float32, n)
		for i := range xs {
			switch r.IntN(7) {
			case 0:
				xs[i] = 0
			case 1: // a few repeated values make ties
				xs[i] = float32(r.IntN(4)) * 0.5
			case 2:
				xs[i] = float32(r.NormFloat64() * 1e-30)
			case 3: // low 16 bits 0, as most differences of bf16 values
				xs[i] = math.Float32frombits(math.Float32bits(float32(r.NormFloat64())) &^ 0xffff)
			default:
				xs[i] = float32(r.NormFloat64())
			}
			if r.IntN(2) == 0 {
				xs[i] = -xs[i]
			}
		}
		if trial%10 == 0 {
			xs[0] = float32(math.NaN())
			xs[1] = float32(math.Inf(-1))
			xs[2] = math.Float32frombits(1) // smallest subnormal
		}
		k := uint64(1 + r.IntN(n))
		got, want := radix(t, xs, k), sortedThreshold(xs, int(k))
		if got != want {
			t.Fatalf("n=%d k=%d: got %+v want %+v", n, k, got, want)
		}
		if !(got.Greater < k && k <= got.Greater+got.Equal) {
			t.Fatalf("threshold %+v does not bracket k=%d", got, k)
		}
	}
}

func TestHandWorked(t *testing.T) {
	// |x| = 4, 3, 3, 2, 1, 0: the 2nd and 3rd largest are both 3, so
	// k=2 and k=3 give threshold 3 with one greater and two equal.
	xs := []float32{1, -3, 4, 3, -2, 0}
	for _, k := range []uint64{2, 3} {
		got := radix(t, xs, k)
		if got.Bits != math.Float32bits(3) || got.Greater != 1 || got.Equal != 2 {
			t.Fatalf("k=%d: %+v", k, got)
		}
	}
	if got := radix(t, xs, 6); got.Bits != 0 || got.Greater != 5 || got.Equal != 1 {
		t.Fatalf("k=6: %+v", got)
	}
	var h Hist
	h.AddHigh(xs)
	if _, _, err := h.Pick(7); err == nil {
		t.Fatal("rank beyond count: no error")
	}
	if _, _, err := h.Pick(0); err == nil {
		t.Fatal("rank 0: no error")
	}
}

func TestApproxKeepsAtLeastK(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	xs := make([]float32, 10000)
	for i := range xs {
		xs[i] = float32(r.NormFloat64())
	}
	var high Hist
	high.AddHigh(xs)
	for _, k := range []uint64{1, 17, 2000, 10000} {
		hi, above, err := high.Pick(k)
		if err != nil {
			t.Fatal(err)
		}
		a := Approx(hi, above, &high)
		kept := uint64(0)
		for _, x := range xs {
			if math.Float32bits(x)&0x7fffffff >= a.Bits {
				kept++
			}
		}
		if kept != a.Greater+a.Equal || kept < k || kept-k >= high.Count(hi) {
			t.Fatalf("k=%d: kept %d, approx %+v, bin %d", k, kept, a, high.Count(hi))
		}
	}
}

// TestHistReuse reuses histograms as the passes do, emptied by Take or
// Reset between rounds of values from different exponents (pages), and
// holds their picks and counts to a fresh histogram's over the same values.
func TestHistReuse(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	var h, other Hist
	for round := range 20 {
		var fresh Hist
		xs := make([]float32, 1+r.IntN(5000))
		exps := []int{r.IntN(40) - 30, r.IntN(40) - 30, r.IntN(3) - 140} // a subnormal page too
		for i := range xs {
			xs[i] = float32(math.Ldexp(1+r.Float64(), exps[r.IntN(3)]))
			if r.IntN(50) == 0 {
				xs[i] = 0
			}
		}
		fresh.AddHigh(xs)
		cut := r.IntN(len(xs) + 1)
		h.AddHigh(xs[:cut])
		other.AddHigh(xs[cut:])
		h.Take(&other)
		if other.Total() != 0 {
			t.Fatalf("round %d: Take left %d values", round, other.Total())
		}
		if h.Total() != uint64(len(xs)) {
			t.Fatalf("round %d: %d values counted, want %d", round, h.Total(), len(xs))
		}
		for range 10 {
			k := 1 + uint64(r.IntN(len(xs)))
			b, above, err := h.Pick(k)
			fb, fabove, ferr := fresh.Pick(k)
			if err != nil || ferr != nil || b != fb || above != fabove {
				t.Fatalf("round %d, rank %d: bin %d above %d (%v), fresh bin %d above %d (%v)", round, k, b, above, err, fb, fabove, ferr)
			}
		}
		if _, _, err := h.Pick(uint64(len(xs)) + 1); err == nil {
			t.Fatalf("round %d: a rank past the values was accepted", round)
		}
		if round%2 == 0 {
			h.Reset()
		} else {
			var sink Hist
			sink.Take(&h)
		}
		if h.Total() != 0 {
			t.Fatalf("round %d: %d values left after emptying", round, h.Total())
		}
	}
}

// TestSideOverflow: a list too short to hold every value with low bits
// says so, and every value is still counted.
func TestSideOverflow(t *testing.T) {
	var h Hist
	side := make([]uint32, 0, 1)
	if h.AddHighSide([]float32{1.5, 1 + 0x1p-20, 2, 1 + 0x1p-21}, &side) {
		t.Fatal("two values with low bits fit a list of one")
	}
	if h.Total() != 4 || len(side) != 1 {
		t.Fatalf("counted %d values, listed %d: want every value counted, one listed", h.Total(), len(side))
	}
}

// TestAddHighCountsEveryBin holds AddHigh's bins to a plain count, on values
// of every exponent and kind (±0, subnormals, ±Inf, NaN) in odd and even
// lengths: a count left in the second counters shows as a bin short, a
// page left unmarked as values missing from Total.
func TestAddHighCountsEveryBin(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	special := []float32{0, float32(math.Copysign(0, -1)), 0x1p-149, -0x1p-130, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), math.MaxFloat32}
	var h Hist
	for round := range 30 {
		xs := make([]float32, r.IntN(3000))
		for i := range xs {
			if r.IntN(20) == 0 {
				xs[i] = special[r.IntN(len(special))]
			} else {
				xs[i] = math.Float32frombits(r.Uint32())
			}
		}
		want := map[uint32]uint64{}
		for _, x := range xs {
			want[(math.Float32bits(x)&0x7fffffff)>>16]++
		}
		h.Reset()
		h.AddHigh(xs)
		for b, c := range want { // Count first: it must fold the second counters itself
			if h.Count(b) != c {
				t.Fatalf("round %d: bin %#x holds %d, want %d", round, b, h.Count(b), c)
			}
		}
		if h.Total() != uint64(len(xs)) {
			t.Fatalf("round %d: Total %d, want %d", round, h.Total(), len(xs))
		}
	}
}

// Ordered keys sort like the values (−0 with +0, NaN last), round-trip, and
// the two-pass select over them finds every rank's value exactly.
func TestOrderedSelect(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	xs := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), 0x1p-149, -0x1p-149,
		float32(math.NaN()), -float32(math.NaN()), 1, -1, 1, 0.5}
	for range 500 {
		xs = append(xs, float32(r.NormFloat64()*math.Pow(10, float64(r.IntN(6)-3))))
	}
	for _, x := range xs {
		if x == x && OrderedValue(OrderedKey(x)) != x {
			t.Fatalf("%v: round trip gives %v", x, OrderedValue(OrderedKey(x)))
		}
	}
	if OrderedKey(float32(math.Copysign(0, -1))) != OrderedKey(0) || OrderedKey(float32(math.NaN())) != OrderedKey(-float32(math.NaN())) {
		t.Fatal("−0 or a negative NaN has a key of its own")
	}
	if v := OrderedValue(OrderedKey(float32(math.NaN()))); v == v {
		t.Fatalf("the NaN key's value is %v", v)
	}
	sorted := slices.Clone(xs)
	slices.SortFunc(sorted, func(a, b float32) int {
		switch ka, kb := OrderedKey(a), OrderedKey(b); {
		case ka < kb:
			return -1
		case ka > kb:
			return 1
		}
		return 0
	})
	for i := 1; i < len(sorted); i++ {
		if a, b := sorted[i-1], sorted[i]; a == a && b == b && a > b {
			t.Fatalf("keys order %v before %v", a, b)
		}
	}
	if last := sorted[len(sorted)-1]; last == last {
		t.Fatalf("largest key %v, want NaN", last)
	}
	for idx := range sorted {
		k := uint64(len(xs) - idx) // the idx-th smallest is the k-th largest
		var high, low Hist
		if top := high.AddOrderedHigh(xs); top != OrderedKey(sorted[len(sorted)-1]) {
			t.Fatalf("largest key %#x, want %#x", top, OrderedKey(sorted[len(sorted)-1]))
		}
		hi, above, err := high.Pick(k)
		if err != nil {
			t.Fatal(err)
		}
		low.AddOrderedLow(xs, hi)
		th, err := Exact(k, hi, above, &low)
		if err != nil {
			t.Fatal(err)
		}
		if th.Bits != OrderedKey(sorted[idx]) {
			t.Fatalf("rank %d: key %#x, want %#x (%v)", idx, th.Bits, OrderedKey(sorted[idx]), sorted[idx])
		}
	}
}
