package inspect

import (
	"math"
	"math/bits"
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
// w.tau): nonzero counts, Σ|τ|, Στ², Στᵢτⱼ and the sign conflicts. Each
// sum is four float64 partial sums (element x of a chunk goes to x mod 4,
// a chunk's last x mod 4 elements to the first) inside fixed chunks, so
// the order of every addition is fixed.
func (e *engine) norms(w *worker, n int) {
	m := e.m
	s := w.s
	for c0 := 0; c0 < n; c0 += ChunkElems {
		c1 := min(c0+ChunkElems, n)
		for i := range m {
			tau := w.tau[i][c0:c1]
			f := w.f64[i][:len(tau)]
			var l0, l1, l2, l3, q0, q1, q2, q3 float64
			x := 0
			for ; x+4 <= len(tau); x += 4 {
				v0, v1, v2, v3 := float64(tau[x]), float64(tau[x+1]), float64(tau[x+2]), float64(tau[x+3])
				f[x], f[x+1], f[x+2], f[x+3] = v0, v1, v2, v3
				l0 += math.Abs(v0)
				l1 += math.Abs(v1)
				l2 += math.Abs(v2)
				l3 += math.Abs(v3)
				q0 += v0 * v0
				q1 += v1 * v1
				q2 += v2 * v2
				q3 += v3 * v3
			}
			for ; x < len(tau); x++ {
				v := float64(tau[x])
				f[x] = v
				l0 += math.Abs(v)
				q0 += v * v
			}
			s.l1[i].Add((l0 + l1) + (l2 + l3))
			s.sq[i].Add((q0 + q1) + (q2 + q3))
		}
		for i := range m {
			fi := w.f64[i][:c1-c0]
			for j := i + 1; j < m; j++ {
				fj := w.f64[j][:len(fi)]
				var d0, d1, d2, d3 float64
				x := 0
				for ; x+4 <= len(fi); x += 4 {
					d0 += fi[x] * fj[x]
					d1 += fi[x+1] * fj[x+1]
					d2 += fi[x+2] * fj[x+2]
					d3 += fi[x+3] * fj[x+3]
				}
				for ; x < len(fi); x++ {
					d0 += fi[x] * fj[x]
				}
				s.dot[pairIndex(i, j, m)].Add((d0 + d1) + (d2 + d3))
			}
		}
	}
	// Signs, 64 elements to a word: some model positive, some negative.
	nw := wordsOf(n)
	anyPos, anyNeg := w.pos[:nw], w.neg[:nw]
	clear(anyPos)
	clear(anyNeg)
	for i := range m {
		tau := w.tau[i][:n]
		var nz int
		for wi := range nw {
			g := tau[wi*64 : min(wi*64+64, n)]
			var p, q uint64
			for x, t := range g {
				b := math.Float32bits(t)
				sign := uint64(b >> 31)
				nonzero := uint64(((b & 0x7fffffff) + 0x7fffffff) >> 31)
				p |= (nonzero &^ sign) << x
				q |= (nonzero & sign) << x
			}
			anyPos[wi] |= p
			anyNeg[wi] |= q
			nz += bits.OnesCount64(p | q)
		}
		s.nonzero[i] += int64(nz)
	}
	var conflicts int
	for wi := range nw {
		conflicts += bits.OnesCount64(anyPos[wi] & anyNeg[wi])
	}
	s.signConflict += int64(conflicts)
}

// trims adds to w.s what the trims keep and remove, for block b's n
// elements: the ties at the partial cuts first (other blocks wait for
// them), then per density each model's kept set as mask words, the mass
// outside it (four partial sums per chunk, as norms), and what the sets
// share.
func (e *engine) trims(w *worker, b, n int, partials []int) error {
	m, d := e.m, e.d
	s := w.s
	var before []uint64
	if len(partials) > 0 {
		w.counts = w.counts[:0]
		for _, x := range partials {
			c := &e.cuts[x]
			w.counts = append(w.counts, uint64(e.ks.Range(w.tau[x/d][:n], c.bits, c.bits, nil)))
		}
		e.ties.post(b, w.counts)
		before = w.before[:len(partials)]
		if err := e.ties.wait(b, before); err != nil {
			return err
		}
	}
	nw := wordsOf(n)
	for k := range d {
		for i := range m {
			c := &e.cuts[i*d+k]
			tau := w.tau[i][:n]
			kw, sw := w.kept[i][:nw], w.sign[i][:nw]
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
				continue
			}
			// Kept: a magnitude pattern above gt; at the threshold, the
			// first take of this block's ties, or all, or none.
			thr := c.bits
			gt := thr // strictly above
			mode := c.ties()
			var run, need uint64
			if mode == tiesAll {
				gt = thr - 1 // thr ≥ 1 here
			}
			if mode == tiesPartial {
				for p, x := range partials {
					if x == i*d+k {
						run = before[p]
						ties := w.counts[p]
						need = c.need
						switch {
						case run >= need:
							mode = tiesNone
						case need-run >= ties:
							mode, gt = tiesNone, thr-1
						}
					}
				}
			}
			var kept int
			if mode == tiesPartial {
				kept = trimTies(tau, kw, sw, thr, run, need, s.removed[k][i:i+1])
			} else {
				kept = trimFast(tau, kw, sw, gt, s.removed[k][i:i+1])
			}
			s.kept[k][i] += int64(kept)
		}
		// What the kept sets share, a word at a time.
		var overlap, topkConflict int
		po := s.pairOverlap[k]
		for wi := range nw {
			var ones, twos, pos, neg uint64
			for i := range m {
				kw, sw := w.kept[i][wi], w.sign[i][wi]
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
				ki := w.kept[i][wi] & twos
				if ki == 0 {
					continue
				}
				for j := i + 1; j < m; j++ {
					po[pairIndex(i, j, m)] += int64(bits.OnesCount64(ki & w.kept[j][wi]))
				}
			}
		}
		s.overlap[k] += int64(overlap)
		s.topkConflict[k] += int64(topkConflict)
	}
	return nil
}

// trimFast keeps the values of tau whose magnitude pattern exceeds gt: it
// sets their bits in kw (and their sign bits in sw) and adds the others'
// magnitudes to removed, four partial sums per chunk. It returns how many
// it kept.
func trimFast(tau []float32, kw, sw []uint64, gt uint32, removed []Acc) int {
	n := len(tau)
	kept := 0
	for c0 := 0; c0 < n; c0 += ChunkElems {
		c1 := min(c0+ChunkElems, n)
		var r0, r1, r2, r3 float64
		for w0 := c0; w0 < c1; w0 += 64 {
			g := tau[w0:min(w0+64, c1)]
			var k, sg uint64
			x := 0
			for ; x+4 <= len(g); x += 4 {
				b0, b1, b2, b3 := math.Float32bits(g[x]), math.Float32bits(g[x+1]), math.Float32bits(g[x+2]), math.Float32bits(g[x+3])
				a0, a1, a2, a3 := b0&0x7fffffff, b1&0x7fffffff, b2&0x7fffffff, b3&0x7fffffff
				// in: 1 when a > gt (both are below 2^31)
				i0, i1, i2, i3 := (gt-a0)>>31, (gt-a1)>>31, (gt-a2)>>31, (gt-a3)>>31
				k |= uint64(i0)<<x | uint64(i1)<<(x+1) | uint64(i2)<<(x+2) | uint64(i3)<<(x+3)
				sg |= uint64(b0>>31)<<x | uint64(b1>>31)<<(x+1) | uint64(b2>>31)<<(x+2) | uint64(b3>>31)<<(x+3)
				// |τ| where removed, else 0
				r0 += float64(math.Float32frombits(a0 & (i0 - 1)))
				r1 += float64(math.Float32frombits(a1 & (i1 - 1)))
				r2 += float64(math.Float32frombits(a2 & (i2 - 1)))
				r3 += float64(math.Float32frombits(a3 & (i3 - 1)))
			}
			for ; x < len(g); x++ {
				b := math.Float32bits(g[x])
				a := b & 0x7fffffff
				in := (gt - a) >> 31
				k |= uint64(in) << x
				sg |= uint64(b>>31) << x
				r0 += float64(math.Float32frombits(a & (in - 1)))
			}
			kw[w0/64] = k
			sw[w0/64] = sg & k
			kept += bits.OnesCount64(k)
		}
		removed[0].Add((r0 + r1) + (r2 + r3))
	}
	return kept
}

// trimTies is trimFast for the block where only some of the values at the
// threshold thr are kept: the first need of them in the tensor, run being
// how many came in the blocks before.
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
