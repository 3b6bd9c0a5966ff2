package merge

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
)

// TestSoloCancelled: a cancelled merge of solo tensors stops with the
// context's error, naming a tensor, and leaves no output.
func TestSoloCancelled(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	set := randomSet(r, 3, false)
	dir := t.TempDir()
	base, models := set.write(t, dir, r)
	out := filepath.Join(dir, "out")
	m := preset("mergekit", nil)()
	p, err := NewPlan(Options{Base: base, Models: models, Out: out, Threads: 2, Kernels: kernels.Generic}, m,
		func(name string, _, _ int) (TensorParams, error) { return uniformParams(0.3, ones(3), 1)(name), nil })
	if err != nil {
		t.Fatal(err)
	}
	solo := 0
	r0 := &run{p: p, ws: make([]*worker, 2)}
	for ji := range p.Jobs {
		if r0.solo(ji) {
			solo++
		}
	}
	if solo == 0 {
		t.Fatal("no tensor of the set is merged solo: the test no longer exercises it")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Run(ctx, p, nil, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a cancelled merge left %s (%v)", out, err)
	}
}
