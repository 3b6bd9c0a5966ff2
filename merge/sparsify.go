package merge

import (
	"context"
	"hash/fnv"
	"math"
	"math/big"
	"math/bits"
	"slices"

	"github.com/tiesmm/tiesmm/kernels"
)

// blockSize is the block length of a job: DELLA ranks within rows (or, for
// tensors of three dimensions or more, within slabs), arcee_fusion and
// nuslerp's rows take whole rows, so their blocks hold whole ones.
func (r *run) blockSize(ji int) int { return r.p.jobBlock(ji, r.p.BlockElems) }

// jobBlock is job ji's block length for plan blocks of b elements.
func (p *Plan) jobBlock(ji, b int) int {
	if p.Method.OwnPath == PathEMR {
		return emrBlock(b)
	}
	if !p.Method.wholeRows() && p.slerpAxis(ji) != AxisRows {
		return b
	}
	row := rowLen(p.Jobs[ji])
	return max(1, b/row) * row
}

// jobBlocks is how many blocks job ji has for plan blocks of b elements.
func (p *Plan) jobBlocks(ji, b int) int {
	B := int64(p.jobBlock(ji, b))
	return int((p.Jobs[ji].Elements + B - 1) / B)
}

// wholeRows reports whether the method's blocks hold whole rows: DELLA
// ranks within rows (or slabs), arcee_fusion compares their softmaxes.
func (m Method) wholeRows() bool { return m.Drop == DropDella || m.OwnPath == PathArceeFusion }

// rowLen is the unit a DELLA block holds whole: the last dimension of a
// matrix, the whole tensor for vectors and scalars, and for three
// dimensions or more a slab, every element of one index of dimension 0 (the
// product of shape[1:]), inside which the ranks run along dimension 1.
func rowLen(j Job) int {
	if len(j.Shape) < 2 {
		return int(max(1, j.Elements))
	}
	if len(j.Shape) == 2 {
		return int(max(1, j.Shape[1]))
	}
	slab := int64(1)
	for _, d := range j.Shape[1:] {
		slab *= d
	}
	return int(max(1, slab))
}

// rankLine is how DELLA's ranked lines lie in a unit of rowLen elements:
// count elements apart by step, starting at each of the first step
// positions of the unit. A matrix's rows and a vector are one line of
// step 1; a slab of [d1, d2, ...] holds d2·... lines of d1 elements, each
// along dimension 1, as mergekit ranks them (argsort over dim 1).
func rankLine(j Job) (count, step int) {
	if len(j.Shape) < 3 {
		return rowLen(j), 1
	}
	return int(j.Shape[1]), rowLen(j) / int(max(1, j.Shape[1]))
}

// streamKey seeds the random stream of one model's task vector of one
// tensor, so a random method gives the same bytes whatever the blocks,
// threads or tensor order.
func streamKey(seed uint64, tensor string, model int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(tensor))
	return mix64(seed ^ mix64(h.Sum64()^mix64(uint64(model)+0x9e3779b97f4a7c15)))
}

// mix64 is splitmix64's finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// uniform is element e's draw in [0, 1) from a stream.
func uniform(key uint64, e int64) float64 {
	return float64(mix64(key^uint64(e)*0x9e3779b97f4a7c15)>>11) * 0x1p-53
}

// taskVector writes model i's sparsified task vector of block b into tau
// (without the L1 rescale, which needs the whole tensor) and returns how many
// elements the sparsification kept (whatever their value).
func (r *run) taskVector(w *worker, b block, i int, tau, base []float32) int {
	j := &r.p.Jobs[b.job]
	t, dt := j.Models[i], j.ModelDT[i]
	tr := r.trims[b.job][i]
	bits, cut := tr.bits, int64(-1)
	if tr.ties != nil {
		if keep := tr.ties[b.index]; keep == 0 {
			bits++ // exclusive: no tie of this block is kept
		} else if keep > 0 {
			cut = keep
		}
	}
	kept := r.k.DeltaTrim(tau, r.src(w, t, dt, b.start, b.n), dt, base, bits)
	if cut >= 0 {
		kept -= w.dropTies(r.k, tau, tr.bits, cut)
	}
	if j.NeedTop != nil && j.NeedTop[i] > 0 {
		kept -= w.cutTop(r.k, tau, r.tops[b.job][i], b.index)
	}
	switch d := j.Params.Density[i]; {
	case d >= 1:
	case r.p.Method.Drop == DropRandom:
		kept -= r.dropRandom(b, i, tau, d)
	case r.p.Method.Drop == DropDella:
		kept -= r.dropDella(b, i, tau, d, j.Params.Epsilon[i])
	}
	return kept
}

// cutTop zeroes the largest elements (breadcrumbs): above the cut, and the
// first ties at it that belong to the top set.
func (w *worker) cutTop(k *kernels.Set, tau []float32, top trim, block int) int {
	budget := int64(-1) // every tie
	if top.ties != nil {
		budget = top.ties[block]
	}
	removed := 0
	for _, e := range w.idx[:k.Range(tau, top.bits, math.MaxUint32, w.idx)] {
		if kernels.AbsBits(tau[e]) == top.bits {
			if budget == 0 {
				continue
			}
			if budget > 0 {
				budget--
			}
		}
		removed++
		tau[e] = 0
	}
	return removed
}

// dropRandom keeps each element with probability d (DARE); with the
// inverse rescale the kept ones are divided by d.
func (r *run) dropRandom(b block, i int, tau []float32, d float64) int {
	key := streamKey(r.p.Method.Seed, r.p.Jobs[b.job].Name, i)
	inverse := r.p.Method.Rescale == RescaleInverse
	removed := 0
	for e := range tau {
		if uniform(key, b.start+int64(e)) >= d {
			removed++
			tau[e] = 0
		} else if inverse {
			tau[e] /= float32(d)
		}
	}
	return removed
}

// dropDella keeps each element with a probability rising linearly with the
// rank of its magnitude in its line (rankLine), from d−ε (smallest) to d+ε
// (largest); ties rank by position. The block holds whole units of rowLen.
func (r *run) dropDella(b block, i int, tau []float32, d, eps float64) int {
	j := &r.p.Jobs[b.job]
	key0 := streamKey(r.p.Method.Seed, j.Name, i)
	inverse := r.p.Method.Rescale == RescaleInverse
	unit := rowLen(*j)
	count, step := rankLine(*j)
	// Rank by magnitude, ties by position: sort magnitude<<32 | position.
	order := make([]uint64, count)
	removed := 0
	for s := 0; s < len(tau); s += unit {
		for c := range step {
			for k := range order {
				order[k] = uint64(kernels.AbsBits(tau[s+c+k*step]))<<32 | uint64(k)
			}
			slices.Sort(order)
			for rank, key := range order {
				e := s + c + int(uint32(key))*step
				norm := 0.5
				if count > 1 {
					norm = float64(rank) / float64(count-1)
				}
				p := d - eps + norm*2*eps
				if uniform(key0, b.start+int64(e)) >= p {
					removed++
					tau[e] = 0
				} else if inverse {
					tau[e] /= float32(p)
				}
			}
		}
	}
	return removed
}

// exactSum adds float64 values exactly, whatever their order: each value's
// integer significand goes into a 128-bit bucket of its exponent and sign.
// The total is rounded once per bucket in a fixed order, so it depends only
// on the multiset of values, never on threads or blocks.
type exactSum struct {
	b   [2][2048][2]uint64
	nan bool
	inf [2]bool
}

func (a *exactSum) add(x float64) {
	u := math.Float64bits(x)
	s, e, m := u>>63, (u>>52)&0x7ff, u&(1<<52-1)
	switch {
	case e == 0x7ff && m != 0:
		a.nan = true
	case e == 0x7ff:
		a.inf[s] = true
	default:
		if e != 0 {
			m |= 1 << 52
		}
		var c uint64
		a.b[s][e][0], c = bits.Add64(a.b[s][e][0], m, 0)
		a.b[s][e][1] += c
	}
}

func (a *exactSum) merge(o *exactSum) {
	for s := range a.b {
		for e := range a.b[s] {
			var c uint64
			a.b[s][e][0], c = bits.Add64(a.b[s][e][0], o.b[s][e][0], 0)
			a.b[s][e][1] += o.b[s][e][1] + c
		}
		a.inf[s] = a.inf[s] || o.inf[s]
	}
	a.nan = a.nan || o.nan
}

// specialSum is the sum of values that held a NaN (nan) or infinities
// (inf[0] +Inf, inf[1] −Inf), and whether there were any.
func specialSum(nan bool, inf [2]bool) (float64, bool) {
	switch {
	case nan || inf[0] && inf[1]:
		return math.NaN(), true
	case inf[0]:
		return math.Inf(1), true
	case inf[1]:
		return math.Inf(-1), true
	}
	return 0, false
}

// value is the exact sum rounded once to float64.
func (a *exactSum) value() float64 {
	if v, ok := specialSum(a.nan, a.inf); ok {
		return v
	}
	// 2^-1074 … 2^1024 plus 128 bits of carries fit in 2300 bits.
	total := new(big.Float).SetPrec(2300)
	var term big.Float
	for e := range 2048 {
		for s := range 2 {
			lo, hi := a.b[s][e][0], a.b[s][e][1]
			if lo|hi == 0 {
				continue
			}
			m := new(big.Int).Lsh(new(big.Int).SetUint64(hi), 64)
			m.Or(m, new(big.Int).SetUint64(lo))
			term.SetPrec(2300).SetInt(m).SetMantExp(&term, max(e, 1)-1075)
			if s == 1 {
				term.Neg(&term)
			}
			total.Add(total, &term)
		}
	}
	v, _ := total.Float64()
	return v
}

// l1Pass finds each model's L1 rescale factor of one tensor: the L1 norm of
// its task vector over that of the sparsified one (mergekit's rescale; left
// at 1 when either is below 1e-7).
func (r *run) l1Pass(ctx context.Context, ji int) error {
	r.traced(ji, "l1")
	n := len(r.p.Jobs[ji].Models)
	for _, w := range r.ws {
		if w.sums == nil {
			w.sums = make([]exactSum, 2*r.p.width())
		}
		clear(w.sums)
	}
	models := r.allModels(ji)
	err := r.parallel(ctx, r.blocks([]int{ji}), func(w *worker, b block) error {
		base := r.deltas(w, b, models)
		for i := range n {
			tau := w.taus[i*r.stride : i*r.stride+int(b.n)]
			for _, v := range tau {
				w.sums[2*i].add(math.Abs(float64(v)))
			}
			r.taskVector(w, b, i, tau, base)
			for _, v := range tau {
				w.sums[2*i+1].add(math.Abs(float64(v)))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := range n {
		var before, after exactSum
		for _, w := range r.ws {
			before.merge(&w.sums[2*i])
			after.merge(&w.sums[2*i+1])
		}
		r.scale[ji][i] = 1
		if b, a := before.value(), after.value(); b >= 1e-7 && a >= 1e-7 {
			r.scale[ji][i] = float32(b / a)
		}
	}
	return nil
}

// modelStock merges tensors with Model Stock (PathModelStock): a pass for
// the task vectors' dot products, then the merge. It owns each worker's sums.
type modelStock struct {
	perTensor
	sums [][]exactSum // per worker: the dot products of one tensor
}

func newModelStock(workers int) *modelStock {
	return &modelStock{sums: make([][]exactSum, workers)}
}

func (s *modelStock) merge(ctx context.Context, r *run, jobs []int) error {
	return eachJob(jobs, func(ji int) error { return s.mergeOne(ctx, r, ji) })
}

// mergeOne merges one tensor with Model Stock: t = N·c/(1+(N−1)·c) from
// the mean pairwise cosine c of the task vectors, then t·mean(θᵢ) + (1−t)·θ₀.
func (s *modelStock) mergeOne(ctx context.Context, r *run, ji int) error {
	r.traced(ji, "model-stock")
	n := len(r.p.Jobs[ji].Models)
	pairs := n * (n + 1) / 2 // dot products i ≤ k, norms included
	for _, w := range r.ws {
		if len(s.sums[w.id]) < pairs {
			s.sums[w.id] = make([]exactSum, pairs)
		}
		clear(s.sums[w.id])
	}
	j := &r.p.Jobs[ji]
	bs := r.blocks([]int{ji})
	models := r.allModels(ji)
	err := r.parallel(ctx, bs, func(w *worker, b block) error {
		r.deltas(w, b, models)
		sums := s.sums[w.id]
		p := 0
		for i := range n {
			for k := i; k < n; k++ {
				a, c := w.taus[i*r.stride:i*r.stride+int(b.n)], w.taus[k*r.stride:k*r.stride+int(b.n)]
				for e := range a {
					sums[p].add(float64(a[e]) * float64(c[e])) // exact: 24+24 bits
				}
				p++
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	dots := make([][]float64, n)
	p := 0
	for i := range n {
		dots[i] = make([]float64, n)
		for k := i; k < n; k++ {
			var sum exactSum
			for _, w := range r.ws {
				sum.merge(&s.sums[w.id][p])
			}
			dots[i][k] = sum.value()
			p++
		}
	}
	var cos float64
	for i := range n {
		for k := i + 1; k < n; k++ {
			c := dots[i][k] / max(math.Sqrt(dots[i][i])*math.Sqrt(dots[k][k]), 1e-6)
			cos += max(-1, min(1, c))
		}
	}
	cos /= float64(n * (n - 1) / 2)
	t := float32(float64(n) * cos / (1 + float64(n-1)*cos))
	r.stock[ji] = t

	return r.parallel(ctx, bs, func(w *worker, b block) error {
		base := r.widenBase(w, b)
		avg := w.tm[:b.n]
		clear(avg)
		for i := range n {
			t, dt := j.Models[i], j.ModelDT[i]
			theta := w.taus[i*r.stride : i*r.stride+int(b.n)]
			r.k.Widen(theta, r.src(w, t, dt, b.start, b.n), dt)
			for e, v := range theta {
				avg[e] += v
			}
		}
		for e := range avg {
			avg[e] /= float32(n)
			base[e] = float32((1 - t) * base[e])
		}
		return r.finish(w, b, base, avg, t)
	})
}
