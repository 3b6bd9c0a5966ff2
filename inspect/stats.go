package inspect

import (
	"math"
	"math/bits"

	"github.com/tiesmm/tiesmm/kernels"
)

// How a cut treats the values at its threshold.
const (
	tiesNone = iota
	tiesAll
	tiesPartial
)

func (c *cut) ties() int {
	switch {
	case c.all || c.none || c.bits == 0:
		return tiesNone
	case c.need >= c.equal:
		return tiesAll
	}
	return tiesPartial
}

// wordsOf is the number of 64-element mask words of n elements.
func wordsOf(n int) int { return (n + 63) / 64 }

// norms adds to w.s what no trim changes, for block b's n elements (τ in
// w.tau): nonzero counts, Σ|τ|, Στ², Στᵢτⱼ and the sign conflicts. The
// kernels sum each chunk in a fixed order (kernels.SumChunk), so the order
// of every addition is fixed.
func (e *engine) norms(w *worker, n int) {
	m := e.m
	s := w.s
	nc, nw := kernels.Chunks(n), wordsOf(n)
	c1, c2 := w.c1[:nc], w.c2[:nc]
	anyPos, anyNeg := w.pos[:nw], w.neg[:nw]
	clear(anyPos)
	clear(anyNeg)
	for i := range m {
		s.nonzero[i] += int64(e.ks.Norms(w.tau[i][:n], c1, c2, anyPos, anyNeg))
		addAll(&s.l1[i], c1)
		addAll(&s.sq[i], c2)
	}
	for i := range m {
		for j := i + 1; j < m; j++ {
			e.ks.Dot(w.tau[i][:n], w.tau[j][:n], c1)
			addAll(&s.dot[pairIndex(i, j, m)], c1)
		}
	}
	var conflicts int
	for wi := range nw {
		conflicts += bits.OnesCount64(anyPos[wi] & anyNeg[wi])
	}
	s.signConflict += int64(conflicts)
}

// addAll adds every chunk sum of c to a.
func addAll(a *Acc, c []float64) {
	for _, v := range c {
		a.Add(v)
	}
}

// trims adds to w.s what the trims keep and remove, for block b's n
// elements: each model's kept set at each density as mask words, the mass
// outside it (chunk sums, as norms), and what the sets share. A block
// posts its ties at the partial cuts first, trims at the other cuts while
// the blocks before post theirs, and only then waits for them.
func (e *engine) trims(w *worker, b, n int, partials []int) error {
	if len(partials) > 0 {
		w.counts = w.counts[:0]
		for _, x := range partials {
			c := &e.cuts[x]
			w.counts = append(w.counts, uint64(e.ks.Range(w.tau[x/e.d][:n], c.bits, c.bits, nil)))
		}
		e.ties.post(b, w.counts)
	}
	p := 0
	for x := range e.cuts {
		if p < len(partials) && partials[p] == x {
			p++
			continue
		}
		e.trimCut(w, x, n, e.cuts[x].gt())
	}
	if len(partials) > 0 {
		before := w.before[:len(partials)]
		if err := e.ties.wait(b, before); err != nil {
			return err
		}
		for p, x := range partials {
			e.trimPartial(w, x, n, before[p], w.counts[p])
		}
	}
	for k := range e.d {
		e.overlaps(w, k, wordsOf(n))
	}
	return nil
}

// gt is the magnitude pattern above which a cut whose ties are all kept or
// all trimmed keeps a value.
func (c *cut) gt() uint32 {
	if c.ties() == tiesAll {
		return c.bits - 1 // bits ≥ 1 here
	}
	return c.bits
}

// trimCut trims model x/d's τ at cut x, keeping the magnitude patterns
// above gt, into the words of x.
func (e *engine) trimCut(w *worker, x, n int, gt uint32) {
	i, k := x/e.d, x%e.d
	c := &e.cuts[x]
	tau := w.tau[i][:n]
	kw, sw := w.kept[x][:wordsOf(n)], w.sign[x][:wordsOf(n)]
	s := w.s
	if c.none {
		clear(kw)
		clear(sw)
		for c0 := 0; c0 < n; c0 += ChunkElems {
			var rem float64
			for _, t := range tau[c0:min(c0+ChunkElems, n)] {
				rem += math.Abs(float64(t))
			}
			s.removed[k][i].Add(rem)
		}
		return
	}
	nc := kernels.Chunks(n)
	s.kept[k][i] += int64(e.ks.TrimWords(tau, gt, kw, sw, w.c1[:nc]))
	addAll(&s.removed[k][i], w.c1[:nc])
}

// trimPartial trims at partial cut x, of whose ties run came in the blocks
// before and ties are in this one: the first c.need in the tensor are kept.
func (e *engine) trimPartial(w *worker, x, n int, run, ties uint64) {
	c := &e.cuts[x]
	switch need := c.need; {
	case run >= need:
		e.trimCut(w, x, n, c.bits)
	case need-run >= ties:
		e.trimCut(w, x, n, c.bits-1)
	default:
		i, k := x/e.d, x%e.d
		nw := wordsOf(n)
		kept := trimTies(w.tau[i][:n], w.kept[x][:nw], w.sign[x][:nw], c.bits, run, need, w.s.removed[k][i:i+1])
		w.s.kept[k][i] += int64(kept)
	}
}

// overlaps adds what the kept sets at density k share, a word at a time.
func (e *engine) overlaps(w *worker, k, nw int) {
	m, d := e.m, e.d
	s := w.s
	var overlap, topkConflict int
	po := s.pairOverlap[k]
	for wi := range nw {
		var ones, twos, pos, neg uint64
		for i := range m {
			kw, sw := w.kept[i*d+k][wi], w.sign[i*d+k][wi]
			twos |= ones & kw
			ones |= kw
			pos |= kw &^ sw
			neg |= kw & sw
		}
		if twos == 0 {
			continue
		}
		overlap += bits.OnesCount64(twos)
		topkConflict += bits.OnesCount64(pos & neg)
		for i := range m {
			ki := w.kept[i*d+k][wi] & twos
			if ki == 0 {
				continue
			}
			for j := i + 1; j < m; j++ {
				po[pairIndex(i, j, m)] += int64(bits.OnesCount64(ki & w.kept[j*d+k][wi]))
			}
		}
	}
	s.overlap[k] += int64(overlap)
	s.topkConflict[k] += int64(topkConflict)
}

// trimTies is the kernels' TrimWords, in the same order, for the block where
// only some of the values at the threshold thr are kept: the first need of
// them in the tensor, run being how many came in the blocks before.
func trimTies(tau []float32, kw, sw []uint64, thr uint32, run, need uint64, removed []Acc) int {
	n := len(tau)
	kept := 0
	for c0 := 0; c0 < n; c0 += ChunkElems {
		c1 := min(c0+ChunkElems, n)
		var r [4]float64
		for w0 := c0; w0 < c1; w0 += 64 {
			g := tau[w0:min(w0+64, c1)]
			var k, sg uint64
			for x, t := range g {
				b := math.Float32bits(t)
				a := b & 0x7fffffff
				in := (thr - a) >> 31
				if a == thr {
					if run < need {
						in = 1
					}
					run++
				}
				k |= uint64(in) << x
				sg |= uint64(b>>31) << x
				lane := x & 3
				if w0+x-c0 >= (c1-c0)&^3 {
					lane = 0 // the chunk's last few: the first partial sum
				}
				r[lane] += float64(math.Float32frombits(a & (in - 1)))
			}
			kw[w0/64] = k
			sw[w0/64] = sg & k
			kept += bits.OnesCount64(k)
		}
		removed[0].Add((r[0] + r[1]) + (r[2] + r[3]))
	}
	return kept
}
