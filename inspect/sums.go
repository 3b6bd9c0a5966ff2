package inspect

import (
	"math"
)

// sums holds what a row adds up: exact counts and exact sums (Acc), so that a
// row of many tensors is the sum of theirs whatever the order, and its
// fractions are fractions of sums.
type sums struct {
	m, d         int
	n            int64
	nonzero      []int64
	signConflict int64
	l1, sq       []Acc
	dot          []Acc // pairs i < j, in pairIndex order
	// per density
	kept         [][]int64 // [d][model]
	overlap      []int64
	pairOverlap  [][]int64 // [d][pair]
	topkConflict []int64
	removed      [][]Acc // [d][model]
}

func newSums(m, d int) *sums {
	p := m * (m - 1) / 2
	s := &sums{m: m, d: d, nonzero: make([]int64, m), l1: make([]Acc, m), sq: make([]Acc, m),
		dot: make([]Acc, p), kept: make([][]int64, d), overlap: make([]int64, d),
		pairOverlap: make([][]int64, d), topkConflict: make([]int64, d), removed: make([][]Acc, d)}
	for k := range d {
		s.kept[k] = make([]int64, m)
		s.pairOverlap[k] = make([]int64, p)
		s.removed[k] = make([]Acc, m)
	}
	return s
}

// pairIndex numbers the pairs i < j of m models: (0,1), (0,2), …, (1,2), ….
func pairIndex(i, j, m int) int { return i*m - i*(i+1)/2 + (j - i - 1) }

func (s *sums) add(o *sums) {
	s.n += o.n
	s.signConflict += o.signConflict
	for i := range s.m {
		s.nonzero[i] += o.nonzero[i]
		s.l1[i].AddAcc(&o.l1[i])
		s.sq[i].AddAcc(&o.sq[i])
	}
	for p := range s.dot {
		s.dot[p].AddAcc(&o.dot[p])
	}
	for k := range s.d {
		s.overlap[k] += o.overlap[k]
		s.topkConflict[k] += o.topkConflict[k]
		for i := range s.m {
			s.kept[k][i] += o.kept[k][i]
			s.removed[k][i].AddAcc(&o.removed[k][i])
		}
		for p := range s.pairOverlap[k] {
			s.pairOverlap[k][p] += o.pairOverlap[k][p]
		}
	}
}

func (s *sums) reset() {
	s.n, s.signConflict = 0, 0
	clear(s.nonzero)
	for i := range s.m {
		s.l1[i].Reset()
		s.sq[i].Reset()
	}
	for p := range s.dot {
		s.dot[p].Reset()
	}
	for k := range s.d {
		s.overlap[k], s.topkConflict[k] = 0, 0
		clear(s.kept[k])
		clear(s.pairOverlap[k])
		for i := range s.m {
			s.removed[k][i].Reset()
		}
	}
}

// Num is a JSON number that is null when it is NaN (a fraction of nothing).
type Num float64

func (v Num) MarshalJSON() ([]byte, error) {
	f := float64(v)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return encodeFloat(f), nil
}

func (v *Num) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*v = Num(math.NaN())
		return nil
	}
	f, err := parseFloat(b)
	*v = Num(f)
	return err
}

// Trim is what the trim at one density keeps and removes.
type Trim struct {
	Density          float64   `json:"density"`
	Kept             []int64   `json:"kept"`
	Overlap          int64     `json:"overlap"`
	PairOverlap      [][]int64 `json:"pair_overlap"`
	TopkConflict     int64     `json:"topk_conflict"`
	TopkConflictFrac Num       `json:"topk_conflict_frac"`
	RemovedL1        []float64 `json:"removed_l1"`
	RemovedFrac      []Num     `json:"removed_frac"`
}

// Figures are one row's statistics (docs/inspect.md). The trim fields at the
// top are those of the first density; Trims has every density's.
type Figures struct {
	N                int64     `json:"n"`
	Nonzero          []int64   `json:"nonzero"`
	Kept             []int64   `json:"kept"`
	Overlap          int64     `json:"overlap"`
	PairOverlap      [][]int64 `json:"pair_overlap"`
	TopkConflict     int64     `json:"topk_conflict"`
	TopkConflictFrac Num       `json:"topk_conflict_frac"`
	SignConflict     int64     `json:"sign_conflict"`
	SignConflictFrac Num       `json:"sign_conflict_frac"`
	L1               []float64 `json:"l1"`
	L2               []float64 `json:"l2"`
	RemovedL1        []float64 `json:"removed_l1"`
	RemovedFrac      []Num     `json:"removed_frac"`
	Cos              [][]Num   `json:"cos"`
	Trims            []Trim    `json:"trims"`
}

func frac(a, b float64) Num {
	if b == 0 {
		return Num(math.NaN())
	}
	return Num(a / b)
}

// figures turns the sums into a row's figures.
func (s *sums) figures(densities []float64) Figures {
	n := float64(s.n)
	f := Figures{N: s.n, Nonzero: append([]int64(nil), s.nonzero...), SignConflict: s.signConflict,
		SignConflictFrac: frac(float64(s.signConflict), n), L1: make([]float64, s.m), L2: make([]float64, s.m)}
	sq := make([]float64, s.m)
	for i := range s.m {
		f.L1[i] = s.l1[i].Float64()
		sq[i] = s.sq[i].Float64()
		f.L2[i] = math.Sqrt(sq[i])
	}
	f.Cos = make([][]Num, s.m)
	for i := range s.m {
		f.Cos[i] = make([]Num, s.m)
	}
	for i := range s.m {
		f.Cos[i][i] = 1
		for j := i + 1; j < s.m; j++ {
			c := Num(math.NaN())
			if sq[i] != 0 && sq[j] != 0 {
				c = Num(s.dot[pairIndex(i, j, s.m)].Float64() / (f.L2[i] * f.L2[j]))
			}
			f.Cos[i][j], f.Cos[j][i] = c, c
		}
	}
	for k, d := range densities {
		t := Trim{Density: d, Kept: append([]int64(nil), s.kept[k]...), Overlap: s.overlap[k],
			TopkConflict: s.topkConflict[k], TopkConflictFrac: frac(float64(s.topkConflict[k]), n),
			RemovedL1: make([]float64, s.m), RemovedFrac: make([]Num, s.m), PairOverlap: make([][]int64, s.m)}
		for i := range s.m {
			t.RemovedL1[i] = s.removed[k][i].Float64()
			t.RemovedFrac[i] = frac(t.RemovedL1[i], f.L1[i])
			t.PairOverlap[i] = make([]int64, s.m)
			t.PairOverlap[i][i] = s.kept[k][i]
		}
		for i := range s.m {
			for j := i + 1; j < s.m; j++ {
				v := s.pairOverlap[k][pairIndex(i, j, s.m)]
				t.PairOverlap[i][j], t.PairOverlap[j][i] = v, v
			}
		}
		f.Trims = append(f.Trims, t)
	}
	if len(f.Trims) > 0 {
		t := f.Trims[0]
		f.Kept, f.Overlap, f.PairOverlap, f.TopkConflict, f.TopkConflictFrac = t.Kept, t.Overlap, t.PairOverlap, t.TopkConflict, t.TopkConflictFrac
		f.RemovedL1, f.RemovedFrac = t.RemovedL1, t.RemovedFrac
	}
	return f
}
