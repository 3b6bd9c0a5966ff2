package kernels

// ZeroSums calls fn for each element j < n whose vote sum is exactly zero
// while some vote value is not: the elements Vote counts in ZeroSum and
// provisionally gives the sign +1. It uses the reference arithmetic, which
// every set matches, so it finds exactly the elements the kernel counted.
func ZeroSums(taus []float32, stride, n int, p *VoteParams, fn func(j int)) {
	for j := 0; j < n; j++ {
		var s float32
		nonzero := false
		for i, w := range p.Weights {
			v := taus[i*stride+j]
			if p.WeightedVote {
				v = float32(w * v)
			}
			if p.Consensus == ConsensusCount {
				s += sign(v)
			} else {
				s += v
			}
			nonzero = nonzero || v != 0
		}
		if s == 0 && nonzero {
			fn(j)
		}
	}
}
