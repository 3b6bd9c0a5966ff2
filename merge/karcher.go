package merge

import "math"

// karcherCoefs runs the Karcher mean of the inputs x_k (every model, the
// base among them; equal weights) on their Gram matrix and returns the
// output's coefficients β: out = Σ β_k·x_k.
//
// n_k = ‖x_k‖, u_k = x_k/n_k; only inputs with n_k > tol take part (none:
// the output is zeros), their weights a renormalised. u = Σ a·u_k,
// normalised (or the first valid u_k if ‖u‖ < tol); then up to maxIter
// times: c_k = clamp(u·u_k, −1, 1) and θ_k = acos c_k, both float32;
// T = Σ over θ_k ≥ tol of float32(a·(θ_k/sin θ_k))·(u_k − c_k·u); stop when
// ‖T‖ < tol, else u ← cos‖T‖·u + sin‖T‖·T/‖T‖, normalised when ‖u‖ > tol.
// out = (Σ over every k of n_k/N)·u.
func karcherCoefs(G gram, maxIter int, tol float64) []float64 {
	n := G.n
	norms := G.norms()
	var valid []int
	for k, nk := range norms {
		if nk > tol {
			valid = append(valid, k)
		}
	}
	if len(valid) == 0 {
		return make([]float64, n)
	}
	alpha := 1 / float64(n)
	var asum float64
	for range valid {
		asum += alpha
	}
	a := alpha / asum
	units := make([][]float64, n)
	u := make([]float64, n)
	for _, k := range valid {
		units[k] = unitCoefs(n, k, norms[k])
		axpy(u, a, units[k])
	}
	if un := G.norm(u); un < tol {
		u = append([]float64(nil), units[valid[0]]...)
	} else {
		u = scaled(1/un, u)
	}
	a32 := float32(a)
	for range maxIter {
		T := make([]float64, n)
		for _, k := range valid {
			c := float32(max(-1, min(1, G.dot(u, units[k]))))
			theta := float32(math.Acos(float64(c)))
			if float64(theta) < tol {
				continue
			}
			s := a32 * float32(float64(theta)/float64(float32(math.Sin(float64(theta)))))
			axpy(T, float64(s), units[k])
			axpy(T, -float64(s)*float64(c), u)
		}
		tn := G.norm(T)
		if tn < tol {
			break
		}
		u = scaled(math.Cos(tn), u)
		axpy(u, math.Sin(tn)/tn, T)
		if un := G.norm(u); un > tol {
			u = scaled(1/un, u)
		}
	}
	var scale float64
	for _, nk := range norms {
		scale += alpha * nk
	}
	return scaled(scale, u)
}
