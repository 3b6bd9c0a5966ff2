// Command tiesmm merges fine-tuned checkpoints of one base model with
// TIES-Merging and its relatives, out of core, from safetensors files.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/tiesmm/tiesmm/merge"
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
	go func() {
		<-sig.Done()
		stop() // a second signal kills at once, should the first not stop the work
	}()
	ctx.BindTo(sig, (*context.Context)(nil))
	if err := ctx.Run(); err != nil {
		os.Exit(report(err, sig.Err() != nil))
	}
}

// exitInterrupted is the exit code after SIGINT or SIGTERM, as a shell
// reports a command stopped by Ctrl-C (128 + SIGINT).
const exitInterrupted = 130

// report prints err and returns the exit code: 130 for an interrupt, which
// says what it removed rather than "context canceled", else 1.
func report(err error, signaled bool) int {
	var in *merge.Interrupted
	switch {
	case errors.As(err, &in):
		fmt.Fprintln(os.Stderr, "tiesmm:", in)
		return exitInterrupted
	case signaled:
		fmt.Fprintln(os.Stderr, "tiesmm: interrupted")
		return exitInterrupted
	}
	fmt.Fprintln(os.Stderr, "tiesmm:", err)
	return 1
}
