package kernels

import "fmt"

// stagedChunk is how many elements the staged form of Ties runs through
// each stage at a time: its float32 blocks (base, one per model, merged)
// stay within about 64 KiB, in L1 or L2.
const stagedChunk = 16 << 10

// TiesScratch is the working memory Ties may use for a block of n elements
// of models models: the staged form's float32 blocks, chunk by chunk.
func TiesScratch(models, n int) int {
	return (models + 4) * min(max(1, stagedChunk/(models+2)), n)
}

// stagedTies is Set.Ties made of s's own stage kernels: the reference (for
// the Go set) and what an assembly set uses for the cases its fused kernel
// does not take.
func stagedTies(s *Set) func(b *TiesBlock) VoteStats {
	return func(b *TiesBlock) VoteStats {
		nm := len(b.Models)
		n := len(b.Dst) / b.OutDT.Size()
		if len(b.Thr) != nm || len(b.Kept) != nm || len(b.Vote.Weights) != nm || b.Equal != nil && len(b.Equal) != nm {
			panic(fmt.Sprintf("kernels: Ties with %d models, %d thresholds, %d kept counts, %d weights",
				nm, len(b.Thr), len(b.Kept), len(b.Vote.Weights)))
		}
		chunk := max(1, stagedChunk/(nm+2))
		buf := b.Scratch
		if need := TiesScratch(nm, n); len(buf) < need {
			buf = make([]float32, need)
		}
		clear(b.Kept)
		clear(b.Equal)
		var st VoteStats
		sz, osz := b.DT.Size(), b.OutDT.Size()
		for off := 0; off < n; off += chunk {
			c := min(chunk, n-off)
			stride := min(chunk, n)
			base, tm, scratch, taus := buf[:c], buf[stride:stride+c], buf[2*stride:4*stride], buf[4*stride:]
			s.Widen(base, b.Base[off*sz:(off+c)*sz], b.DT)
			for i, m := range b.Models {
				tau := taus[i*stride : i*stride+c]
				b.Kept[i] += s.DeltaTrim(tau, m[off*sz:(off+c)*sz], b.DT, base, b.Thr[i])
				if b.Equal != nil {
					b.Equal[i] += s.Range(tau, b.Thr[i], b.Thr[i], nil)
				}
			}
			cs := s.Vote(tm, taus, stride, b.Vote)
			if b.Zero != nil && cs.ZeroSum > 0 {
				k := st.ZeroSum
				s.FindZeroSums(taus, stride, c, b.Vote, scratch, func(j int) {
					b.Zero[k] = int32(off + j)
					k++
				})
			}
			st.Add(cs)
			s.Finish(b.Dst[off*osz:(off+c)*osz], b.OutDT, base, tm, b.Lambda)
		}
		return st
	}
}
