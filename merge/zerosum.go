package merge

import (
	"encoding/binary"
	"slices"

	"github.com/tiesmm/tiesmm/kernels"
)

// The paper settles exact zero sums with the model-wide majority sign, known
// only at the end. The merge writes them with +1 and records, for each, the
// output it gets with −1: a job, an element and up to 4 bytes of output.
// The records go to a file, so a 70B merge's hundreds of millions of zero
// sums cost disk, not memory; they are applied only if the sign is −1.
const fixupBytes = 4 + 8 + 4

// applyFixups writes every recorded −1 output, a block's worth at a time,
// and returns how many.
func (r *run) applyFixups() (int64, error) {
	for _, w := range r.ws {
		if err := r.fixFile.append(w.fixups); err != nil {
			return 0, err
		}
		w.fixups = w.fixups[:0]
	}
	err := r.fixFile.each(r.recordBlock, func(recs []byte) error {
		ji := int(binary.LittleEndian.Uint32(recs))
		j := &r.p.Jobs[ji]
		elems := make([]int64, len(recs)/fixupBytes)
		for g := range elems {
			elems[g] = int64(binary.LittleEndian.Uint64(recs[g*fixupBytes+4:]))
		}
		sz := j.OutDT.Size()
		return r.patch(j, elems, func(g int) []byte { return recs[g*fixupBytes+12 : g*fixupBytes+12+sz] })
	})
	return r.fixFile.count, err
}

// recordZeroSums keeps, for each element whose vote summed to exactly zero,
// the output it gets if the model-wide majority sign turns out to be −1.
// The −1 result is the negation of the +1 result on negated inputs, so the
// kernel itself computes it, bit for bit.
func (r *run) recordZeroSums(w *worker, ji, n int, pos func(e int) int64, vp *kernels.VoteParams, lambda float32) error {
	zs := w.zcols[:0]
	r.k.FindZeroSums(w.taus, r.stride, n, vp, w.scratch, func(e int) { zs = append(zs, int32(e)) })
	w.zcols = zs
	return r.recordZeros(w, ji, zs, pos, vp, lambda)
}

// recordZeros records the −1 outputs of the zero-sum columns zs of the
// worker's block (w.taus, w.base), all at once: the negated columns are
// gathered, voted and finished in one call each.
func (r *run) recordZeros(w *worker, ji int, zs []int32, pos func(e int) int64, vp *kernels.VoteParams, lambda float32) error {
	B, nm, m := r.stride, r.p.width(), len(zs)
	if m == 0 {
		return nil
	}
	neg, base := w.zneg[:nm*m], w.scratch[B:B+m]
	for c, e := range zs {
		for i := range nm {
			neg[i*m+c] = -w.taus[i*B+int(e)]
		}
		base[c] = w.base[e]
	}
	return r.recordNegated(w, ji, zs, pos, neg, base, vp, lambda)
}

// recordNegated records the −1 outputs of the zero-sum elements zs of a
// block of job ji from their negated task vectors neg (model by model) and
// base values.
func (r *run) recordNegated(w *worker, ji int, zs []int32, pos func(e int) int64, neg, base []float32, vp *kernels.VoteParams, lambda float32) error {
	j := &r.p.Jobs[ji]
	m := len(zs)
	out := w.scratch[:m]
	r.k.Vote(out, neg, m, vp)
	for c := range out {
		out[c] = -out[c]
	}
	sz := j.OutDT.Size()
	outb := w.zbytes[:m*sz] // not w.outb: it may hold the block's output
	r.k.Finish(outb, j.OutDT, base, out, lambda)
	at := len(w.fixups)
	w.fixups = slices.Grow(w.fixups, m*fixupBytes)[:at+m*fixupBytes]
	for c, e := range zs {
		rec := w.fixups[at+c*fixupBytes : at+(c+1)*fixupBytes]
		binary.LittleEndian.PutUint32(rec[0:], uint32(ji))
		binary.LittleEndian.PutUint64(rec[4:], uint64(pos(int(e))))
		var v uint32 // the output's bytes, zero-padded: no call per record
		if sz == 2 {
			v = uint32(binary.LittleEndian.Uint16(outb[2*c:]))
		} else {
			v = binary.LittleEndian.Uint32(outb[4*c:])
		}
		binary.LittleEndian.PutUint32(rec[12:], v)
	}
	if len(w.fixups) >= recordFlush {
		err := r.fixFile.append(w.fixups)
		w.fixups = w.fixups[:0]
		return err
	}
	return nil
}

// zeroSumScratch is a worker's room for the zero sums of a block and its
// records not yet in the file.
type zeroSumScratch struct {
	scratch []float32 // the vote's sums and maxima, then the base of the columns
	zneg    []float32 // the negated zero-sum columns, model by model
	zcols   []int32   // zero-sum columns of the block
	zbytes  []byte    // the −1 outputs of the zero-sum positions
	fixups  []byte    // fixup records not yet in the file
}

func newZeroSumScratch(models, block int) zeroSumScratch {
	return zeroSumScratch{scratch: make([]float32, 2*block), zneg: make([]float32, models*block),
		zcols: make([]int32, 0, block), zbytes: make([]byte, 4*block)}
}
