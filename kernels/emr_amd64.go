//go:build !noasm && !purego && gc

package kernels

func init() {
	avx512Set.EMRElect = func(b *EMRBlock) { emrElectAVX(b, true) }
	avx2Set.EMRElect = func(b *EMRBlock) { emrElectAVX(b, false) }
}

// emrElectAVX runs the assembly over whole chunks and the reference over a
// short last one.
func emrElectAVX(b *EMRBlock, z bool) {
	n, N := len(b.U), b.Tasks
	full, nc := n/EMRChunk, EMRChunks(n)
	_, _, _, _ = b.ASum[:N*nc], b.BSum[:N*nc], b.AMin[:N*nc], b.BMin[:N*nc]
	_ = b.Taus[(N-1)*b.Stride : (N-1)*b.Stride+n]
	_ = b.Mask[(N-1)*b.Row : (N-1)*b.Row+(n+7)/8]
	if full > 0 {
		scratch := b.Scratch
		if len(scratch) < EMRChunk {
			scratch = make([]float32, EMRChunk)
		}
		if z {
			emrElectAVX512(&b.U[0], &b.Taus[0], b.Stride, N, &b.Mask[0], b.Row, &b.ASum[0], &b.BSum[0], &b.AMin[0], &b.BMin[0], full, &scratch[0])
		} else {
			emrElectAVX2(&b.U[0], &b.Taus[0], b.Stride, N, &b.Mask[0], b.Row, &b.ASum[0], &b.BSum[0], &b.AMin[0], &b.BMin[0], full, &scratch[0])
		}
		pinNaNs(b.ASum[:full*N])
		pinNaNs(b.BSum[:full*N])
	}
	if full < nc {
		emrElectChunks(b, full)
	}
}
