package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// Benchmarks, in input bytes per second (b.SetBytes):
//
//	go test -run '^$' -bench 'Ties/.*/dtype=bf16/n=3' ./kernels/
//
// BenchmarkTies runs the merge's fused kernel (Set.Ties: per block, widen
// the base, trim each model, vote, finish) on one L2-resident block and, with
// size=ram, over inputs of 256 MiB or twice the L3 cache, whichever is
// larger (at most 1 GiB), so they come from RAM; BenchmarkMemcopy is the
// copy() of as many bytes to compare with; BenchmarkKernel times each kernel
// alone. The Go set takes seconds per op at size=ram: -benchtime 1x.

const benchBlock = 32 << 10 // elements: base, 3 models and the float32 work fit a 2 MiB L2

// benchRAM is the input bytes of the size=ram runs.
var benchRAM = int(min(max(256<<20, 2*int64(L3Bytes())), 1<<30))

type benchInputs struct {
	dt        DType
	n, elems  int
	base, out []byte
	models    [][]byte
	p         VoteParams
	thr       []uint32
	kept      []int
	scratch   []float32
}

func newBenchInputs(dt DType, n, elems int) *benchInputs {
	r := rand.New(rand.NewPCG(uint64(n), uint64(elems)))
	in := &benchInputs{dt: dt, n: n, elems: elems}
	sz := dt.Size()
	zero := make([]float32, min(elems, 1<<16))
	enc := func(dst []byte, f []float32) {
		Available()[0].Finish(dst, dt, f, zero[:len(f)], 0)
	}
	chunk := min(elems, 1<<16)
	bf, mf := make([]float32, chunk), make([]float32, chunk)
	in.base, in.out = make([]byte, elems*sz), make([]byte, elems*sz)
	in.models = make([][]byte, n)
	for i := range in.models {
		in.models[i] = make([]byte, elems*sz)
	}
	for off := 0; off < elems; off += chunk {
		c := min(chunk, elems-off)
		for j := range c {
			bf[j] = (r.Float32() - 0.5) * 0.07
		}
		enc(in.base[off*sz:(off+c)*sz], bf[:c])
		for i := range in.models {
			for j := range c {
				mf[j] = bf[j] + (r.Float32()-0.5)*3.5e-3
			}
			enc(in.models[i][off*sz:(off+c)*sz], mf[:c])
		}
	}
	w := make([]float32, n)
	in.thr, in.kept = make([]uint32, n), make([]int, n)
	for i := range w {
		w[i], in.thr[i] = 1, AbsBits(1.4e-3) // keeps about a fifth
	}
	in.p = VoteParams{Weights: w}
	in.scratch = make([]float32, TiesScratch(n, benchBlock))
	return in
}

func (in *benchInputs) bytes() int64 { return int64((in.n + 1) * in.elems * in.dt.Size()) }

func (in *benchInputs) pass(s *Set) {
	sz, b := in.dt.Size(), benchBlock
	models := make([][]byte, in.n)
	for off := 0; off < in.elems; off += b {
		m := min(b, in.elems-off)
		lo, hi := off*sz, (off+m)*sz
		for i, mdl := range in.models {
			models[i] = mdl[lo:hi]
		}
		s.Ties(&TiesBlock{Dst: in.out[lo:hi], OutDT: in.dt, Base: in.base[lo:hi], Models: models,
			DT: in.dt, Thr: in.thr, Vote: &in.p, Lambda: 1, Kept: in.kept, Scratch: in.scratch})
	}
}

func BenchmarkTies(b *testing.B) {
	for _, s := range Available() {
		for _, dt := range dtypes {
			for _, n := range []int{2, 3, 5, 8} {
				for _, size := range []string{"l2", "ram"} {
					name := fmt.Sprintf("impl=%s/dtype=%s/n=%d/size=%s", s.Name, dt, n, size)
					b.Run(name, func(b *testing.B) {
						elems := benchBlock
						if size == "ram" {
							elems = benchRAM / ((n + 1) * dt.Size())
						}
						in := newBenchInputs(dt, n, elems)
						b.SetBytes(in.bytes())
						b.ResetTimer()
						for b.Loop() {
							in.pass(s)
						}
						b.ReportMetric(float64(elems)*float64(b.N)/float64(b.Elapsed().Nanoseconds()), "elem/ns")
					})
				}
			}
		}
	}
}

func BenchmarkMemcopy(b *testing.B) {
	for _, size := range []string{"l2", "ram"} {
		b.Run("size="+size, func(b *testing.B) {
			n := 4 * benchBlock * 2 // bf16, N = 3
			if size == "ram" {
				n = benchRAM
			}
			src, dst := make([]byte, n), make([]byte, n)
			for i := range src {
				src[i] = byte(i)
			}
			b.SetBytes(int64(n))
			for b.Loop() {
				copy(dst, src)
			}
		})
	}
}

// BenchmarkKernel times each kernel on one L2-resident block (N = 3 for
// Vote), in bytes of its stored input (float32 for Vote and Range).
// DeltaRange runs on a block of deltaRangeBlock elements, as the per-tensor
// select does, and also staged: DeltaTrim without a trim, then Range for
// the count above the band and for the band.
func BenchmarkKernel(b *testing.B) {
	for _, s := range Available() {
		for _, dt := range dtypes {
			in := newBenchInputs(dt, 3, benchBlock)
			bb := int64(benchBlock * dt.Size())
			wbase, tm, taus := make([]float32, benchBlock), make([]float32, benchBlock), make([]float32, 3*benchBlock)
			s.Widen(wbase, in.base, dt)
			for i, m := range in.models {
				s.DeltaTrim(taus[i*benchBlock:(i+1)*benchBlock], m, dt, wbase, in.thr[i])
			}
			s.Vote(tm, taus, benchBlock, &in.p)
			b.Run(fmt.Sprintf("impl=%s/dtype=%s/kernel=widen", s.Name, dt), func(b *testing.B) {
				b.SetBytes(bb)
				for b.Loop() {
					s.Widen(wbase, in.base, dt)
				}
			})
			b.Run(fmt.Sprintf("impl=%s/dtype=%s/kernel=deltatrim", s.Name, dt), func(b *testing.B) {
				b.SetBytes(bb)
				for b.Loop() {
					s.DeltaTrim(taus[:benchBlock], in.models[0], dt, wbase, in.thr[0])
				}
			})
			b.Run(fmt.Sprintf("impl=%s/dtype=%s/kernel=finish", s.Name, dt), func(b *testing.B) {
				b.SetBytes(bb)
				for b.Loop() {
					s.Finish(in.out, dt, wbase, tm, 1)
				}
			})
			if dt == F32 {
				b.Run(fmt.Sprintf("impl=%s/n=3/kernel=vote", s.Name), func(b *testing.B) {
					b.SetBytes(3 * 4 * benchBlock)
					for b.Loop() {
						s.Vote(tm, taus, benchBlock, &in.p)
					}
				})
				// Range over one model's τ: a tie count, and a one-percent band with its indices.
				idx := make([]int32, benchBlock)
				thr := in.thr[0]
				b.Run(fmt.Sprintf("impl=%s/kernel=range", s.Name), func(b *testing.B) {
					b.SetBytes(4 * benchBlock)
					for b.Loop() {
						s.Range(taus[:benchBlock], thr, thr, nil)
						s.Range(taus[:benchBlock], thr, thr+thr/100, idx)
					}
				})
			}
			for _, k := range []string{"deltarange", "deltarange-idx", "deltarange-staged", "deltarange-staged-idx"} {
				b.Run(fmt.Sprintf("impl=%s/dtype=%s/kernel=%s", s.Name, dt, k), func(b *testing.B) {
					benchDeltaRange(b, s, dt, strings.HasSuffix(k, "-idx"), strings.Contains(k, "staged"))
				})
			}
		}
	}
}

// deltaRangeBlock is the elements of the DeltaRange benchmarks: bf16 model,
// float32 base, indices and the staged τ fit an L2.
const deltaRangeBlock = 1 << 16

// benchDeltaRange times DeltaRange on one model: a tie count at the
// threshold without indices, or a band holding about 2% of the values with
// them (staged: the same results through DeltaTrim and two Range calls).
func benchDeltaRange(b *testing.B, s *Set, dt DType, withIdx, staged bool) {
	n := deltaRangeBlock
	in := newBenchInputs(dt, 1, n)
	base, tau := make([]float32, n), make([]float32, n)
	s.Widen(base, in.base, dt)
	var idx []int32
	lo, hi := in.thr[0], in.thr[0]
	if withIdx {
		idx, hi = make([]int32, n), AbsBits(1.45e-3)
	}
	src := in.models[0]
	b.SetBytes(int64(n * dt.Size()))
	for b.Loop() {
		if staged {
			s.DeltaTrim(tau, src, dt, base, 0)
			s.Range(tau, hi+1, 0xffffffff, nil)
			s.Range(tau, lo, hi, idx)
		} else {
			s.DeltaRange(src, dt, base, lo, hi, idx)
		}
	}
}

// BenchmarkStats times the statistics kernels of tiesmm inspect on one
// L2-resident block of task-vector-like values, bytes of τ per second (two
// vectors for Dot):
//
//	go test -run '^$' -bench Stats ./kernels/
func BenchmarkStats(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	tau, other := make([]float32, benchBlock), make([]float32, benchBlock)
	for i := range tau {
		tau[i] = float32(r.NormFloat64() * 1e-3)
		other[i] = float32(r.NormFloat64() * 1e-3)
	}
	sums, sums2 := make([]float64, Chunks(benchBlock)), make([]float64, Chunks(benchBlock))
	w1, w2 := make([]uint64, Words(benchBlock)), make([]uint64, Words(benchBlock))
	gt := AbsBits(1.2e-3)
	for _, s := range Available() {
		b.Run("kernel=Norms/set="+s.Name, func(b *testing.B) {
			b.SetBytes(4 * benchBlock)
			for b.Loop() {
				s.Norms(tau, sums, sums2, w1, w2)
			}
		})
		b.Run("kernel=Dot/set="+s.Name, func(b *testing.B) {
			b.SetBytes(8 * benchBlock)
			for b.Loop() {
				s.Dot(tau, other, sums)
			}
		})
		b.Run("kernel=TrimWords/set="+s.Name, func(b *testing.B) {
			b.SetBytes(4 * benchBlock)
			for b.Loop() {
				s.TrimWords(tau, gt, w1, w2, sums)
			}
		})
	}
}

// BenchmarkLowBits lists the magnitudes with low bits of one block in which
// one value in frac has them, into a list with room for all.
func BenchmarkLowBits(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, frac := range []int{1000, 30, 3} {
		tau := make([]float32, benchBlock)
		for i := range tau {
			tau[i] = float32(r.NormFloat64() * 1e-3)
			if r.IntN(frac) != 0 {
				tau[i] = math.Float32frombits(math.Float32bits(tau[i]) &^ 0xffff)
			}
		}
		list := make([]uint32, benchBlock)
		for _, s := range Available() {
			b.Run(fmt.Sprintf("frac=1/%d/set=%s", frac, s.Name), func(b *testing.B) {
				b.SetBytes(4 * benchBlock)
				for b.Loop() {
					s.LowBits(tau, list)
				}
			})
		}
	}
}
