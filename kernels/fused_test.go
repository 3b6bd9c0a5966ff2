package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// naiveRange is Range written the plain way, to hold the Go reference to.
func naiveRange(tau []float32, lo, hi uint32) []int32 {
	var idx []int32
	for i, v := range tau {
		if m := AbsBits(v); lo <= m && m <= hi {
			idx = append(idx, int32(i))
		}
	}
	return idx
}

// rangeBounds draws [lo, hi] pairs: empty ones, single values taken from the
// data (ties), histogram bins, open-ended ones and the extremes.
func rangeBounds(r *rand.Rand, tau []float32) [][2]uint32 {
	bs := [][2]uint32{{0, 0}, {0, 0xffffffff}, {1, 0x7f800000}, {0x7f800001, 0xffffffff}, {5, 4}, {0x80000000, 0xffffffff}}
	for k := 0; k < 4 && len(tau) > 0; k++ {
		a, b := AbsBits(tau[r.IntN(len(tau))]), AbsBits(tau[r.IntN(len(tau))])
		bs = append(bs, [2]uint32{a, a}, [2]uint32{min(a, b), max(a, b)}, [2]uint32{a &^ 0xffff, a | 0xffff}, [2]uint32{a, 0xffffffff})
	}
	return bs
}

func TestRangeMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	sets := append(asmSets(t), Generic)
	for _, n := range lengths(testing.Short()) {
		off := r.IntN(8)
		tau := randFloats(r, n+off)[off:]
		if n%5 == 0 { // many exact ties
			for i := range tau {
				tau[i] = float32(r.IntN(5) - 2)
			}
		}
		for _, lh := range rangeBounds(r, tau) {
			want := naiveRange(tau, lh[0], lh[1])
			for _, s := range sets {
				what := fmt.Sprintf("%s Range n=%d [%#x, %#x]", s.Name, n, lh[0], lh[1])
				if got := s.Range(tau, lh[0], lh[1], nil); got != len(want) {
					t.Fatalf("%s without indices: count %d, want %d", what, got, len(want))
				}
				// Indices past the count are scratch up to len(tau); the
				// guard words after it must stay.
				buf := make([]int32, n+guard)
				for i := range buf {
					buf[i] = -7
				}
				got := s.Range(tau, lh[0], lh[1], buf[:n])
				if got != len(want) || !slices.Equal(buf[:got], want) {
					t.Fatalf("%s: indices %v (count %d), want %v", what, buf[:min(got, n)], got, want)
				}
				for i := n; i < len(buf); i++ {
					if buf[i] != -7 {
						t.Fatalf("%s: wrote past len(tau) at %d", what, i)
					}
				}
			}
		}
	}
}

// tiesInputs is one fused-merge block's inputs.
type tiesInputs struct {
	n      int
	dt     DType
	base   []byte
	models [][]byte
	thr    []uint32
}

func randTiesInputs(r *rand.Rand, dt DType, nm, n int) *tiesInputs {
	in := &tiesInputs{n: n, dt: dt, base: randStored(r, dt, n, r.IntN(4))}
	for range nm {
		in.models = append(in.models, randStored(r, dt, n, r.IntN(4)))
		th := []uint32{0, 1, 0x3c000000, 0x3f800000, 0x7f800000, 0x7fc00000, 0xffffffff}
		in.thr = append(in.thr, th[r.IntN(len(th))])
	}
	return in
}

// thresholdsAt sets each model's threshold to the magnitude of one of its
// task-vector values, so some values sit exactly at it.
func (in *tiesInputs) thresholdsAt(r *rand.Rand) {
	if in.n == 0 {
		return
	}
	base := make([]float32, in.n)
	Generic.Widen(base, in.base, in.dt)
	tau := make([]float32, in.n)
	for i, m := range in.models {
		Generic.DeltaTrim(tau, m, in.dt, base, 0)
		in.thr[i] = AbsBits(tau[r.IntN(in.n)])
	}
}

// staged runs the four stage kernels of the Go set one after the other over
// the whole block: what Ties must equal.
func (in *tiesInputs) staged(outDT DType, p *VoteParams, lambda float32) ([]byte, VoteStats, []int, []int, []int32) {
	n, nm := in.n, len(in.models)
	base := make([]float32, n)
	Generic.Widen(base, in.base, in.dt)
	taus := make([]float32, nm*n)
	kept, equal := make([]int, nm), make([]int, nm)
	for i, m := range in.models {
		kept[i] = Generic.DeltaTrim(taus[i*n:(i+1)*n], m, in.dt, base, in.thr[i])
		for _, v := range taus[i*n : (i+1)*n] {
			if AbsBits(v) == in.thr[i] {
				equal[i]++
			}
		}
	}
	tm := make([]float32, n)
	st := Generic.Vote(tm, taus, n, p)
	var zero []int32
	if p.Consensus != ConsensusNone { // no vote, no zero sums
		ZeroSums(taus, n, n, p, func(j int) { zero = append(zero, int32(j)) })
	}
	out := make([]byte, n*outDT.Size())
	Generic.Finish(out, outDT, base, tm, lambda)
	return out, st, kept, equal, zero
}

func checkTies(t *testing.T, s *Set, in *tiesInputs, outDT DType, p *VoteParams, lambda float32) {
	t.Helper()
	want, wst, wkept, wequal, wzero := in.staged(outDT, p, lambda)
	what := fmt.Sprintf("%s Ties n=%d models=%d %v→%v λ=%v %+v", s.Name, in.n, len(in.models), in.dt, outDT, lambda, *p)
	for _, withZero := range []bool{false, true} {
		withEqual := !withZero
		dst, check := outBytes(in.n*outDT.Size(), (in.n+3)%8)
		b := &TiesBlock{Dst: dst, OutDT: outDT, Base: in.base, Models: in.models, DT: in.dt,
			Thr: in.thr, Vote: p, Lambda: lambda, Kept: make([]int, len(in.models))}
		if withEqual {
			b.Equal = make([]int, len(in.models))
		}
		var zbuf []int32
		if withZero {
			zbuf = make([]int32, in.n+guard)
			for i := range zbuf {
				zbuf[i] = -7
			}
			b.Zero = zbuf[:in.n]
		}
		st := s.Ties(b)
		sameBytes(t, what, outDT, dst, want)
		check(t, what)
		if st != wst || !slices.Equal(b.Kept, wkept) {
			t.Fatalf("%s: stats %+v kept %v, want %+v kept %v", what, st, b.Kept, wst, wkept)
		}
		if withEqual && !slices.Equal(b.Equal, wequal) {
			t.Fatalf("%s: equal %v, want %v", what, b.Equal, wequal)
		}
		if withZero {
			if !slices.Equal(zbuf[:st.ZeroSum], wzero) {
				t.Fatalf("%s: zero-sum indices %v, want %v", what, zbuf[:st.ZeroSum], wzero)
			}
			for i := in.n; i < len(zbuf); i++ {
				if zbuf[i] != -7 {
					t.Fatalf("%s: wrote zero-sum indices past n at %d", what, i)
				}
			}
		}
	}
}

func TestTiesMatchesStaged(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	sets := append(asmSets(t), Generic)
	ns := []int{0, 1, 7, 8, 15, 16, 17, 31, 33, 63, 100, 255, 1000}
	if !testing.Short() {
		ns = append(ns, stagedChunk+17, 70001)
	}
	for _, nm := range []int{1, 2, 3, 4, 5, 8, 9, 12} {
		for k, n := range ns {
			dt := dtypes[(nm+k)%3]
			in := randTiesInputs(r, dt, nm, n)
			if k%2 == 1 {
				in.thresholdsAt(r)
			}
			params := voteParams(randWeights(r, nm, k))
			for q, s := range sets {
				p := params[(k*7+q+nm)%len(params)]
				outDT := dtypes[(k+q)%3]
				checkTies(t, s, in, outDT, &p, []float32{1, 0.7, -1.5}[k%3])
				// The fused kernels' main case, every time.
				p = VoteParams{Weights: ones(nm), Consensus: ConsensusSum, Aggregate: AggregateMean}
				checkTies(t, s, in, dt, &p, 1)
			}
		}
	}
}

// TestTiesAllParams runs every vote variant through every set on one input.
func TestTiesAllParams(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	for _, nm := range []int{2, 3, 8} {
		for _, dt := range dtypes {
			in := randTiesInputs(r, dt, nm, 77)
			for kind := range 3 {
				for _, p := range voteParams(randWeights(r, nm, kind)) {
					for _, s := range append(asmSets(t), Generic) {
						checkTies(t, s, in, BF16, &p, 0.9)
					}
				}
			}
		}
	}
}

func ones(n int) []float32 {
	w := make([]float32, n)
	for i := range w {
		w[i] = 1
	}
	return w
}

// TestTiesTails runs the fused kernels' cases over every length to 300
// (every tail of 8 and 16 lanes, at every position of a zero sum), with 1,
// 3, 8 and 9 models (9: the staged path), each weighting and aggregate.
func TestTiesTails(t *testing.T) {
	r := rand.New(rand.NewPCG(27, 28))
	sets := asmSets(t)
	if len(sets) == 0 {
		return
	}
	for n := 0; n <= 300; n++ {
		for _, nm := range []int{1, 3, 8, 9} {
			dt := BF16
			if n%4 == 3 {
				dt = dtypes[n/4%3]
			}
			in := randTiesInputs(r, dt, nm, n)
			w := randWeights(r, nm, n%3)
			p := VoteParams{Weights: w, WeightedVote: n%2 == 1, Aggregate: []Aggregate{AggregateMean, AggregateSum}[n/2%2]}
			for _, s := range sets {
				checkTies(t, s, in, dt, &p, 0.5)
			}
		}
	}
}

// TestTiesNaNPayloads makes the fused arithmetic meet NaNs with payloads
// everywhere: stored values, base, weights and λ.
func TestTiesNaNPayloads(t *testing.T) {
	sets := asmSets(t)
	nans := []uint32{0x7fc00001, 0xffc00002, 0x7f800003, 0xff812345, 0x7fc0beef, 0x7fa00000}
	for _, dt := range dtypes {
		for _, nm := range []int{2, 3, 5} {
			n := 53
			in := &tiesInputs{n: n, dt: dt, thr: make([]uint32, nm)}
			enc := func(k int) []byte {
				f := make([]float32, n)
				for i := range f {
					if (i+k)%3 != 2 {
						f[i] = math.Float32frombits(nans[(i*7+k)%len(nans)])
					} else {
						f[i] = float32((i+k)%5) - 2
					}
				}
				b := make([]byte, n*dt.Size())
				for i, v := range f {
					u := math.Float32bits(v)
					switch {
					case dt == F32:
						binary.LittleEndian.PutUint32(b[4*i:], u)
					case dt == BF16:
						binary.LittleEndian.PutUint16(b[2*i:], uint16(u>>16))
					case v != v: // an f16 NaN with a payload from u
						binary.LittleEndian.PutUint16(b[2*i:], uint16(u>>16)&0x8000|0x7c01|uint16(u>>13)&0x3ff)
					default:
						binary.LittleEndian.PutUint16(b[2*i:], F32ToF16(v))
					}
				}
				return b
			}
			in.base = enc(0)
			for i := range nm {
				in.models = append(in.models, enc(i+1))
			}
			for _, w := range [][]float32{
				ones(nm),
				{math.Float32frombits(0x7fc0aaaa), math.Float32frombits(0xffc0bbbb), 1, 2, -1},
				{float32(math.Inf(1)), 0, float32(math.Inf(-1)), math.Float32frombits(0x7f80cccc), 0.5},
			} {
				for _, p := range voteParams(w[:nm]) {
					for _, s := range sets {
						for _, lambda := range []float32{1, math.Float32frombits(0x7f900000)} {
							checkTies(t, s, in, dt, &p, lambda)
						}
					}
				}
			}
		}
	}
}
