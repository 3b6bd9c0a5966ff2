package inspect

import (
	"math"

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

// stats adds block b's n elements (τ in w.tau) to w.s.
func (e *engine) stats(w *worker, b, n int, partials []int) error {
	m, d := e.m, e.d
	s := w.s
	// The ties of the partial cuts first: other blocks wait for them.
	var before []uint64
	if len(partials) > 0 {
		w.counts = w.counts[:0]
		for _, x := range partials {
			c := &e.cuts[x]
			w.counts = append(w.counts, uint64(e.ks.Range(w.tau[x/d][:n], c.bits, c.bits, nil)))
		}
		e.ties.post(b, w.counts)
		before = make([]uint64, len(partials))
	}

	// What no trim changes: norms, dot products, signs. Four partial sums
	// each, in a fixed order inside fixed chunks, added in a fixed order.
	pos, neg := w.pos[:n], w.neg[:n]
	clear(pos)
	clear(neg)
	for c0 := 0; c0 < n; c0 += ChunkElems {
		c1 := min(c0+ChunkElems, n)
		for i := range m {
			tau := w.tau[i][c0:c1]
			p, q := pos[c0:c1], neg[c0:c1]
			var l0, l1, l2, l3, q0, q1, q2, q3 float64
			var nz int
			x := 0
			for ; x+4 <= len(tau); x += 4 {
				v0, v1, v2, v3 := float64(tau[x]), float64(tau[x+1]), float64(tau[x+2]), float64(tau[x+3])
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
				l0 += math.Abs(v)
				q0 += v * v
			}
			for x, t := range tau {
				b := math.Float32bits(t)
				sign := uint64(b >> 31)
				nonzero := uint64(((b & 0x7fffffff) + 0x7fffffff) >> 31)
				p[x] |= (nonzero &^ sign) << i
				q[x] |= (nonzero & sign) << i
				nz += int(nonzero)
			}
			s.l1[i].Add((l0 + l1) + (l2 + l3))
			s.sq[i].Add((q0 + q1) + (q2 + q3))
			s.nonzero[i] += int64(nz)
			for j := i + 1; j < m; j++ {
				tj := w.tau[j][c0:c1]
				tj = tj[:len(tau)]
				var d0, d1, d2, d3 float64
				x := 0
				for ; x+4 <= len(tau); x += 4 {
					d0 += float64(tau[x]) * float64(tj[x])
					d1 += float64(tau[x+1]) * float64(tj[x+1])
					d2 += float64(tau[x+2]) * float64(tj[x+2])
					d3 += float64(tau[x+3]) * float64(tj[x+3])
				}
				for ; x < len(tau); x++ {
					d0 += float64(tau[x]) * float64(tj[x])
				}
				s.dot[pairIndex(i, j, m)].Add((d0 + d1) + (d2 + d3))
			}
		}
	}
	var conflicts uint64
	for x := range pos {
		a, b := pos[x], neg[x]
		conflicts += ((a | -a) & (b | -b)) >> 63
	}
	s.signConflict += int64(conflicts)

	if len(partials) > 0 {
		if err := e.ties.wait(b, before); err != nil {
			return err
		}
	}
	keep := w.keep[:n]
	for k := range d {
		clear(keep)
		for i := range m {
			c := &e.cuts[i*d+k]
			tau := w.tau[i][:n]
			if c.none {
				for c0 := 0; c0 < n; c0 += ChunkElems {
					var rem float64
					for _, t := range tau[c0:min(c0+ChunkElems, n)] {
						rem += math.Abs(float64(t))
					}
					s.removed[k][i].Add(rem)
				}
				continue
			}
			thr := c.bits
			var run, need uint64
			mode := c.ties()
			if mode == tiesPartial {
				for p, x := range partials {
					if x == i*d+k {
						run = before[p]
					}
				}
				need = c.need
			}
			var kept uint64
			for x, t := range tau {
				a := kernels.AbsBits(t)
				in := uint64((thr - a) >> 31) // a > thr: both are below 2^31
				if a == thr {
					switch mode {
					case tiesAll:
						in = 1
					case tiesPartial:
						if run < need {
							in = 1
						}
						run++
					}
				}
				keep[x] |= in << i
				kept += in
			}
			for c0 := 0; c0 < n; c0 += ChunkElems {
				c1 := min(c0+ChunkElems, n)
				t, km := tau[c0:c1], keep[c0:c1]
				km = km[:len(t)]
				// |τ| where the trim removes it, else 0, by masking the bits.
				out := func(x int) float64 {
					mask := (km[x]>>i)&1 - 1
					return math.Float64frombits(math.Float64bits(float64(t[x])) & mask &^ (1 << 63))
				}
				var r0, r1, r2, r3 float64
				x := 0
				for ; x+4 <= len(t); x += 4 {
					r0 += out(x)
					r1 += out(x + 1)
					r2 += out(x + 2)
					r3 += out(x + 3)
				}
				for ; x < len(t); x++ {
					r0 += out(x)
				}
				s.removed[k][i].Add((r0 + r1) + (r2 + r3))
			}
			s.kept[k][i] += int64(kept)
		}
		var overlap, topkConflict int64
		po := s.pairOverlap[k]
		for x, km := range keep {
			if km&(km-1) == 0 { // at most one model keeps it
				continue
			}
			overlap++
			if km&pos[x] != 0 && km&neg[x] != 0 {
				topkConflict++
			}
			for i := 0; i < m; i++ {
				if km&(1<<i) == 0 {
					continue
				}
				for j := i + 1; j < m; j++ {
					if km&(1<<j) != 0 {
						po[pairIndex(i, j, m)]++
					}
				}
			}
		}
		s.overlap[k] += overlap
		s.topkConflict[k] += topkConflict
	}
	return nil
}
