package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"testing"
)

// Fuzz targets holding every set to the reference on arbitrary bytes:
//
//	go test -run '^$' -fuzz FuzzVote -fuzztime 60s ./kernels/

func floatsOf(b []byte) []float32 {
	f := make([]float32, len(b)/4)
	for i := range f {
		f[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return f
}

func fuzzSeeds(f *testing.F) {
	b := make([]byte, 4*len(specials))
	for i, u := range specials {
		binary.LittleEndian.PutUint32(b[4*i:], u)
	}
	f.Add(b, uint8(0), uint32(0x3f000000))
	f.Add(b[:4*17], uint8(1), uint32(0))
	f.Add(b[3:4*33+3], uint8(2), uint32(0x7f800001))
}

func FuzzWiden(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, k uint8, _ uint32) {
		dt := DType(k % 3)
		n := len(data) / dt.Size()
		want := make([]float32, n)
		Generic.Widen(want, data, dt)
		for _, s := range asmSets(t) {
			got, check := outFloats(n, int(k/3)%8)
			s.Widen(got, data, dt)
			what := fmt.Sprintf("%s Widen %v n=%d", s.Name, dt, n)
			sameFloats(t, what, got, want)
			check(t, what)
		}
	})
}

func FuzzDeltaTrim(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, k uint8, thr uint32) {
		dt := DType(k % 3)
		// The first part is the stored model, the rest the base.
		n := len(data) / (dt.Size() + 4)
		src, base := data[:n*dt.Size()], floatsOf(data[n*dt.Size():])[:n]
		want := make([]float32, n)
		wantKept := Generic.DeltaTrim(want, src, dt, base, thr)
		for _, s := range asmSets(t) {
			got, check := outFloats(n, int(k/3)%8)
			kept := s.DeltaTrim(got, src, dt, base, thr)
			what := fmt.Sprintf("%s DeltaTrim %v n=%d thr=%#x", s.Name, dt, n, thr)
			sameFloats(t, what, got, want)
			check(t, what)
			if kept != wantKept {
				t.Fatalf("%s: kept %d, want %d", what, kept, wantKept)
			}
		}
	})
}

func FuzzFinish(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, k uint8, lambda uint32) {
		dt := DType(k % 3)
		v := floatsOf(data)
		n := len(v) / 2
		base, tm := v[:n], v[n:2*n]
		want := make([]byte, n*dt.Size())
		Generic.Finish(want, dt, base, tm, math.Float32frombits(lambda))
		for _, s := range asmSets(t) {
			got, check := outBytes(n*dt.Size(), int(k/3)%8)
			s.Finish(got, dt, base, tm, math.Float32frombits(lambda))
			what := fmt.Sprintf("%s Finish %v n=%d λ=%#x", s.Name, dt, n, lambda)
			sameBytes(t, what, dt, got, want)
			check(t, what)
		}
	})
}

// FuzzVote takes the options from k, the number of models from the low bits
// of w, the weights from the first floats of data and the votes from the rest.
func FuzzVote(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, k uint8, w uint32) {
		v := floatsOf(data)
		n := int(w%8) + 1
		if len(v) < n {
			return
		}
		weights, taus := v[:n], v[n:]
		if w&8 != 0 {
			for i := range weights {
				weights[i] = 1
			}
		}
		stride := len(taus) / n
		m := stride - int(w>>4%4)
		if m < 0 {
			m = 0
		}
		p := &VoteParams{
			Weights:         weights,
			WeightedVote:    k&1 != 0,
			Consensus:       Consensus(k >> 1 % 3),
			Aggregate:       Aggregate(k >> 3 % 3),
			DivideByWeights: k&32 != 0,
		}
		checkVote(t, asmSets(t), fmt.Sprintf("fuzz n=%d", n), taus, stride, m, p)
	})
}
