package kernels

// LowRankRow sets acc[j] = Σₖ l[k]·r[k·stride+j] for every j, the sum taken
// in order k = 0, 1, …, len(l)−1 from the first product, each product and
// each sum rounded to float32 (no fused multiply-add): the element's value
// does not depend on how the columns are split. r holds len(l) rows of
// stride values; acc covers the first len(acc) of each.
func LowRankRow(acc, l, r []float32, stride int) {
	n := len(acc)
	if len(l) == 0 {
		clear(acc)
		return
	}
	r0 := r[:n]
	for j := range acc {
		acc[j] = l[0] * r0[j]
	}
	k := 1
	for ; k+4 <= len(l); k += 4 {
		l0, l1, l2, l3 := l[k], l[k+1], l[k+2], l[k+3]
		a := r[k*stride:][:n]
		b := r[(k+1)*stride:][:n]
		c := r[(k+2)*stride:][:n]
		d := r[(k+3)*stride:][:n]
		for j := range acc {
			s := acc[j] + float32(l0*a[j])
			s += float32(l1 * b[j])
			s += float32(l2 * c[j])
			acc[j] = s + float32(l3*d[j])
		}
	}
	for ; k < len(l); k++ {
		lk := l[k]
		a := r[k*stride:][:n]
		for j := range acc {
			acc[j] += float32(lk * a[j])
		}
	}
}
