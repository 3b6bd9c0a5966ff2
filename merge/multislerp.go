package merge

import (
	"fmt"
	"math"
)

// multislerpCoefs runs multislerp on the Gram matrix of the inputs X_k (task
// vectors with a base, else the models) with per-model weights, and returns
// the output's coefficients β: out = Σ β_k·X_k (+ base).
//
// The weights are float32, divided by their float32 sum when normalising;
// n_k = ‖X_k‖, u_k = X_k/(n_k+eps), m = Σ w_k·u_k. Below ‖m‖ < eps two
// models give w0·X0 + w1·X1 and more are an error. Else m ← m/‖m‖,
// d_k = u_k·m, g = Σ w_k·(u_k − d_k·m), r = ‖g‖ + eps and
// out = (cos r·m + (sin r/r)·g)·Σ n_k·w_k.
func multislerpCoefs(G gram, weights []float32, normalize bool, eps float64) ([]float64, error) {
	n := G.n
	w := make([]float64, n)
	var sum float32
	for _, v := range weights {
		sum += v
	}
	if normalize && sum == 0 {
		return nil, fmt.Errorf("multislerp: the weights sum to 0, so they cannot be normalised (set normalize_weights: false, or change the weights)")
	}
	for k, v := range weights {
		if normalize {
			v /= sum
		}
		w[k] = float64(v)
	}
	norms := G.norms()
	m := make([]float64, n)
	units := make([][]float64, n)
	for k := range n {
		units[k] = unitCoefs(n, k, norms[k]+eps)
		axpy(m, w[k], units[k])
	}
	mn := G.norm(m)
	if mn < eps {
		if n == 2 {
			return w, nil
		}
		return nil, fmt.Errorf("multislerp: the weighted mean of the %d models' directions has norm %.3g, below eps %g (opposite task vectors whose weights cancel): change the weights", n, mn, eps)
	}
	m = scaled(1/mn, m)
	g := make([]float64, n)
	var scale float64
	for k := range n {
		d := G.dot(units[k], m)
		axpy(g, w[k], units[k])
		axpy(g, -w[k]*d, m)
		scale += norms[k] * w[k]
	}
	r := G.norm(g) + eps
	beta := scaled(math.Cos(r)*scale, m)
	axpy(beta, math.Sin(r)/r*scale, g)
	return beta, nil
}
