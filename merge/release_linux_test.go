package merge

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/tiesmm/tiesmm/kernels"
)

// TestSampledRunsReleased: a pass over sampled runs releases each run's
// pages, and those a fault may map around it (the rest of its folios), as
// it goes: runs far apart each take their folios with them, sparseLag runs
// behind the one being read; runs closer than that (many to a folio) release
// every folio wholly before the run sparseLag behind.
func TestSampledRunsReleased(t *testing.T) {
	const n = 1 << 23                                 // 16 MiB of bf16 per file
	for _, gap := range []int64{1 << 21, 160 << 10} { // elements between runs: 4 MiB (two folios), 320 KB
		name := "model.layers.0.mlp.up_proj.weight"
		tt := testTensor{name: name, shape: []int64{2048, 4096}, dt: kernels.BF16, vals: make([]float32, n)}
		set := testSet{base: []testTensor{tt}, models: [][]testTensor{{tt}}}
		dir := t.TempDir()
		base, models := set.write(t, dir, rand.New(rand.NewPCG(1, 1)))
		opts := Options{Base: base, Models: models, Out: filepath.Join(dir, "out"), Threads: 1, BlockElems: 4096, Kernels: kernels.Generic}
		p, err := NewPlan(opts, preset("paper", nil)(), func(string, int, int) (TensorParams, error) { return uniformParams(0.2, ones(1), 1)(name), nil })
		if err != nil {
			t.Fatal(err)
		}
		r := &run{p: p, k: p.Opts.Kernels, prog: noProgress{}}
		r.openFiles()
		defer r.closeFiles()
		r.setup()
		var bs []block
		for start := gap / 2; start+4096 <= n; start += gap {
			bs = append(bs, block{job: 0, index: int(start / 4096), seq: len(bs), start: start, n: 4096})
		}
		j := &p.Jobs[0]
		var sum byte
		var unseen atomic.Bool
		err = r.parallel(context.Background(), bs, func(w *worker, b block) error {
			data := r.src(j.Base, j.BaseDT, 0, n)
			// The bytes of b's run and the rest of the PMD-sized folios
			// holding them (aligned in the address space, or a fault maps
			// no PMD), as a fault may map them.
			va := int64(uintptr(unsafe.Pointer(&data[0])))
			span := func(b block) (int64, int64) {
				lo := (va+2*b.start)/faultSpan*faultSpan - va
				hi := (va+2*(b.start+b.n)+faultSpan-1)/faultSpan*faultSpan - va
				return max(0, lo), min(2*n, hi)
			}
			var lo, hi int64 // what must be released by now
			switch k := b.seq - 1 - sparseLag; {
			case k < 0:
			case 2*gap >= 2*faultSpan: // bytes of bf16 between runs: far apart
				lo, hi = span(bs[k])
			default:
				lo, _ = span(bs[0])
				hi, _ = span(bs[k+1])
			}
			if hi-lo > 2*int64(os.Getpagesize()) {
				pages := present(t, data[lo:hi])
				for pg, in := range pages[1 : len(pages)-1] { // the ends may share a page with what is kept
					if in {
						t.Errorf("gap %d, run %d: page %d of [%d, %d) still mapped", gap, b.seq, pg+1, lo, hi)
						break
					}
				}
			}
			lo, hi = span(b)
			for i := lo; i < hi; i += int64(os.Getpagesize()) {
				sum += data[i]
			}
			if !present(t, data[2*b.start:2*b.start+1])[0] {
				unseen.Store(true)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if unseen.Load() {
			t.Skip("pagemap cannot tell mapped pages here")
		}
		_ = sum
	}
}

// present reports, per page of b, whether it is in this process's page
// tables (its RSS), from /proc/self/pagemap bit 63; mincore would tell
// page-cache residency instead.
func present(t *testing.T, b []byte) []bool {
	t.Helper()
	pg := os.Getpagesize()
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Skipf("no pagemap: %v", err)
	}
	defer f.Close()
	first := uintptr(unsafe.Pointer(&b[0])) / uintptr(pg)
	last := (uintptr(unsafe.Pointer(&b[len(b)-1]))) / uintptr(pg)
	buf := make([]byte, 8*(last-first+1))
	if _, err := f.ReadAt(buf, int64(first)*8); err != nil {
		t.Skipf("pagemap: %v", err)
	}
	r := make([]bool, len(buf)/8)
	for i := range r {
		r[i] = binary.LittleEndian.Uint64(buf[8*i:])>>63 != 0
	}
	return r
}
