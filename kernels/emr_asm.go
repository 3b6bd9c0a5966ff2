//go:build (amd64 || arm64) && !noasm && !purego && gc

package kernels

// emrAsm is the signature of EMRElect's assembly: whole chunks only, NaN
// sums as they come.
type emrAsm func(u, taus *float32, stride, tasks int, mask *byte, row int, asum, bsum *float64, amin, bmin *uint32, chunks int, scratch *float32)

// emrElectAsm runs asm over whole chunks and the reference over a short
// last one.
func emrElectAsm(b *EMRBlock, asm emrAsm) {
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
		asm(&b.U[0], &b.Taus[0], b.Stride, N, &b.Mask[0], b.Row, &b.ASum[0], &b.BSum[0], &b.AMin[0], &b.BMin[0], full, &scratch[0])
		pinNaNs(b.ASum[:full*N])
		pinNaNs(b.BSum[:full*N])
	}
	if full < nc {
		emrElectChunks(b, full)
	}
}
