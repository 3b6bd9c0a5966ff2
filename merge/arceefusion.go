package merge

import (
	"context"
	"math"

	topk "github.com/tiesmm/tiesmm/select"
)

// arcee_fusion: each element's importance is |x − base| times the KL
// divergence between the softmaxes of its row in the model and in the base;
// the model's changes are kept where the importance reaches the tensor's
// median + 1.5·IQR, found exactly by a radix select over the importances.

// arceeFusion merges tensors with arcee_fusion (PathArceeFusion): two
// histogram passes for the quartiles of the importances, then the merge.
// The importances are computed again in each pass, never stored whole; the
// rows' KL divergences, one number per row, are computed in the first pass
// and kept for the others. It owns each worker's histograms and importances.
type arceeFusion struct {
	perTensor
	ws []arceeScratch
	kl []float32 // the tensor's rows' KL divergences; NaN until computed
}

// arceeKLBytes is the memory of the rows' KL divergences of the tensor
// with the most rows.
func (p *Plan) arceeKLBytes() int64 {
	if p.Method.OwnPath != PathArceeFusion {
		return 0
	}
	var rows int64
	for _, j := range p.Jobs {
		if !j.Copy {
			rows = max(rows, j.Elements/int64(lastAxisLen(j)))
		}
	}
	return 4 * rows
}

type arceeScratch struct {
	hists [3]*topk.Hist // per quartile (the first also for the high pass)
	imp   []float32     // a block's importances
	exps  []float64     // a row's exponentials, for rowKL
}

func newArceeFusion(workers int) *arceeFusion {
	return &arceeFusion{ws: make([]arceeScratch, workers)}
}

func (a *arceeFusion) merge(ctx context.Context, r *run, jobs []int) error {
	return eachJob(jobs, func(ji int) error { return a.mergeOne(ctx, r, ji) })
}

// quartiles are the q of Q(q), the importances' order statistics the
// threshold takes.
var quartiles = [3]float32{0.25, 0.5, 0.75}

func (a *arceeFusion) mergeOne(ctx context.Context, r *run, ji int) error {
	r.traced(ji, "arcee-fusion")
	j := &r.p.Jobs[ji]
	if j.Elements == 0 {
		return nil
	}
	bs := r.blocks([]int{ji})
	rows := int(j.Elements / int64(lastAxisLen(*j)))
	if cap(a.kl) < rows {
		a.kl = make([]float32, rows)
	}
	a.kl = a.kl[:rows]
	for i := range a.kl {
		a.kl[i] = float32(math.NaN())
	}
	for i := range a.ws {
		sc := &a.ws[i]
		if sc.imp == nil {
			sc.imp = make([]float32, r.stride)
			sc.exps = make([]float64, 2*r.stride)
			for q := range sc.hists {
				sc.hists[q] = new(topk.Hist)
			}
		}
		for _, h := range sc.hists {
			h.Reset()
		}
	}
	// Ascending rank int(f32(q)·f32(n−1)) is the (n − rank)-th largest.
	var need [3]uint64
	for q, f := range quartiles {
		rank := uint64(float32(f * float32(j.Elements-1)))
		need[q] = uint64(j.Elements) - rank
	}
	err := r.parallel(ctx, bs, func(w *worker, b block) error {
		_, _, imp := a.importances(r, w, b)
		h := a.ws[w.id].hists[0]
		for _, v := range imp {
			h.Inc(orderKey(v) >> 16)
		}
		return nil
	})
	if err != nil {
		return err
	}
	high := a.ws[0].hists[0]
	for _, sc := range a.ws[1:] {
		high.Take(sc.hists[0])
	}
	var hi [3]uint32
	var above [3]uint64
	for q := range need {
		if hi[q], above[q], err = high.Pick(need[q]); err != nil {
			return err
		}
	}
	high.Reset()
	err = r.parallel(ctx, bs, func(w *worker, b block) error {
		_, _, imp := a.importances(r, w, b)
		hs := &a.ws[w.id].hists
		for _, v := range imp {
			k := orderKey(v)
			for q := range hi {
				if k>>16 == hi[q] {
					hs[q].Inc(k & 0xffff)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	var qv [3]float32
	for q := range need {
		low := a.ws[0].hists[q]
		for _, sc := range a.ws[1:] {
			low.Take(sc.hists[q])
		}
		lo, _, err := low.Pick(need[q] - above[q])
		if err != nil {
			return err
		}
		qv[q] = fromOrderKey(hi[q]<<16 | lo)
	}
	thr := qv[1] + float32(1.5*float32(qv[2]-qv[0]))

	return r.parallel(ctx, bs, func(w *worker, b block) error {
		base, x, imp := a.importances(r, w, b)
		out := w.tm[:b.n]
		for e := range out {
			var keep float32
			if imp[e] >= thr {
				keep = 1
			}
			out[e] = base[e] + float32((x[e]-base[e])*keep)
		}
		return r.writeValues(w, b, out)
	})
}

// importances reads block b (whole rows) and returns the base, the model
// and each element's importance f32(|x − base|·KL of its row).
func (a *arceeFusion) importances(r *run, w *worker, b block) (base, x, imp []float32) {
	j := &r.p.Jobs[b.job]
	base = r.widenBase(w, b)
	x = w.taus[:b.n]
	r.k.Widen(x, r.src(w, j.Models[0], j.ModelDT[0], b.start, b.n), j.ModelDT[0])
	imp = a.ws[w.id].imp[:b.n]
	row := lastAxisLen(*j)
	for s := 0; s < len(x); s += row {
		// Each row lies in one block, so one worker writes its entry.
		kl := &a.kl[(b.start+int64(s))/int64(row)]
		if *kl != *kl {
			*kl = rowKL(x[s:s+row], base[s:s+row], a.ws[w.id].exps)
		}
		for e := s; e < s+row; e++ {
			d := float32(math.Abs(float64(x[e] - base[e])))
			imp[e] = float32(d * *kl)
		}
	}
	return base, x, imp
}

// rowKL is Σ p·log(p/q) with p = softmax(x) + 1e−8 and q = softmax(base) +
// 1e−8, in float64, rounded once to float32. exps is scratch for the
// row's exponentials, two per element.
func rowKL(x, base []float32, exps []float64) float32 {
	mx, mb := math.Inf(-1), math.Inf(-1)
	for e := range x {
		mx, mb = max(mx, float64(x[e])), max(mb, float64(base[e]))
	}
	if len(exps) < 2*len(x) {
		exps = make([]float64, 2*len(x))
	}
	ex, eb := exps[:len(x)], exps[len(x):2*len(x)]
	var zx, zb float64
	for e := range x {
		ex[e] = math.Exp(float64(x[e]) - mx)
		eb[e] = math.Exp(float64(base[e]) - mb)
		zx += ex[e]
		zb += eb[e]
	}
	var kl float64
	for e := range x {
		p := ex[e]/zx + 1e-8
		q := eb[e]/zb + 1e-8
		kl += float64(p * math.Log(p/q))
	}
	return float32(kl)
}

// orderKey maps a float32 to a key that orders like the value: negatives
// below zero (both zeros one key), NaN above +Inf.
func orderKey(f float32) uint32 {
	switch {
	case f != f:
		return math.MaxUint32
	case f == 0:
		return 1 << 31
	}
	b := math.Float32bits(f)
	if b>>31 != 0 {
		return ^b
	}
	return b | 1<<31
}

// fromOrderKey is orderKey's inverse (+0 for the zeros, a NaN for NaN).
func fromOrderKey(k uint32) float32 {
	switch {
	case k == math.MaxUint32:
		return float32(math.NaN())
	case k>>31 != 0:
		return math.Float32frombits(k &^ (1 << 31))
	}
	return math.Float32frombits(^k)
}

// lastAxisLen is the length of the rows along the last axis (a vector is
// one row): arcee_fusion's softmaxes and nuslerp's row vectors. Blocks hold
// whole units of rowLen, which are whole rows of it.
func lastAxisLen(j Job) int {
	if len(j.Shape) < 2 {
		return int(max(1, j.Elements))
	}
	return int(max(1, j.Shape[len(j.Shape)-1]))
}
