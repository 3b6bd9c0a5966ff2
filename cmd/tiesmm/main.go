// Command tiesmm merges fine-tuned checkpoints of one base model with
// TIES-Merging and its relatives, out of core, from safetensors files.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
)

type cli struct {
	Merge mergeCmd `cmd:"" help:"Merge fine-tunes of a base model (a mergekit YAML config, or flags)."`
	Synth synthCmd `cmd:"" help:"Write seeded synthetic checkpoints (a base and fine-tunes) for demos, tests and benchmarks."`
	Bench benchCmd `cmd:"" help:"Measure the merge kernels this CPU can run."`
	CPU   cpuCmd   `cmd:"" name:"cpu" help:"Print the CPU's features, caches and the kernels chosen."`
}

func main() {
	var c cli
	ctx := kong.Parse(&c,
		kong.Name("tiesmm"),
		kong.Description("TIES-Merging of safetensors checkpoints, out of core, with SIMD kernels.\n\n"+
			"Sizes take binary units (KiB, MiB, GiB = 2^30 bytes) or decimal ones (KB, MB, GB = 10^9 bytes; "+
			"mergekit's K, M, B = thousand, million, billion)."),
		kong.UsageOnError(),
	)
	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx.BindTo(sig, (*context.Context)(nil))
	if err := ctx.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "tiesmm:", err)
		os.Exit(1)
	}
}
