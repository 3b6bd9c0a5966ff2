package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
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

// FuzzRange bounds the band by w and k (sometimes a single magnitude taken
// from the data, a tie count; sometimes empty, lo > hi).
func FuzzRange(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, k uint8, w uint32) {
		tau := floatsOf(data)
		n := len(tau)
		lo, hi := w, w^uint32(k)<<(k%25)
		if k&1 != 0 && n > 0 {
			lo = AbsBits(tau[int(w%uint32(n))])
			hi = lo
		}
		want := make([]int32, n)
		wantN := Generic.Range(tau, lo, hi, want)
		for _, s := range asmSets(t) {
			what := fmt.Sprintf("%s Range n=%d [%#x, %#x]", s.Name, n, lo, hi)
			if got := s.Range(tau, lo, hi, nil); got != wantN {
				t.Fatalf("%s without indices: count %d, want %d", what, got, wantN)
			}
			idx := make([]int32, n+guard)
			for i := range idx {
				idx[i] = -7
			}
			got := s.Range(tau, lo, hi, idx[:n])
			if got != wantN || !slices.Equal(idx[:got], want[:wantN]) {
				t.Fatalf("%s: indices %v, want %v", what, idx[:min(got, n)], want[:wantN])
			}
			for i := n; i < len(idx); i++ {
				if idx[i] != -7 {
					t.Fatalf("%s: wrote past len(tau) at %d", what, i)
				}
			}
		}
	})
}

// FuzzTies takes the number of models (1..9) and the weighting from w, the
// options and dtypes from k, then from data the weights and thresholds and
// the stored base and models.
func FuzzTies(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, k uint8, w uint32) {
		nm := int(w%9) + 1
		if len(data) < 8*nm {
			return
		}
		weights := floatsOf(data[:4*nm])
		if w&16 != 0 {
			weights = ones(nm)
		}
		thr := make([]uint32, nm)
		for i := range thr {
			thr[i] = binary.LittleEndian.Uint32(data[4*nm+4*i:])
		}
		data = data[8*nm:]
		dt := DType(k % 3)
		outDT := dt
		if w&32 != 0 {
			outDT = DType(w >> 6 % 3)
		}
		n := len(data) / ((nm + 1) * dt.Size())
		in := &tiesInputs{n: n, dt: dt, base: data[:n*dt.Size()], thr: thr}
		for i := range nm {
			in.models = append(in.models, data[(i+1)*n*dt.Size():(i+2)*n*dt.Size()])
		}
		p := &VoteParams{
			Weights:         weights,
			WeightedVote:    k&4 != 0,
			Consensus:       Consensus(k >> 3 % 2 * 2 % 3), // Sum, or None
			Aggregate:       Aggregate(k >> 4 % 3),
			DivideByWeights: k&64 != 0,
		}
		if k&128 != 0 {
			p.Consensus = ConsensusCount
		}
		lambda := []float32{1, 0.5, -2, float32(math.NaN())}[w>>8%4]
		for _, s := range asmSets(t) {
			checkTies(t, s, in, outDT, p, lambda)
		}
	})
}

// tiled repeats the fuzzed floats to reps whole chunks plus their own
// length, so the assembly's whole chunks see them too.
func tiled(v []float32, reps int) []float32 {
	if len(v) == 0 {
		return v
	}
	out := make([]float32, reps*SumChunk+len(v))
	for i := range out {
		out[i] = v[i%len(v)]
	}
	return out
}

// FuzzNorms takes the chunks from k, the words it ORs into from w.
func FuzzNorms(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, k uint8, w uint32) {
		tau := tiled(floatsOf(data), int(k%4))
		fill := make([]uint64, 2*Words(len(tau)))
		for i := range fill {
			fill[i] = uint64(w) * 0x9e3779b97f4a7c15 >> (i % 7)
		}
		checkNorms(t, asmSets(t), "fuzz", tau, fill, int(k/4)%4)
	})
}

// FuzzDot takes a from the first half of data and b from the second.
func FuzzDot(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, k uint8, _ uint32) {
		v := floatsOf(data)
		n := len(v) / 2
		a, b := tiled(v[:n], int(k%4)), tiled(v[n:2*n], int(k%4))
		checkDot(t, asmSets(t), "fuzz", a, b, int(k/4)%4)
	})
}

// FuzzTrimWords trims at w, or (k odd) at a magnitude from the data.
func FuzzTrimWords(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, k uint8, w uint32) {
		tau := tiled(floatsOf(data), int(k/2%4))
		gt := w
		if k&1 != 0 && len(tau) > 0 {
			gt = AbsBits(tau[int(w%uint32(len(tau)))])
		}
		checkTrimWords(t, asmSets(t), "fuzz", tau, gt, int(k/8)%4)
	})
}

// FuzzLowBits clears the low bits of most values (k sets how many keep
// them) and lists into room w % 300.
func FuzzLowBits(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, k uint8, w uint32) {
		tau := tiled(floatsOf(data), int(k%4))
		for i := range tau {
			if uint8(i*37)%8 >= k>>5 {
				tau[i] = math.Float32frombits(math.Float32bits(tau[i]) &^ 0xffff)
			}
		}
		checkLowBits(t, asmSets(t), "fuzz", tau, int(w%300))
	})
}

func FuzzEMRElect(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, k uint8, _ uint32) {
		N := 1 + int(k%5)
		vals := floatsOf(data)
		if len(vals) == 0 {
			return
		}
		// Tiled past a chunk, so that the assembly sees the values too.
		n := len(vals)/N + EMRChunk + int(k/5)
		taus := make([]float32, N*n+guard)
		for i := range taus {
			taus[i] = vals[i%len(vals)]
		}
		c := emrCase{n: n, N: N, stride: n, row: (n + 7) / 8, taus: taus}
		for _, s := range asmSets(t) {
			emrCompare(t, s, c, "fuzz")
		}
	})
}
