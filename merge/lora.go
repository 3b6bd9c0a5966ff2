package merge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"unsafe"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/lora"
	"github.com/tiesmm/tiesmm/mmapio"
)

// LoRA adapters as inputs: an input BASE+ADAPTER is the model BASE whose
// adapted tensors read, block by block, as W + s·(B·A) in float32. The
// engine sees them as float32 tensors (src materialises them); nothing
// larger than a block of W' and the factors' rows and columns that block
// needs is ever held.

// AdapterUse is one input given as a model plus a LoRA adapter.
type AdapterUse struct {
	Input   int    // 0: the base, i: model i
	Model   string // the adapted model's folder
	Adapter *lora.Adapter
	Tensors int // base tensors it adapts
}

// adapted is one input's tensor with a LoRA module applied: the tensor the
// job reads (W as stored) and what turns it into W'.
type adapted struct {
	input    int // 0: the base, i: model i (its scratch buffer)
	w        *mmapio.Tensor
	wdt      kernels.DType
	mod      *lora.Module
	adt, bdt kernels.DType
	cols     int64 // W's columns as stored
}

// tileCols is how many columns of a row a worker sums at once: the row's
// partial sums stay in L1 while the rank's rows of the right factor stream.
const tileCols = 512

// openInput opens an input model reference: a model, BASE+ADAPTER, or a
// plain adapter folder adapting mergeBase (or, with none, the model its
// adapter_config.json names if that is a local folder).
func (p *Plan) openInput(ref, mergeBase string, input int) (*mmapio.Model, error) {
	base, adapterDir, ok := config.SplitModelRef(ref)
	if !ok {
		if !lora.IsAdapter(ref) {
			return mmapio.OpenModel(ref)
		}
		var err error
		if adapterDir, base, err = plainAdapterBase(ref, mergeBase); err != nil {
			return nil, err
		}
	}
	md, err := mmapio.OpenModel(base)
	if err != nil {
		return nil, err
	}
	ad, err := lora.Open(adapterDir)
	if err != nil {
		return nil, err
	}
	if err := ad.Check(md); err != nil {
		return nil, err
	}
	if p.adapted == nil {
		p.adapted = map[*mmapio.Tensor]*adapted{}
	}
	for _, target := range ad.Targets() {
		m := ad.Modules[target]
		t := md.Tensors[target]
		wdt, _ := floatDType(t.DType)
		adt, _ := floatDType(m.A.DType)
		bdt, _ := floatDType(m.B.DType)
		p.adapted[t] = &adapted{input: input, w: t, wdt: wdt, mod: m, adt: adt, bdt: bdt, cols: t.Shape[1]}
	}
	p.Adapters = append(p.Adapters, AdapterUse{Input: input, Model: md.Path, Adapter: ad, Tensors: len(ad.Modules)})
	return md, nil
}

// plainAdapterBase finds the model an adapter folder given alone adapts:
// the merge's base, unless that is an adapter folder too.
func plainAdapterBase(dir, mergeBase string) (adapterDir, base string, err error) {
	if mergeBase != "" && !lora.IsAdapter(mergeBase) {
		if _, a, ok := config.SplitModelRef(mergeBase); ok {
			return "", "", fmt.Errorf("adapter %s: the base model %s is itself adapted (by %s): give this model as BASE+ADAPTER", dir, mergeBase, a)
		}
		return dir, mergeBase, nil
	}
	ad, err := lora.Open(dir)
	if err != nil {
		return "", "", err
	}
	if b := ad.Config.BaseModel; b != "" {
		if st, err := os.Stat(b); err == nil && st.IsDir() {
			return dir, b, nil
		}
		return "", "", fmt.Errorf("adapter %s: its base_model_name_or_path %s is not a local folder: give the model as BASE+%s", dir, b, dir)
	}
	return "", "", fmt.Errorf("adapter %s: no base model to adapt: give it as BASE+%s", dir, dir)
}

// adapterFiles are the adapters' weights files, opened as models.
func (p *Plan) adapterFiles() []*mmapio.Model {
	ms := make([]*mmapio.Model, len(p.Adapters))
	for i, a := range p.Adapters {
		ms[i] = a.Adapter.Weights
	}
	return ms
}

// loraWorkerBytes is one worker's memory for materialising adapted blocks
// of b elements: W' of each adapted input, and the factors' widened rows
// and columns of the largest module (one module at a time).
func (p *Plan) loraWorkerBytes(b int64) int64 {
	if len(p.adapted) == 0 {
		return 0
	}
	var most int64
	inputs := map[int]bool{}
	for _, a := range p.adapted {
		inputs[a.input] = true
		most = max(most, loraScratchElems(a, b))
	}
	return int64(len(inputs))*b*4 + most*4 + tileCols*4
}

// loraScratchElems is the float32 values a block of b elements of a needs:
// the right factor's columns (twice with fan_in_fan_out: a transpose) and
// the left factor's rows.
func loraScratchElems(a *adapted, b int64) int64 {
	r := int64(a.mod.Rank)
	span := min(b, a.cols)
	rows := b/a.cols + 2
	return 2*r*span + 2*r*rows
}

// loraMappedBytes is the factors' pages mapped at once: each adapted
// input's largest module, for every worker (solo jobs run side by side).
func (p *Plan) loraMappedBytes(workers int) int64 {
	var total int64
	for _, a := range p.Adapters {
		total += a.Adapter.FactorBytes()
	}
	return total * int64(workers)
}

// loraScratch is a worker's buffers for materialised blocks.
type loraScratch struct {
	outs        map[int][]float32 // per adapted input: W' of the block
	left, right []float32         // the left factor's rows, the right's columns
	tmp, acc    []float32
}

// materialise is W' = W + s·(B·A) for elements [start, start+n) of a, as
// float32 bytes in the worker's buffer for a's input.
func (r *run) materialise(w *worker, a *adapted, start, n int64) []byte {
	ls := &w.lora
	if ls.outs == nil {
		ls.outs = map[int][]float32{}
	}
	out := ls.outs[a.input]
	if out == nil {
		out = make([]float32, r.stride)
		ls.outs[a.input] = out
	}
	out = out[:n]
	r.k.Widen(out, r.mapped(a.w, a.wdt, start, n), a.wdt)
	rank := a.mod.Rank
	p0, p1 := start/a.cols, (start+n-1)/a.cols // stored rows the block touches
	c0, c1 := int64(0), a.cols                 // columns of the right factor needed
	if p0 == p1 {
		c0, c1 = start-p0*a.cols, start+n-p0*a.cols
	}
	span := int(c1 - c0)
	left := grow(&ls.left, int(p1-p0+1)*rank)
	right := grow(&ls.right, rank*span)
	r.loraFactors(w, a, left, right, p0, p1, c0, c1)
	acc := grow(&ls.acc, tileCols)
	s := a.mod.Scale
	for p := p0; p <= p1; p++ {
		lo, hi := max(start, p*a.cols), min(start+n, (p+1)*a.cols)
		l := left[int(p-p0)*rank : int(p-p0+1)*rank]
		for e := lo; e < hi; e += tileCols {
			m := min(hi-e, tileCols)
			col := int(e - p*a.cols - c0)
			r.k.LowRank(acc[:m], l, right[col:], span)
			o := out[e-start : e-start+m]
			for j := range o {
				o[j] += float32(s * acc[j])
			}
		}
	}
	return f32Bytes(out)
}

// loraFactors widens the factors block rows p0..p1 and columns [c0, c1)
// need: left holds, per row, its rank values; right, per rank, the
// columns. Without fan_in_fan_out left is B's rows and right A's columns;
// with it (W stored [in, out]) left is A's columns and right B's rows,
// each transposed.
func (r *run) loraFactors(w *worker, a *adapted, left, right []float32, p0, p1, c0, c1 int64) {
	rank := int64(a.mod.Rank)
	A, B := a.mod.A, a.mod.B
	span := c1 - c0
	if !a.mod.FanInFanOut {
		r.k.Widen(left, r.mapped(B, a.bdt, p0*rank, (p1-p0+1)*rank), a.bdt)
		in := A.Shape[1]
		for k := range rank {
			r.k.Widen(right[k*span:(k+1)*span], r.mapped(A, a.adt, k*in+c0, span), a.adt)
		}
		return
	}
	rows := p1 - p0 + 1
	tmp := grow(&w.lora.tmp, int(max(rows, span)*rank))
	in := A.Shape[1]
	for k := range rank { // A[k, p0..p1] → left[p][k]
		r.k.Widen(tmp[k*rows:(k+1)*rows], r.mapped(A, a.adt, k*in+p0, rows), a.adt)
	}
	transpose(left, tmp[:rank*rows], int(rank), int(rows))
	r.k.Widen(tmp[:span*rank], r.mapped(B, a.bdt, c0*rank, span*rank), a.bdt) // B[c0..c1, :]
	transpose(right, tmp[:span*rank], int(span), int(rank))
}

// transpose writes src (rows × cols) to dst as cols × rows.
func transpose(dst, src []float32, rows, cols int) {
	for i := range rows {
		for j := range cols {
			dst[j*rows+i] = src[i*cols+j]
		}
	}
}

// mapped is elements [start, start+n) of t as stored: a view of its file's
// mapping.
func (r *run) mapped(t *mmapio.Tensor, dt kernels.DType, start, n int64) []byte {
	sz := int64(dt.Size())
	f := r.files[t.File]
	data, err := f.data()
	if err != nil {
		panic(mapError{&InputError{File: f.path, Tensor: t.Name, Err: err}}) // inside Guard: parallel returns it
	}
	off := t.Offset + start*sz
	return data[off : off+n*sz]
}

// grow returns (*buf)[:n], reallocating if it is shorter.
func grow(buf *[]float32, n int) []float32 {
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	return (*buf)[:n]
}

// adaptedFiles are the adapter files job ji reads besides its tensors'.
func (r *run) adaptedFiles(ji int, fs []*mappedFile) []*mappedFile {
	if len(r.p.adapted) == 0 {
		return fs
	}
	j := &r.p.Jobs[ji]
	for _, t := range append([]*mmapio.Tensor{j.Base}, j.Models...) {
		if a := r.p.adapted[t]; a != nil && (t != j.Base || !r.p.Method.NoBase) {
			fs = append(fs, r.files[a.mod.A.File])
		}
	}
	return fs
}

// checkAdaptedRows refuses an adapted tensor whose rows a row view
// realigns (a tokenizer_source, or embeddings of different sizes cut to
// the common ones): the view reads rows as stored, without the adapter.
func (p *Plan) checkAdaptedRows() error {
	var errs []error
	for _, j := range p.Jobs {
		if j.Rows == nil {
			continue
		}
		for _, t := range append([]*mmapio.Tensor{j.Base}, j.Models...) {
			if a := p.adapted[t]; a != nil {
				errs = append(errs, fmt.Errorf("%s: tensor %q: adapted by this LoRA adapter, but its rows are realigned (a tokenizer_source, or embeddings of different sizes): not supported", a.mod.A.File, j.Name))
			}
		}
	}
	return errors.Join(errs...)
}

// releaseFactors drops the pages of job ji's LoRA factors, as releaseJob
// drops its tensors': the adapter file stays mapped for other tensors.
func (r *run) releaseFactors(ji int) {
	if len(r.p.adapted) == 0 {
		return
	}
	r.eachTensor(ji, func(t *mmapio.Tensor, _ int64) {
		if a := r.p.adapted[t]; a != nil {
			for _, f := range []*mmapio.Tensor{a.mod.A, a.mod.B} {
				r.files[f.File].dontNeed(f.Offset, f.Size)
			}
		}
	})
}

// storedDT is t's dtype as its file holds it, for a job that reads it as dt.
func (p *Plan) storedDT(t *mmapio.Tensor, dt kernels.DType) kernels.DType {
	if a := p.adapted[t]; a != nil {
		return a.wdt
	}
	return dt
}

// storedSize is the element size of t as its file holds it: an adapted
// tensor's job reads it as float32 (sz), its pages are W's.
func (p *Plan) storedSize(t *mmapio.Tensor, sz int64) int64 {
	if a := p.adapted[t]; a != nil {
		return int64(a.wdt.Size())
	}
	return sz
}

// adapterNote describes input i (0: the base) if it is adapted, for
// --dry-run.
func (p *Plan) adapterNote(input int) string {
	for _, a := range p.Adapters {
		if a.Input != input {
			continue
		}
		c := a.Adapter.Config
		kind := "LoRA"
		if c.UseRSLoRA {
			kind = "rsLoRA"
		}
		return fmt.Sprintf(" + %s adapter %s (r %d, alpha %g): %d tensors adapted", kind, a.Adapter.Dir, c.R, c.Alpha, a.Tensors)
	}
	return ""
}

// littleEndianHost: float32 values in memory are already safetensors bytes.
var littleEndianHost = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// f32Bytes is v as little-endian float32 bytes, in v's own memory.
func f32Bytes(v []float32) []byte {
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 4*len(v))
	if !littleEndianHost {
		for j, x := range v {
			binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(x))
		}
	}
	return b
}
