package merge

import (
	"context"
	"fmt"
	"math"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/kernels"
)

// The methods on the unit sphere (multislerp, karcher) merged from the
// inputs' Gram matrix. Every vector they build (the mean, the tangents, the
// iterate) is a linear combination of the inputs X_k, so each is carried as
// its N coefficients: one exact pass sums G_kl = Σ X_k·X_l, the algorithm
// runs on those N×N numbers in float64 and yields coefficients β_k, and one
// pass writes Σ β_k·X_k (+ the base), a float32 sum in model order.

// SphereKind names a method merged from the Gram matrix.
type SphereKind uint8

const (
	SphereNone SphereKind = iota
	SphereMultislerp
	SphereKarcher
)

// Sphere is a Gram method and its global parameters.
type Sphere struct {
	Kind             SphereKind
	NormalizeWeights bool    // multislerp: divide the weights by their sum
	Eps              float64 // multislerp
	MaxIter          int     // karcher
	Tol              float64 // karcher
}

// readSphere takes a Gram method's global parameters from the config's top
// level; multislerp without a base interpolates the models themselves.
func (m *Method) readSphere(c *config.Config, top func(key string) (config.Param, bool)) error {
	if m.Sphere.Kind == SphereMultislerp && c.BaseModel == "" {
		m.NoBase = true
	}
	return m.Sphere.read(c.File, top)
}

// read takes the method's global parameters from the config's top level.
func (s *Sphere) read(file string, top func(key string) (config.Param, bool)) error {
	num := func(key string, v *float64) error {
		p, ok := top(key)
		switch {
		case !ok:
			return nil
		case p.Kind != config.KindNumber:
			return fmt.Errorf("%s: parameter %s: want a number, got a %s", file, key, p.Kind)
		case math.IsNaN(p.Num) || math.IsInf(p.Num, 0) || p.Num < 0:
			return fmt.Errorf("%s: parameter %s: %v is not a finite number ≥ 0", file, key, p.Num)
		}
		*v = p.Num
		return nil
	}
	switch s.Kind {
	case SphereMultislerp:
		if p, ok := top("normalize_weights"); ok {
			if p.Kind != config.KindBool {
				return fmt.Errorf("%s: normalize_weights: want true or false", file)
			}
			s.NormalizeWeights = p.Bool
		}
		return num("eps", &s.Eps)
	case SphereKarcher:
		it := float64(s.MaxIter)
		if err := num("max_iter", &it); err != nil {
			return err
		}
		if it != math.Trunc(it) || it > 1e6 {
			return fmt.Errorf("%s: parameter max_iter: %v is not a whole number up to 10⁶", file, it)
		}
		s.MaxIter = int(it)
		return num("tol", &s.Tol)
	}
	return nil
}

// gram is the symmetric N×N matrix of the inputs' dot products, and the
// coefficient algebra over it: a vector Σ a_k·X_k is its coefficients a.
type gram struct {
	n int
	g []float64 // g[i*n+k] = Σ X_i·X_k
}

func (G gram) at(i, k int) float64 { return G.g[i*G.n+k] }

// dot is the dot product of the vectors with coefficients a and b.
func (G gram) dot(a, b []float64) float64 {
	var s float64
	for i, ai := range a {
		if ai == 0 {
			continue
		}
		var row float64
		for k, bk := range b {
			row += G.at(i, k) * bk
		}
		s += ai * row
	}
	return s
}

// norm is the Euclidean norm of the vector with coefficients a (a tiny
// negative square from cancellation counts as 0).
func (G gram) norm(a []float64) float64 { return math.Sqrt(max(0, G.dot(a, a))) }

// norms are the inputs' norms.
func (G gram) norms() []float64 {
	ns := make([]float64, G.n)
	for k := range ns {
		ns[k] = math.Sqrt(max(0, G.at(k, k)))
	}
	return ns
}

// axpy adds s·x to y.
func axpy(y []float64, s float64, x []float64) {
	for k := range y {
		y[k] += s * x[k]
	}
}

// scaled is s·x, a new slice.
func scaled(s float64, x []float64) []float64 {
	y := make([]float64, len(x))
	axpy(y, s, x)
	return y
}

// unitCoefs is the coefficients of X_k/d: d at k, 0 elsewhere.
func unitCoefs(n, k int, d float64) []float64 {
	c := make([]float64, n)
	c[k] = 1 / d
	return c
}

// gramTensor merges tensors with a Gram method (PathGram): a pass for the
// Gram matrix, then the combine pass. It owns each worker's sums.
type gramTensor struct {
	perTensor
	sums [][]exactSum // per worker: the dot products of one tensor
}

func newGramTensor(workers int) *gramTensor {
	return &gramTensor{sums: make([][]exactSum, workers)}
}

func (s *gramTensor) merge(ctx context.Context, r *run, jobs []int) error {
	return eachJob(jobs, func(ji int) error { return s.mergeOne(ctx, r, ji) })
}

// inputs fills w.taus with the block's inputs X_k, in float32: each model
// minus the base where the method has one, else the model's values; base is
// the base's values, or −0 (x + −0 = x) without one.
func (r *run) sphereInputs(w *worker, b block, hasBase bool) []float32 {
	j := &r.p.Jobs[b.job]
	if hasBase {
		return r.deltas(w, b, nil)
	}
	base := w.base[:b.n]
	negZero := float32(math.Copysign(0, -1))
	for e := range base {
		base[e] = negZero
	}
	B := r.stride
	for i, t := range j.Models {
		r.k.Widen(w.taus[i*B:i*B+int(b.n)], r.src(w, t, j.ModelDT[i], b.start, b.n), j.ModelDT[i])
	}
	return base
}

func (s *gramTensor) mergeOne(ctx context.Context, r *run, ji int) error {
	r.traced(ji, "gram")
	j := &r.p.Jobs[ji]
	n := len(j.Models)
	bs := r.blocks([]int{ji})
	sp := r.p.Method.Sphere
	hasBase := !r.p.Method.NoBase
	if r.p.Method.Compute == kernels.BF16 {
		return s.mergeMultislerpBF16(ctx, r, ji, bs, hasBase)
	}
	var beta []float64
	if n == 1 { // one input is returned unchanged
		beta, hasBase = []float64{1}, false
	} else {
		G, err := s.gramPass(ctx, r, bs, n, hasBase)
		if err != nil {
			return err
		}
		switch sp.Kind {
		case SphereMultislerp:
			beta, err = multislerpCoefs(G, j.Params.Weights, sp.NormalizeWeights, sp.Eps)
		case SphereKarcher:
			beta = karcherCoefs(G, sp.MaxIter, sp.Tol)
		}
		if err != nil {
			return err
		}
	}
	b32 := make([]float32, n)
	for k, v := range beta {
		b32[k] = float32(v)
	}
	r.traced(ji, "merge")
	return r.parallel(ctx, bs, func(w *worker, b block) error {
		base := r.sphereInputs(w, b, hasBase)
		acc := w.tm[:b.n]
		for k, c := range b32 {
			x := w.taus[k*r.stride : k*r.stride+int(b.n)]
			if k == 0 {
				for e, v := range x {
					acc[e] = float32(c * v)
				}
				continue
			}
			for e, v := range x {
				acc[e] += float32(c * v)
			}
		}
		return r.finish(w, b, base, acc, 1)
	})
}

// gramPass sums the inputs' dot products exactly over the tensor's blocks.
func (s *gramTensor) gramPass(ctx context.Context, r *run, bs []block, n int, hasBase bool) (gram, error) {
	pairs := n * (n + 1) / 2
	for _, w := range r.ws {
		if len(s.sums[w.id]) < pairs {
			s.sums[w.id] = make([]exactSum, pairs)
		}
		clear(s.sums[w.id])
	}
	err := r.parallel(ctx, bs, func(w *worker, b block) error {
		r.sphereInputs(w, b, hasBase)
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
		return gram{}, err
	}
	G := gram{n: n, g: make([]float64, n*n)}
	p := 0
	for i := range n {
		for k := i; k < n; k++ {
			var sum exactSum
			for _, w := range r.ws {
				sum.merge(&s.sums[w.id][p])
			}
			G.g[i*n+k] = sum.value()
			G.g[k*n+i] = G.g[i*n+k]
			p++
		}
	}
	return G, nil
}
