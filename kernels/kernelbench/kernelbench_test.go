package kernelbench

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tiesmm/tiesmm/kernels"
)

func TestRunSmall(t *testing.T) {
	opts := Options{
		DTypes:   []kernels.DType{kernels.BF16, kernels.F32},
		Models:   []int{1, 3},
		Block:    4096,
		RAMBytes: 1 << 20,
		MinTime:  3 * time.Millisecond,
	}
	var steps int
	opts.Progress = func(string) { steps++ }
	res, err := Run(opts)
	if err != nil {
		t.Fatal(err)
	}
	sets := kernels.Available()
	if want := 2 * 2 * 2 * len(sets); len(res) != want {
		t.Fatalf("%d results, want %d (dtypes × N × sizes × sets)", len(res), want)
	}
	if steps < len(res) {
		t.Errorf("progress called %d times for %d results", steps, len(res))
	}
	for _, r := range res {
		per := int64((r.Models + 1) * 2)
		if r.DType == "f32" {
			per = int64((r.Models + 1) * 4)
		}
		if r.InputBytes != r.Elements*per || r.Seconds <= 0 || r.GBps <= 0 || r.CopyGBps <= 0 {
			t.Errorf("implausible result %+v", r)
		}
		// GB/s and elements/ns describe the same time.
		if d := r.GBps/(r.ElemsPerNs*float64(per)) - 1; d > 1e-9 || d < -1e-9 {
			t.Errorf("%+v: GB/s and elem/ns disagree", r)
		}
		if r.Set == "go" && r.VsGo != 1 {
			t.Errorf("go set VsGo = %v, want 1", r.VsGo)
		}
		if r.Size == "ram" && r.Elements%int64(r.Block) != 0 {
			t.Errorf("ram run of %d elements is not whole blocks of %d", r.Elements, r.Block)
		}
	}
	var buf bytes.Buffer
	if err := WriteTable(&buf, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GB/s", "×copy", sets[0].Name, "bf16", "ram"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestRunErrors(t *testing.T) {
	for _, o := range []Options{{Sets: []string{"no-such-set"}}, {Models: []int{0}}, {Block: -1}} {
		if _, err := Run(o); err == nil {
			t.Errorf("Run(%+v): no error", o)
		}
	}
}

// The pipeline must produce what the reference does, whichever set runs it.
func TestPipelineAgrees(t *testing.T) {
	in := newInputs(kernels.BF16, 3, 3*1000+17, 1000)
	in.blocks(kernels.Generic, 0, 4)
	want := append([]byte(nil), in.out...)
	for _, s := range kernels.Available() {
		clear(in.out)
		in.blocks(s, 0, 4)
		if !bytes.Equal(in.out, want) {
			t.Errorf("%s: pipeline output differs from the reference", s.Name)
		}
	}
}
