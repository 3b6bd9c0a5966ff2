package merge

import "encoding/binary"

// The paper settles exact zero sums with the model-wide majority sign, known
// only at the end. The merge writes them with +1 and records, for each, the
// output it gets with −1: a job, an element and up to 4 bytes of output.
// The records go to a file, so a 70B merge's hundreds of millions of zero
// sums cost disk, not memory; they are applied only if the sign is −1.
const fixupBytes = 4 + 8 + 4

// applyFixups writes every recorded −1 output, a block's worth at a time
// (one read and one write over its span), and returns how many.
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
		sz := int64(j.OutDT.Size())
		first, last := int64(-1), int64(-1)
		for o := 0; o < len(recs); o += fixupBytes {
			e := int64(binary.LittleEndian.Uint64(recs[o+4:]))
			if first < 0 || e < first {
				first = e
			}
			last = max(last, e)
		}
		span := make([]byte, (last-first+1)*sz)
		if err := r.out.ReadTensor(j.Name, first*sz, span); err != nil {
			return err
		}
		for o := 0; o < len(recs); o += fixupBytes {
			e := int64(binary.LittleEndian.Uint64(recs[o+4:]))
			copy(span[(e-first)*sz:(e-first+1)*sz], recs[o+12:])
		}
		return r.out.WriteTensor(j.Name, first*sz, span)
	})
	return r.fixFile.count, err
}
