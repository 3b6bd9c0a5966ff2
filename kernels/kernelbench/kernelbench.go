// Package kernelbench measures the kernel sets on the merge's block pipeline
// (per block: widen the base, trim each model's task vector, vote, finish),
// on L2-resident blocks and on RAM-sized buffers, against a memory copy
// timed in the same run. It is the library behind `tiesmm bench`.
//
// Throughput is in input bytes (base plus N models, as stored) per second,
// single-threaded. The copy reference is copy() of a buffer the size of the
// same inputs (L2) or of the RAM-sized inputs: its GB/s counts the bytes
// read, so a ratio of 1 means the merge consumes its inputs as fast as one
// core can copy them.
package kernelbench

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tiesmm/tiesmm/kernels"
)

// Options chooses what Run measures. Zero values pick the defaults.
type Options struct {
	// Quick measures bf16 with N = 3 only, with shorter timings: a few
	// seconds in all.
	Quick bool
	// Sets names the kernel sets (as kernels.Lookup takes them); empty: all
	// this CPU runs.
	Sets []string
	// DTypes are the stored formats of inputs and output; empty: bf16, f16,
	// f32 (Quick: bf16).
	DTypes []kernels.DType
	// Models are the numbers of fine-tunes N; empty: 2, 3, 8 (Quick: 3).
	Models []int
	// Block is the block length in elements; 0 sizes it to half the L2
	// cache, within 16K–64K elements.
	Block int
	// RAMBytes is the input size of the RAM-sized runs (base plus N models,
	// as stored); 0: 256 MiB, or twice the L3 cache where that is larger
	// (at most 1 GiB), so the inputs really come from RAM; negative: no
	// RAM-sized runs. A set too slow to make a whole pass in MinTime is
	// timed on a window of blocks that moves through the buffers.
	RAMBytes int64
	// MinTime is the least time one measurement runs (best of three);
	// 0: 300 ms (Quick: 100 ms).
	MinTime time.Duration
	// Progress, if set, is told what is measured next.
	Progress func(what string)
}

// Result is one measurement.
type Result struct {
	Set        string  `json:"set"`
	DType      string  `json:"dtype"`
	Models     int     `json:"models"`
	Size       string  `json:"size"`        // "l2" (one block, reused) or "ram"
	Block      int     `json:"block"`       // elements per block
	Elements   int64   `json:"elements"`    // per model, per pass
	InputBytes int64   `json:"input_bytes"` // per pass
	Seconds    float64 `json:"seconds"`     // per pass, best of three
	GBps       float64 `json:"gb_per_s"`    // input bytes per second / 1e9
	ElemsPerNs float64 `json:"elements_per_ns"`
	CopyGBps   float64 `json:"copy_gb_per_s"` // copy() of as many bytes, same run
	VsCopy     float64 `json:"vs_copy"`       // GBps / CopyGBps
	VsGo       float64 `json:"vs_go,omitempty"`
}

// Run measures every chosen set × dtype × N, on L2-sized blocks and on
// RAM-sized buffers.
func Run(opts Options) ([]Result, error) {
	o, sets, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	var res []Result
	var ramCopy float64
	if o.RAMBytes > 0 {
		o.progress(fmt.Sprintf("memory copy, %d MiB", o.RAMBytes>>20))
		ramCopy = copyGBps(int(o.RAMBytes), o.MinTime)
	}
	for _, dt := range o.DTypes {
		for _, n := range o.Models {
			block := o.Block
			if block == 0 {
				block = defaultBlock(dt, n)
			}
			sizes := []struct {
				name  string
				elems int
			}{{"l2", block}}
			if o.RAMBytes > 0 {
				per := int(o.RAMBytes / int64((n+1)*dt.Size()))
				per -= per % block
				if per < block {
					per = block
				}
				sizes = append(sizes, struct {
					name  string
					elems int
				}{"ram", per})
			}
			for _, sz := range sizes {
				in := newInputs(dt, n, sz.elems, block)
				inBytes := int64((n + 1) * sz.elems * dt.Size())
				cp := ramCopy
				if sz.name == "l2" {
					o.progress(fmt.Sprintf("memory copy, %d KiB", inBytes>>10))
					cp = copyGBps(int(inBytes), o.MinTime)
				}
				for _, s := range sets {
					o.progress(fmt.Sprintf("%s %v N=%d %s", s.Name, dt, n, sz.name))
					sec := in.time(s, o.MinTime)
					r := Result{
						Set: s.Name, DType: strings.ToLower(dt.String()), Models: n, Size: sz.name,
						Block: block, Elements: int64(sz.elems), InputBytes: inBytes, Seconds: sec,
						GBps: float64(inBytes) / sec / 1e9, ElemsPerNs: float64(sz.elems) / sec / 1e9,
						CopyGBps: cp,
					}
					if cp > 0 {
						r.VsCopy = r.GBps / cp
					}
					res = append(res, r)
				}
			}
		}
	}
	// Speed-ups over the Go reference where it was measured.
	goSec := map[string]float64{}
	for _, r := range res {
		if r.Set == kernels.Generic.Name {
			goSec[key(r)] = r.Seconds
		}
	}
	for i := range res {
		if g, ok := goSec[key(res[i])]; ok {
			res[i].VsGo = g / res[i].Seconds
		}
	}
	return res, nil
}

func key(r Result) string { return fmt.Sprintf("%s/%d/%s", r.DType, r.Models, r.Size) }

func (o Options) withDefaults() (Options, []*kernels.Set, error) {
	if len(o.DTypes) == 0 {
		o.DTypes = []kernels.DType{kernels.BF16, kernels.F16, kernels.F32}
		if o.Quick {
			o.DTypes = o.DTypes[:1]
		}
	}
	if len(o.Models) == 0 {
		o.Models = []int{2, 3, 8}
		if o.Quick {
			o.Models = []int{3}
		}
	}
	for _, n := range o.Models {
		if n < 1 || n > 1024 {
			return o, nil, fmt.Errorf("kernelbench: %d models: want 1 to 1024", n)
		}
	}
	if o.Block < 0 || o.Block > 1<<24 {
		return o, nil, fmt.Errorf("kernelbench: block of %d elements: want 1 to 2^24", o.Block)
	}
	if o.RAMBytes == 0 {
		o.RAMBytes = min(max(256<<20, 2*int64(kernels.L3Bytes())), 1<<30)
	}
	if o.MinTime <= 0 {
		o.MinTime = 300 * time.Millisecond
		if o.Quick {
			o.MinTime = 100 * time.Millisecond
		}
	}
	var sets []*kernels.Set
	if len(o.Sets) == 0 {
		sets = kernels.Available()
	}
	for _, name := range o.Sets {
		s, err := kernels.Lookup(name)
		if err != nil {
			return o, nil, fmt.Errorf("kernelbench: %w", err)
		}
		sets = append(sets, s)
	}
	if len(sets) == 0 {
		return o, nil, errors.New("kernelbench: no kernel set to measure")
	}
	return o, sets, nil
}

func (o Options) progress(s string) {
	if o.Progress != nil {
		o.Progress(s)
	}
}

// defaultBlock fits one block's inputs and float32 work (base, N task
// vectors, the merged one) in half the L2 cache, 16K–64K elements.
func defaultBlock(dt kernels.DType, n int) int {
	per := (n+2)*dt.Size() + 4*(n+2)
	b := kernels.L2Bytes() / 2 / per
	b = min(max(b, 16<<10), 64<<10)
	return b &^ 1023
}

// inputs are one merge's stored base and models, elems each, processed in
// blocks of block elements, with the float32 work of one block.
type inputs struct {
	dt           kernels.DType
	n, elems, bl int
	base         []byte
	models       [][]byte
	out          []byte
	p            kernels.VoteParams
	thr          []uint32 // per model
	kept         []int
	scratch      []float32
}

// newInputs makes synthetic checkpoints: base values uniform in ±0.05, task
// vectors uniform in ±0.002 (the threshold keeps about a fifth), the paper
// preset (sum vote, disjoint mean, weights 1).
func newInputs(dt kernels.DType, n, elems, block int) *inputs {
	in := &inputs{dt: dt, n: n, elems: elems, bl: block}
	sz := dt.Size()
	in.base = make([]byte, elems*sz)
	in.out = make([]byte, elems*sz)
	baseF := make([]float32, min(elems, 1<<20))
	rng := uint64(0x9e3779b97f4a7c15)
	next := func() float32 { // wyrand, uniform in [-0.5, 0.5)
		rng += 0xa0761d6478bd642f
		hi, lo := bits.Mul64(rng, rng^0xe7037ed1a0b428db)
		return float32((hi^lo)>>40)/(1<<24) - 0.5
	}
	put := func(dst []byte, i int, f float32) {
		switch dt {
		case kernels.F32:
			u := math.Float32bits(f)
			dst[4*i], dst[4*i+1], dst[4*i+2], dst[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
		case kernels.F16:
			h := kernels.F32ToF16(f)
			dst[2*i], dst[2*i+1] = byte(h), byte(h>>8)
		default:
			h := kernels.F32ToBF16(f)
			dst[2*i], dst[2*i+1] = byte(h), byte(h>>8)
		}
	}
	for i := 0; i < elems; i++ {
		f := next() * 0.1
		baseF[i%len(baseF)] = f
		put(in.base, i, f)
	}
	in.models = make([][]byte, n)
	for m := range in.models {
		in.models[m] = make([]byte, elems*sz)
		for i := 0; i < elems; i++ {
			put(in.models[m], i, baseF[i%len(baseF)]+next()*0.004)
		}
	}
	w := make([]float32, n)
	in.thr, in.kept = make([]uint32, n), make([]int, n)
	for i := range w {
		w[i], in.thr[i] = 1, kernels.AbsBits(0.0016)
	}
	in.p = kernels.VoteParams{Weights: w}
	in.scratch = make([]float32, kernels.TiesScratch(n, block))
	return in
}

// time returns the seconds one pass over every block takes with s: the best
// of three runs of whole passes, or, where a pass takes longer than a third
// of min, of windows of consecutive blocks (cycling through the buffers,
// so each window reads blocks last touched a full cycle ago) scaled up.
func (in *inputs) time(s *kernels.Set, minTime time.Duration) float64 {
	blocks := (in.elems + in.bl - 1) / in.bl
	if blocks == 1 {
		return best(minTime, func() { in.blocks(s, 0, 1) })
	}
	cur, cnt := 0, 1
	run := func() time.Duration {
		t0 := time.Now()
		in.blocks(s, cur, cnt)
		d := time.Since(t0)
		cur = (cur + cnt) % blocks
		return d
	}
	for cnt < blocks && run() < minTime/3 {
		cnt = min(2*cnt, blocks)
	}
	sec := math.Inf(1)
	for range 3 {
		sec = math.Min(sec, run().Seconds())
	}
	return sec * float64(blocks) / float64(cnt)
}

// blocks merges cnt blocks with s's fused kernel from block first on,
// wrapping around.
func (in *inputs) blocks(s *kernels.Set, first, cnt int) {
	sz, b := in.dt.Size(), in.bl
	nb := (in.elems + b - 1) / b
	models := make([][]byte, in.n)
	for k := range cnt {
		off := (first + k) % nb * b
		m := min(b, in.elems-off)
		lo, hi := off*sz, (off+m)*sz
		for i, mdl := range in.models {
			models[i] = mdl[lo:hi]
		}
		s.Ties(&kernels.TiesBlock{Dst: in.out[lo:hi], OutDT: in.dt, Base: in.base[lo:hi], Models: models,
			DT: in.dt, Thr: in.thr, Vote: &in.p, Lambda: 1, Kept: in.kept, Scratch: in.scratch})
	}
}

// best runs f until at least minTime has passed, three times, and returns the
// fastest time per call.
func best(minTime time.Duration, f func()) float64 {
	f() // warm caches and pages
	reps := 1
	for {
		t := timeIt(f, reps)
		if t >= minTime/3 || reps >= 1<<30 {
			break
		}
		if t <= 0 {
			reps *= 16
		} else {
			reps = int(float64(reps) * float64(minTime/3) / float64(t) * 1.2)
		}
	}
	sec := math.Inf(1)
	for range 3 {
		sec = math.Min(sec, timeIt(f, reps).Seconds()/float64(reps))
	}
	return sec
}

func timeIt(f func(), reps int) time.Duration {
	t0 := time.Now()
	for range reps {
		f()
	}
	return time.Since(t0)
}

// copyGBps times copy() of n bytes between two buffers, in bytes read per
// second / 1e9.
func copyGBps(n int, minTime time.Duration) float64 {
	src, dst := make([]byte, n), make([]byte, n)
	for i := range src {
		src[i] = byte(i)
	}
	return float64(n) / best(minTime, func() { copy(dst, src) }) / 1e9
}

// WriteTable prints results as an aligned table, grouped as measured.
func WriteTable(w io.Writer, results []Result) error {
	rs := append([]Result(nil), results...)
	sort.SliceStable(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		if a.Size != b.Size {
			return a.Size == "l2"
		}
		if a.DType != b.DType {
			return a.DType < b.DType
		}
		return a.Models < b.Models
	})
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "size\tdtype\tN\tset\tblock\tGB/s\telem/ns\tcopy GB/s\t×copy\t×go\t")
	for _, r := range rs {
		vsGo := "-"
		if r.VsGo > 0 {
			vsGo = fmt.Sprintf("%.1f", r.VsGo)
		}
		size := r.Size
		if r.Size == "ram" {
			size = fmt.Sprintf("ram %d MiB", r.InputBytes>>20)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%.2f\t%.3f\t%.2f\t%.2f\t%s\t\n",
			size, r.DType, r.Models, r.Set, r.Block, r.GBps, r.ElemsPerNs, r.CopyGBps, r.VsCopy, vsGo)
	}
	return tw.Flush()
}
