package inspect

import (
	"math"
	"math/big"
)

// Acc is an exact sum of float64 values: a fixed-point integer whose least
// significant bit is 2^-1074 (the smallest subnormal), so every finite
// float64 is an integer in it and no addition rounds. The sum is therefore
// the same in whatever order values and other sums are added, which is what
// makes the statistics independent of the thread count and the block size;
// only Float64 rounds, once.
//
// The limbs hold 32-bit digits in int64 words; carries are propagated lazily,
// every normLimit additions.
type Acc struct {
	limbs [accLimbs]int64
	adds  int64 // additions since the last carry propagation
}

const (
	accBits   = 32
	accLimbs  = (1074+1024+64)/accBits + 2 // every float64, plus 2^64 of headroom
	normLimit = 1 << 30
)

// Add adds v, which must be finite.
func (a *Acc) Add(v float64) {
	if v == 0 {
		return
	}
	b := math.Float64bits(v)
	exp := int((b >> 52) & 0x7ff)
	mant := b & (1<<52 - 1)
	if exp == 0 {
		exp = 1 // subnormal: no implicit bit, same scale as the smallest normal
	} else {
		mant |= 1 << 52
	}
	pos := exp - 1 // bit position of mant's lowest bit above 2^-1074
	i, s := pos/accBits, uint(pos%accBits)
	// mant<<s has at most 53+31 = 84 bits: three digits.
	lo := (mant << s) & (1<<accBits - 1)
	mid := (mant >> (accBits - s)) & (1<<accBits - 1)
	if s == 0 {
		mid = (mant >> accBits) & (1<<accBits - 1)
	}
	var hi uint64 // zero when s is 0: mant has under 64 bits
	if s != 0 {
		hi = mant >> (2*accBits - s)
	}
	if b>>63 != 0 {
		a.limbs[i] -= int64(lo)
		a.limbs[i+1] -= int64(mid)
		a.limbs[i+2] -= int64(hi)
	} else {
		a.limbs[i] += int64(lo)
		a.limbs[i+1] += int64(mid)
		a.limbs[i+2] += int64(hi)
	}
	if a.adds++; a.adds >= normLimit {
		a.normalize()
	}
}

// AddAcc adds o's sum to a.
func (a *Acc) AddAcc(o *Acc) {
	if a.adds+o.adds >= normLimit {
		a.normalize()
		o.normalize()
	}
	for i, l := range o.limbs {
		a.limbs[i] += l
	}
	a.adds += o.adds + 1
}

// Reset zeroes a.
func (a *Acc) Reset() { *a = Acc{} }

// normalize propagates carries: every limb but the top one ends in [0, 2^32).
func (a *Acc) normalize() {
	var carry int64
	for i := range a.limbs {
		v := a.limbs[i] + carry
		if i == len(a.limbs)-1 {
			a.limbs[i] = v
			break
		}
		carry = v >> accBits // arithmetic shift: floor division
		a.limbs[i] = v - carry<<accBits
	}
	a.adds = 0
}

// Float64 is the sum rounded to the nearest float64 (ties to even).
func (a *Acc) Float64() float64 {
	c := *a
	c.normalize()
	n := new(big.Int)
	digit := new(big.Int)
	for i := len(c.limbs) - 1; i >= 0; i-- {
		n.Lsh(n, accBits)
		digit.SetInt64(c.limbs[i])
		n.Add(n, digit)
	}
	if n.Sign() == 0 {
		return 0
	}
	f := new(big.Float).SetInt(n)
	f.SetMantExp(f, -1074)
	v, _ := f.Float64()
	return v
}
