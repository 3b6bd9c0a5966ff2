package main

import (
	"context"
	"fmt"
	"os"

	"github.com/tiesmm/tiesmm/internal/units"
	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/merge"
)

type emrApplyCmd struct {
	Dir  string `arg:"" name:"emr-out" help:"The output of an EMR merge (holding emr.json, unified/ and masks/)."`
	Dest string `arg:"" name:"dest" help:"Where to write the task's model."`

	Task         string   `required:"" help:"The task: its name in emr.json, or its index from 0." placeholder:"NAME|INDEX"`
	Base         string   `help:"The base model (default: emr.json's base_model); its headers must match the merge's." placeholder:"DIR"`
	OutDType     string   `name:"out-dtype" help:"Output dtype: bfloat16, float16 or float32 (default: the base's)."`
	OutShardSize ByteSize `name:"out-shard-size" help:"Largest output shard, at least 1MiB." default:"5GB"`
	Force        bool     `help:"Replace an existing output directory that holds a model (and nothing else)."`
	Threads      int      `help:"Workers (default: one per core)."`
	MaxMemory    ByteSize `name:"max-memory" help:"Bound on resident memory, above 0; fewer workers by default if it is tight." default:"2GiB"`
	BlockSize    int      `name:"block-size" help:"Elements per block, a multiple of 8 (default: 65536)."`
	Kernel       string   `help:"Kernel set: auto, avx512, avx2, neon or go." env:"TIESMM_KERNEL" default:"auto"`
	Quiet        bool     `short:"q" help:"Print nothing but errors."`
}

func (c *emrApplyCmd) Run(ctx context.Context) error {
	if c.OutShardSize < minShardSize {
		return usageError{fmt.Errorf("--out-shard-size %d: want at least %d bytes (1MiB)", c.OutShardSize, minShardSize)}
	}
	if c.MaxMemory <= 0 {
		return usageError{fmt.Errorf("--max-memory %d: want a positive size (examples: 2GiB, 512MiB)", c.MaxMemory)}
	}
	if c.BlockSize < 0 || c.BlockSize%8 != 0 {
		return usageError{fmt.Errorf("--block-size %d: want a positive multiple of 8", c.BlockSize)}
	}
	ks, err := kernels.Lookup(c.Kernel)
	if err != nil {
		return err
	}
	var prog merge.Progress
	if !c.Quiet {
		prog = newProgress(os.Stderr)
	}
	sum, err := merge.ApplyEMR(ctx, merge.ApplyOptions{
		Dir: c.Dir, Task: c.Task, Base: c.Base, Out: c.Dest, Force: c.Force, OutDType: c.OutDType,
		ShardBytes: int64(c.OutShardSize), Threads: c.Threads, BlockElems: c.BlockSize, MaxMemory: int64(c.MaxMemory), Kernels: ks,
	}, prog)
	if err != nil {
		return err
	}
	if !c.Quiet {
		fmt.Printf("Wrote task %s (index %d, rescaler %v) to %s in %s: %s, peak memory %s.\n", sum.Task.Name, sum.Index, sum.Task.Rescaler,
			c.Dest, shortDuration(sum.Elapsed), units.FormatDecimal(sum.OutputBytes), units.FormatBinary(sum.PeakRSS))
	}
	return nil
}
