package merge

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/tiesmm/tiesmm/kernels"
)

// nearswap: where the model is within t of the base, its value is taken;
// farther away, the base's value is pulled toward it by t/|base − x|.

// ownParams resolves the global parameters of the methods with a path of
// their own: nearswap's t (required: NaN when unset) and sce's select_topk.
func ownParams(tp *TensorParams, num func(model int, key string, def float64) (float64, error)) error {
	var err error
	if tp.T, err = num(-1, "t", math.NaN()); err != nil {
		return err
	}
	tp.SelectTopK, err = num(-1, "select_topk", 1)
	return err
}

// checkOwnParams checks those parameters for one tensor.
func (p *Plan) checkOwnParams(name string, tp TensorParams) []error {
	switch p.Method.OwnPath {
	case PathNearSwap:
		if math.IsNaN(tp.T) {
			return []error{fmt.Errorf("tensor %q: nearswap needs t, which no parameter gives it", name)}
		}
		if math.IsInf(tp.T, 0) {
			return []error{fmt.Errorf("tensor %q: t %v is not finite", name, tp.T)}
		}
	case PathSCE:
		if math.IsNaN(tp.SelectTopK) || math.IsInf(tp.SelectTopK, 0) {
			return []error{fmt.Errorf("tensor %q: select_topk %v is not finite", name, tp.SelectTopK)}
		}
	}
	return nil
}

// checkOwnModels checks the model count of the methods that compare one
// fine-tune with the base.
func checkOwnModels(m Method, n int) error {
	if (m.OwnPath == PathNearSwap || m.OwnPath == PathArceeFusion) && n != 1 {
		return fmt.Errorf("%s needs exactly one fine-tuned model besides the base, not %d", m.Name, n)
	}
	if m.OwnPath == PathPCB && n < 2 {
		return fmt.Errorf("pcb needs at least two fine-tuned models besides the base, not %d", n)
	}
	return nil
}

// nearSwap merges tensors with nearswap (PathNearSwap): one elementwise
// pass over the base and the one model.
type nearSwap struct{ perTensor }

func (nearSwap) merge(ctx context.Context, r *run, jobs []int) error {
	return eachJob(jobs, func(ji int) error {
		r.traced(ji, "nearswap")
		j := &r.p.Jobs[ji]
		t := float32(j.Params.T)
		return r.parallel(ctx, r.blocks([]int{ji}), func(w *worker, b block) error {
			base := r.widenBase(w, b)
			x := w.taus[:b.n]
			r.k.Widen(x, r.src(w, j.Models[0], j.ModelDT[0], b.start, b.n), j.ModelDT[0])
			out := w.tm[:b.n]
			for e := range out {
				out[e] = nearSwapValue(base[e], x[e], t)
			}
			return r.writeValues(w, b, out)
		})
	})
}

// nearSwapValue is one output: w = clamp(reciprocal(max(|base − x|, 1e−6))·t,
// 0, 1), then w·x + (1 − w)·base, every operation rounded to float32 (torch
// divides a scalar by a tensor as a reciprocal, then a product).
func nearSwapValue(base, x, t float32) float32 {
	d := float32(math.Abs(float64(base - x)))
	d = max(d, float32(1e-6))
	w := float32(float32(1/d) * t)
	w = min(max(w, 0), 1)
	return float32(w*x) + float32((1-w)*base)
}

// writeValues rounds a block's float32 results to the output dtype and
// writes them.
func (r *run) writeValues(w *worker, b block, vals []float32) error {
	dt := r.p.Jobs[b.job].OutDT
	out := w.outb[:len(vals)*dt.Size()]
	encodeValues(out, dt, vals)
	return r.write(b, out)
}

// encodeValues rounds float32 values to dt, little-endian, into out
// (len(vals)·dt.Size() bytes).
func encodeValues(out []byte, dt kernels.DType, vals []float32) {
	for e, v := range vals {
		switch dt {
		case kernels.BF16:
			binary.LittleEndian.PutUint16(out[2*e:], kernels.F32ToBF16(v))
		case kernels.F16:
			binary.LittleEndian.PutUint16(out[2*e:], kernels.F32ToF16(v))
		default:
			binary.LittleEndian.PutUint32(out[4*e:], math.Float32bits(v))
		}
	}
}

// ownWorkerBytes is a worker's scratch for the methods with a path of their
// own, blocks of b elements: sce's histogram, variances (and their float64
// sums) and sums of squares; arcee_fusion's three histograms, importances
// and a row's exponentials.
func (p *Plan) ownWorkerBytes(b int64) int64 {
	switch p.Method.OwnPath {
	case PathPCB:
		return pcbWorkerBytes(int64(p.width()), b)
	case PathSCE:
		return histBytes + 28*b + int64(p.width())*sumBytes
	case PathArceeFusion:
		return 3*histBytes + 4*b + 16*b
	case PathEMR:
		return emrWorkerBytes(int64(p.width()), b)
	}
	return 0
}
