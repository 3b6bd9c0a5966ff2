package merge

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
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
	for ji := range p.Jobs {
		if p.Strategy(ji).Solo {
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

// TestSoloUnmapsShards: with models in several shards, every shard is
// unmapped once the solo tensors reading it are merged, not left mapped
// until the end (all of a 70B merge's shards at once would not fit some
// arm64 kernels' address space).
func TestSoloUnmapsShards(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	set := randomSet(r, 2, false)
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	writeModel(t, base, set.base, 600) // several shards per model
	var models []string
	for i, ts := range set.models {
		m := filepath.Join(dir, "ft"+string(rune('1'+i)))
		writeModel(t, m, ts, 600)
		models = append(models, m)
	}
	p, err := NewPlan(Options{Base: base, Models: models, Out: filepath.Join(dir, "out"), Threads: 2, Kernels: kernels.Generic},
		preset("mergekit", nil)(), func(name string, _, _ int) (TensorParams, error) { return uniformParams(0.3, ones(2), 1)(name), nil })
	if err != nil {
		t.Fatal(err)
	}
	run := &run{p: p, k: p.Opts.Kernels, prog: noProgress{}}
	run.openFiles()
	defer run.closeFiles()
	if len(run.files) < 6 {
		t.Fatalf("%d input files: the test wants several shards per model", len(run.files))
	}
	if run.out, err = mmapio.CreateOutput(p.Opts.Out, false, p.Layout); err != nil {
		t.Fatal(err)
	}
	defer run.out.Abort()
	run.setup()
	var solo []int
	for ji := range p.Jobs {
		if run.strategy[ji].Solo {
			solo = append(solo, ji)
		}
	}
	if len(solo) < 3 {
		t.Fatalf("%d solo tensors: the test no longer exercises the solo batch", len(solo))
	}
	if err := run.impl[solo[0]].merge(context.Background(), run, solo); err != nil {
		t.Fatal(err)
	}
	for path, f := range run.files {
		if f.m != nil {
			t.Errorf("%s: still mapped after every solo tensor was merged", path)
		}
	}
}
