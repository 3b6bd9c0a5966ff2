package merge

import "encoding/binary"

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
