package merge

import (
	"context"
	"fmt"
	"math"
	"math/big"
	"unsafe"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/kernels"
)

// Spherical interpolation between two vectors: mergekit's slerp (the base
// and one model) and nuslerp (two models, or two task vectors against a
// base). A vector is a whole tensor, or, for nuslerp, each of its rows
// (last axis) or columns (first axis). The scalars of a vector come from
// its squared norms and dot product, summed exactly; its elements are then
// combined in float32.

// SlerpKind is which of mergekit's spherical interpolations a method is.
type SlerpKind uint8

const (
	SlerpNone SlerpKind = iota
	// SlerpPair: slerp, v0 the base and v1 the one model, t global
	// (mergekit's numpy code: its float32 scalar chain).
	SlerpPair
	// SlerpNu: nuslerp, v0 and v1 the two models (their task vectors with
	// a base), t = w1/(w0+w1).
	SlerpNu
)

// SlerpAxis is what one vector of a nuslerp is.
type SlerpAxis uint8

const (
	AxisTensor  SlerpAxis = iota // the whole tensor (nuslerp_flatten, the default)
	AxisRows                     // along the last axis: each row
	AxisColumns                  // along the first axis: each column (nuslerp_row_wise)
)

func (a SlerpAxis) String() string {
	return [...]string{"tensor", "rows", "columns"}[a]
}

// slerpAxis is job ji's vectors: a 1-D tensor or a scalar is one vector
// whatever the axis.
func (p *Plan) slerpAxis(ji int) SlerpAxis {
	if p.Method.Slerp == SlerpNone || len(p.Jobs[ji].Shape) < 2 {
		return AxisTensor
	}
	return p.Method.SlerpAxis
}

// slerpColumns is how many column vectors job ji has: one per position of
// the axes after the first.
func slerpColumns(j *Job) int {
	if len(j.Shape) == 0 || j.Shape[0] == 0 {
		return 1
	}
	return int(max(1, j.Elements/j.Shape[0]))
}

// slerpRecipe reads nuslerp's switches: without a base_model the models
// themselves are interpolated; nuslerp_flatten (default true) makes each
// tensor one vector, else nuslerp_row_wise picks columns (true) or rows.
func slerpRecipe(c *config.Config, m *Method, top func(string) (config.Param, bool)) error {
	if m.Slerp != SlerpNu {
		return nil
	}
	m.NoBase = c.BaseModel == ""
	flag := func(key string, def bool) (bool, error) {
		p, ok := top(key)
		if !ok {
			return def, nil
		}
		if p.Kind != config.KindBool {
			return false, fmt.Errorf("%s: %s: want true or false", c.File, key)
		}
		return p.Bool, nil
	}
	flatten, err := flag("nuslerp_flatten", true)
	if err != nil {
		return err
	}
	columns, err := flag("nuslerp_row_wise", false)
	switch {
	case err != nil:
		return err
	case flatten:
		m.SlerpAxis = AxisTensor
	case columns:
		m.SlerpAxis = AxisColumns
	default:
		m.SlerpAxis = AxisRows
	}
	return nil
}

// slerpT is the interpolation factor of one tensor: slerp's t, or nuslerp's
// w1/(w0+w1) in double precision (0.5 when |w0+w1| < 1e-6).
func slerpT(method string, num func(model int, key string, def float64) (float64, error)) (float64, error) {
	switch method {
	case "slerp":
		t, err := num(-1, "t", math.NaN())
		if err == nil && math.IsNaN(t) {
			err = fmt.Errorf("slerp needs the parameter t (0: the base, 1: the model)")
		}
		return t, err
	case "nuslerp":
		var w [2]float64
		for i := range w {
			v, err := num(i, "weight", math.NaN())
			if err == nil && math.IsNaN(v) {
				err = fmt.Errorf("nuslerp needs a weight for every model")
			}
			if err != nil {
				return 0, fmt.Errorf("model %d: %w", i+1, err)
			}
			w[i] = v
		}
		if math.Abs(w[0]+w[1]) < 1e-6 {
			return 0.5, nil
		}
		return w[1] / (w[0] + w[1]), nil
	}
	return 0, nil
}

// slerpCoef combines one vector: out = (a0·v0 + a1·v1)/div, each product,
// the sum and the quotient rounded to float32 (div is 1 for a lerp and for
// slerp, whose quotients are in a0 and a1 already).
type slerpCoef struct{ a0, a1, div float32 }

// pairCoef is slerp's scalar chain (mergekit's numpy code, float32 scalars)
// from the exact sums Σv0², Σv1², Σv0·v1.
func pairCoef(t, ss0, ss1, dot float64) slerpCoef {
	n0, n1 := float32(math.Sqrt(ss0)), float32(math.Sqrt(ss1))
	d0, d1 := 1.0, 1.0
	if n0 > float32(1e-8) {
		d0 = float64(n0)
	}
	if n1 > float32(1e-8) {
		d1 = float64(n1)
	}
	d := float32(dot / (d0 * d1))
	tf := float32(t)
	if abs32(d) > float32(0.9995) {
		return slerpCoef{a0: float32(1 - t), a1: tf, div: 1}
	}
	theta := float32(math.Acos(float64(d)))
	s := float32(math.Sin(float64(theta)))
	thetaT := float32(theta * tf)
	s0 := float32(float32(math.Sin(float64(float32(theta-thetaT)))) / s)
	s1 := float32(float32(math.Sin(float64(thetaT))) / s)
	return slerpCoef{a0: s0, a1: s1, div: 1}
}

// nuCoef is nuslerp's scalar chain (mergekit's torch code in float32) from
// the exact sums, with the fix that an antiparallel pair (clamped cosine
// −1) is interpolated linearly, as a parallel one is.
func nuCoef(t, ss0, ss1, dot float64) slerpCoef {
	eps := float32(1e-7)
	n0, n1 := max(float32(math.Sqrt(ss0)), eps), max(float32(math.Sqrt(ss1)), eps)
	c := float32(dot / (float64(n0) * float64(n1)))
	if c < -1 {
		c = -1
	} else if c > 1 {
		c = 1
	}
	theta := float32(math.Acos(float64(c)))
	s := float32(math.Sin(float64(theta)))
	t0, t1 := float32(1-t), float32(t)
	if abs32(s) < float32(1e-8) || c == -1 {
		return slerpCoef{a0: t0, a1: t1, div: 1}
	}
	a0 := float32(math.Sin(float64(float32(t0 * theta))))
	a1 := float32(math.Sin(float64(float32(t1 * theta))))
	return slerpCoef{a0: a0, a1: a1, div: s}
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

// slerpCoef is the method's combination for one vector's exact sums Σv0²,
// Σv1² and Σv0·v1.
func (m Method) slerpCoef(t, ss0, ss1, dot float64) slerpCoef {
	if m.Slerp == SlerpPair {
		return pairCoef(t, ss0, ss1, dot)
	}
	return nuCoef(t, ss0, ss1, dot)
}

// combine writes (a0·v0 + a1·v1)/div into out, in float32.
func (c slerpCoef) combine(out, v0, v1 []float32) {
	for e := range out {
		p0 := float32(c.a0 * v0[e])
		p1 := float32(c.a1 * v1[e])
		out[e] = float32(p0+p1) / c.div
	}
}

// wideSum adds products of two float32 values (or squares) exactly,
// whatever their order, in a fixed-point integer: such a product is an
// integer of at most 53 bits times 2^e with −350 ≤ e ≤ 203, so 704 bits
// hold any sum of fewer than 2^90 of them. It is small enough to keep one
// per row or column.
type wideSum struct {
	w   [wideWords]uint64 // two's complement, bit 0 weighs 2^-wideBias
	nan bool
	inf [2]bool
}

const (
	wideWords = 11
	wideBias  = 352
	wideBytes = int64(unsafe.Sizeof(wideSum{}))
)

func (a *wideSum) add(x float64) {
	u := math.Float64bits(x)
	s, e, m := u>>63, int((u>>52)&0x7ff), u&(1<<52-1)
	switch {
	case e == 0x7ff && m != 0:
		a.nan = true
		return
	case e == 0x7ff:
		a.inf[s] = true
		return
	case e == 0:
		if m == 0 {
			return
		}
		e = 1 // not a product of float32 values: below the sum's resolution
	default:
		m |= 1 << 52
	}
	pos := e - 1075 + wideBias
	if pos < 0 {
		m >>= uint(-pos)
		pos = 0
	}
	k, sh := pos>>6, uint(pos&63)
	lo, hi := m<<sh, m>>(64-sh)
	if sh == 0 {
		hi = 0
	}
	if s == 0 {
		var c uint64
		a.w[k], c = addc(a.w[k], lo, 0)
		a.w[k+1], c = addc(a.w[k+1], hi, c)
		for i := k + 2; c != 0 && i < wideWords; i++ {
			a.w[i], c = addc(a.w[i], 0, c)
		}
		return
	}
	var b uint64
	a.w[k], b = subb(a.w[k], lo, 0)
	a.w[k+1], b = subb(a.w[k+1], hi, b)
	for i := k + 2; b != 0 && i < wideWords; i++ {
		a.w[i], b = subb(a.w[i], 0, b)
	}
}

func addc(x, y, c uint64) (uint64, uint64) {
	s := x + y + c
	return s, ((x & y) | ((x | y) &^ s)) >> 63
}

func subb(x, y, b uint64) (uint64, uint64) {
	d := x - y - b
	return d, ((^x & y) | (^(x ^ y) & d)) >> 63
}

func (a *wideSum) merge(o *wideSum) {
	var c uint64
	for i := range a.w {
		a.w[i], c = addc(a.w[i], o.w[i], c)
	}
	a.nan = a.nan || o.nan
	a.inf[0] = a.inf[0] || o.inf[0]
	a.inf[1] = a.inf[1] || o.inf[1]
}

// value is the exact sum rounded once to float64.
func (a *wideSum) value() float64 {
	if v, ok := specialSum(a.nan, a.inf); ok {
		return v
	}
	w := a.w
	neg := w[wideWords-1]>>63 == 1
	if neg {
		var c uint64 = 1
		for i := range w {
			w[i], c = addc(^w[i], 0, c)
		}
	}
	top := wideWords - 1
	for top >= 0 && w[top] == 0 {
		top--
	}
	if top < 0 {
		return 0
	}
	// Exact as a float64 when the magnitude fits 53 bits in one word.
	var v float64
	if w[top] < 1<<53 && lowZero(w[:top]) {
		v = math.Ldexp(float64(w[top]), 64*top-wideBias)
	} else {
		buf := make([]byte, 8*(top+1))
		for i := 0; i <= top; i++ {
			for k := range 8 {
				buf[len(buf)-1-8*i-k] = byte(w[i] >> (8 * k))
			}
		}
		var f big.Float
		f.SetInt(new(big.Int).SetBytes(buf))
		f.SetMantExp(&f, -wideBias)
		v, _ = f.Float64()
	}
	if neg {
		v = -v
	}
	return v
}

func lowZero(ws []uint64) bool {
	for _, x := range ws {
		if x != 0 {
			return false
		}
	}
	return true
}

// slerpTensors merges tensors by slerp or nuslerp (PathSlerp): whole
// vectors (a tensor, or its columns) take a pass for their sums and then
// the merge; rows, held whole by each block, are summed and merged in one
// pass. It owns each worker's sums.
type slerpTensors struct {
	perTensor
	sums   [][]wideSum   // per worker: Σv0², Σv1², Σv0·v1 of each column
	tensor [][3]exactSum // per worker: the same of a tensor that is one vector
	coef   []slerpCoef   // the vectors of the tensor being merged
}

func newSlerpTensors(workers int) *slerpTensors {
	return &slerpTensors{sums: make([][]wideSum, workers), tensor: make([][3]exactSum, workers)}
}

func (s *slerpTensors) merge(ctx context.Context, r *run, jobs []int) error {
	return eachJob(jobs, func(ji int) error { return s.mergeOne(ctx, r, ji) })
}

// inputs fills the worker's scratch with block b's two vectors (v0, v1)
// and its base: slerp's base and model, or nuslerp's two models (their
// task vectors with a base; the base then is −0, which adds nothing).
func (r *run) slerpInputs(w *worker, b block) (base, v0, v1 []float32) {
	if r.p.Method.Compute == kernels.BF16 {
		return r.slerpInputsBF16(w, b)
	}
	j := &r.p.Jobs[b.job]
	n := int(b.n)
	if r.p.Method.Slerp == SlerpPair {
		v0, v1 = r.widenBase(w, b), w.taus[:n]
		r.k.Widen(v1, r.src(w, j.Models[0], j.ModelDT[0], b.start, b.n), j.ModelDT[0])
		return v0, v0, v1
	}
	base = r.deltas(w, b, []int{0, 1})
	if r.p.Method.NoBase {
		negZero := float32(math.Copysign(0, -1))
		for e := range base {
			base[e] = negZero
		}
	}
	return base, w.taus[:n], w.taus[r.stride : r.stride+n]
}

// mergeOne merges one tensor.
func (s *slerpTensors) mergeOne(ctx context.Context, r *run, ji int) error {
	j := &r.p.Jobs[ji]
	m := r.p.Method
	bs := r.blocks([]int{ji})
	switch {
	case len(j.Models) == 0:
		return s.passBase(ctx, r, ji, bs)
	case m.Compute == kernels.BF16 && m.Slerp == SlerpNu:
		return s.mergeNuBF16(ctx, r, ji, bs)
	case r.p.slerpAxis(ji) == AxisRows:
		return s.mergeRows(ctx, r, ji, bs)
	}
	vecs := 1
	if r.p.slerpAxis(ji) == AxisColumns {
		vecs = slerpColumns(j)
	}
	if err := s.sumVectors(ctx, r, ji, bs, vecs); err != nil {
		return err
	}
	r.traced(ji, "slerp-merge")
	return r.parallel(ctx, bs, func(w *worker, b block) error {
		base, v0, v1 := r.slerpInputs(w, b)
		n := int(b.n)
		out := w.tm[:n]
		switch {
		case m.Slerp == SlerpPair && m.Compute == kernels.BF16:
			c := s.coef[0]
			for e := range out {
				out[e] = rbf16(float32(float32(c.a0*v0[e]) + float32(c.a1*v1[e])))
			}
			return r.writeValues(w, b, out)
		case m.Slerp == SlerpPair:
			// (a0·v0) + a1·v1 rounded by Finish, a1 as its λ.
			c := s.coef[0]
			for e := range v0 {
				v0[e] = float32(c.a0 * v0[e])
			}
			return r.finish(w, b, v0, v1, c.a1)
		case vecs == 1:
			s.coef[0].combine(out, v0, v1)
		default:
			col := int(b.start % int64(vecs))
			for e := range out {
				c := s.coef[col]
				p0 := float32(c.a0 * v0[e])
				p1 := float32(c.a1 * v1[e])
				out[e] = float32(p0+p1) / c.div
				if col++; col == vecs {
					col = 0
				}
			}
		}
		return r.finish(w, b, base, out, 1)
	})
}

// passBase writes slerp's base when it is the only input: mergekit returns
// a lone input as it is (rounded to bf16 under the bf16 compute).
func (s *slerpTensors) passBase(ctx context.Context, r *run, ji int, bs []block) error {
	r.traced(ji, "slerp-base")
	return r.parallel(ctx, bs, func(w *worker, b block) error {
		base := r.widenBase(w, b)
		if r.p.Method.Compute == kernels.BF16 {
			for e := range base {
				base[e] = rbf16(base[e])
			}
		}
		return r.writeValues(w, b, base)
	})
}

// mergeRows merges a tensor whose vectors are its rows, each whole in one
// block: sums and combination in one pass.
func (s *slerpTensors) mergeRows(ctx context.Context, r *run, ji int, bs []block) error {
	j := &r.p.Jobs[ji]
	m, t := r.p.Method, j.Params.T
	r.traced(ji, "slerp-rows")
	row := lastAxisLen(*j)
	return r.parallel(ctx, bs, func(w *worker, b block) error {
		base, v0, v1 := r.slerpInputs(w, b)
		var sum [3]wideSum
		for st := 0; st < len(v0); st += row {
			a, c := v0[st:st+row], v1[st:st+row]
			sum = [3]wideSum{}
			addSums(&sum, a, c)
			m.slerpCoef(t, sum[0].value(), sum[1].value(), sum[2].value()).combine(w.tm[st:st+row], a, c)
		}
		return r.finish(w, b, base, w.tm[:b.n], 1)
	})
}

// sumVectors sums each vector's Σv0², Σv1² and Σv0·v1 over the tensor (one
// vector: exactSum per worker; columns: wideSum per column and worker) and
// sets s.coef from them.
func (s *slerpTensors) sumVectors(ctx context.Context, r *run, ji int, bs []block, vecs int) error {
	j := &r.p.Jobs[ji]
	m, t := r.p.Method, j.Params.T
	r.traced(ji, "slerp-sums")
	for _, w := range r.ws {
		if vecs == 1 {
			s.tensor[w.id] = [3]exactSum{}
			continue
		}
		if len(s.sums[w.id]) < 3*vecs {
			s.sums[w.id] = make([]wideSum, 3*vecs)
		}
		clear(s.sums[w.id][:3*vecs])
	}
	err := r.parallel(ctx, bs, func(w *worker, b block) error {
		_, v0, v1 := r.slerpInputs(w, b)
		if vecs == 1 {
			sum := &s.tensor[w.id]
			for e := range v0 {
				a, c := float64(v0[e]), float64(v1[e])
				sum[0].add(a * a)
				sum[1].add(c * c)
				sum[2].add(a * c)
			}
			return nil
		}
		sums := s.sums[w.id]
		col := int(b.start % int64(vecs))
		for e := range v0 {
			a, c := float64(v0[e]), float64(v1[e])
			sums[3*col].add(a * a)
			sums[3*col+1].add(c * c)
			sums[3*col+2].add(a * c)
			if col++; col == vecs {
				col = 0
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if cap(s.coef) < vecs {
		s.coef = make([]slerpCoef, vecs)
	}
	s.coef = s.coef[:vecs]
	if vecs == 1 {
		var sum [3]exactSum
		for _, w := range r.ws {
			for k := range sum {
				sum[k].merge(&s.tensor[w.id][k])
			}
		}
		s.coef[0] = m.slerpCoef(t, sum[0].value(), sum[1].value(), sum[2].value())
		return nil
	}
	for v := range vecs {
		var sum [3]wideSum
		for _, w := range r.ws {
			for k := range sum {
				sum[k].merge(&s.sums[w.id][3*v+k])
			}
		}
		s.coef[v] = m.slerpCoef(t, sum[0].value(), sum[1].value(), sum[2].value())
	}
	return nil
}

// addSums adds Σv0², Σv1² and Σv0·v1 of a vector (or part of one) to s.
func addSums(s *[3]wideSum, v0, v1 []float32) {
	for e := range v0 {
		a, c := float64(v0[e]), float64(v1[e])
		s[0].add(a * a)
		s[1].add(c * c)
		s[2].add(a * c)
	}
}

// slerpBytes is the memory of slerp's sums: per worker, three for a tensor
// that is one vector and three per column of a tensor's columns, and the
// combinations of the columns, shared.
func (p *Plan) slerpBytes(workers int) int64 {
	if p.Method.Slerp == SlerpNone {
		return 0
	}
	vecs := 1
	for ji := range p.Jobs {
		if !p.Jobs[ji].Copy && p.slerpAxis(ji) == AxisColumns {
			vecs = max(vecs, slerpColumns(&p.Jobs[ji]))
		}
	}
	coef := int64(unsafe.Sizeof(slerpCoef{}))
	if p.Method.Compute == kernels.BF16 {
		coef = int64(unsafe.Sizeof(nuBF16{}))
	}
	return int64(workers)*3*(int64(vecs)*wideBytes+sumBytes) + int64(vecs)*coef
}

// slerpSums reports whether some tensor takes a pass for its sums before
// its merge (every vector but rows).
func (p *Plan) slerpSums() bool {
	for ji := range p.Jobs {
		if !p.Jobs[ji].Copy && p.slerpAxis(ji) != AxisRows {
			return true
		}
	}
	return false
}

// describeSlerp is Describe's line for slerp and nuslerp.
func (m Method) describeSlerp() string {
	if m.Slerp == SlerpPair {
		return m.Name + ": spherical interpolation from the base (t = 0) to the model (t = 1), each tensor one vector"
	}
	what := "two models"
	if !m.NoBase {
		what = "two task vectors, added to the base"
	}
	vec := map[SlerpAxis]string{AxisTensor: "each tensor one vector", AxisRows: "each row one vector",
		AxisColumns: "each column one vector"}[m.SlerpAxis]
	return fmt.Sprintf("%s: spherical interpolation of %s, t = w1/(w0+w1), %s", m.Name, what, vec)
}
