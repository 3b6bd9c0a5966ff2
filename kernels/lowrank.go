package kernels

func init() { Generic.LowRank = lowRankGeneric }

// lowRankGeneric is LowRank in Go: four ranks per sweep over acc, each
// product rounded before it is added, NaNs pinned as the assembly leaves
// them (mul and add: l·r, then acc + product).
func lowRankGeneric(acc, l, r []float32, stride int) {
	n := len(acc)
	if len(l) == 0 {
		clear(acc)
		return
	}
	r0 := r[:n]
	for j := range acc {
		acc[j] = mul(l[0], r0[j])
	}
	k := 1
	for ; k+4 <= len(l); k += 4 {
		lowRankStep4(acc, r[k*stride:][:n], r[(k+1)*stride:][:n], r[(k+2)*stride:][:n], r[(k+3)*stride:][:n], (*[4]float32)(l[k:k+4]))
	}
	for ; k < len(l); k++ {
		lk := l[k]
		a := r[k*stride:][:n]
		for j := range acc {
			acc[j] = add(acc[j], mul(lk, a[j]))
		}
	}
}

// lowRankStep4 adds l[0]·a + l[1]·b + l[2]·c + l[3]·d to acc, in
// that order, element by element; a to d are as long as acc.
func lowRankStep4(acc, a, b, c, d []float32, l *[4]float32) {
	l0, l1, l2, l3 := l[0], l[1], l[2], l[3]
	a, b, c, d = a[:len(acc)], b[:len(acc)], c[:len(acc)], d[:len(acc)]
	for j := range acc {
		s := add(acc[j], mul(l0, a[j]))
		s = add(s, mul(l1, b[j]))
		s = add(s, mul(l2, c[j]))
		acc[j] = add(s, mul(l3, d[j]))
	}
}
