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

	// What no trim changes: norms, dot products, signs.
	for c0 := 0; c0 < n; c0 += ChunkElems {
		c1 := min(c0+ChunkElems, n)
		for i := range m {
			var l1, sq float64
			nz := 0
			for _, t := range w.tau[i][c0:c1] {
				v := float64(t)
				l1 += math.Abs(v)
				sq += v * v
				if t != 0 {
					nz++
				}
			}
			s.l1[i].Add(l1)
			s.sq[i].Add(sq)
			s.nonzero[i] += int64(nz)
			for j := i + 1; j < m; j++ {
				var dot float64
				tj := w.tau[j][c0:c1]
				for x, t := range w.tau[i][c0:c1] {
					dot += float64(t) * float64(tj[x])
				}
				s.dot[pairIndex(i, j, m)].Add(dot)
			}
		}
	}
	pos, neg := w.pos[:n], w.neg[:n]
	clear(pos)
	clear(neg)
	for i := range m {
		bit := uint64(1) << i
		for x, t := range w.tau[i][:n] {
			if t > 0 {
				pos[x] |= bit
			} else if t < 0 {
				neg[x] |= bit
			}
		}
	}
	var conflicts int64
	for x := range pos {
		if pos[x] != 0 && neg[x] != 0 {
			conflicts++
		}
	}
	s.signConflict += conflicts

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
			bit := uint64(1) << i
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
			var kept int64
			for c0 := 0; c0 < n; c0 += ChunkElems {
				var rem float64
				for x := c0; x < min(c0+ChunkElems, n); x++ {
					t := tau[x]
					a := kernels.AbsBits(t)
					in := a > thr
					if a == thr {
						switch mode {
						case tiesAll:
							in = true
						case tiesPartial:
							in = run < need
							run++
						}
					}
					if in {
						keep[x] |= bit
						kept++
					} else {
						rem += math.Abs(float64(t))
					}
				}
				s.removed[k][i].Add(rem)
			}
			s.kept[k][i] += kept
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
