// Command tiesmm merges fine-tuned checkpoints of one base model with
// TIES-Merging and its relatives, out of core, from safetensors files.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/merge"
)

type cli struct {
	Merge      mergeCmd      `cmd:"" help:"Merge fine-tunes of a base model (a mergekit YAML config, or flags)."`
	Inspect    inspectCmd    `cmd:"" help:"Measure the interference between fine-tunes before merging them: sign conflicts, trimmed mass, overlap, cosine."`
	EMRApply   emrApplyCmd   `cmd:"" name:"emr-apply" help:"Write one task's model from an EMR merge's output (merge --method emr)."`
	Synth      synthCmd      `cmd:"" help:"Write seeded synthetic checkpoints (a base and fine-tunes) for demos, tests and benchmarks."`
	Bench      benchCmd      `cmd:"" help:"Measure the merge kernels this CPU can run."`
	CPU        cpuCmd        `cmd:"" name:"cpu" help:"Print the CPU's features, caches and the kernels chosen."`
	Completion completionCmd `cmd:"" help:"Print a shell completion script: bash, zsh or fish."`

	Version kong.VersionFlag `help:"Print the version and exit."`
}

// Exit codes: 0 merged (or the command did its job), 1 bad input or a failed
// merge (nothing written), 2 a mistake in the command line, 130 interrupted.
const (
	exitFailure     = 1
	exitUsage       = 2
	exitInterrupted = 130 // as a shell reports a command stopped by Ctrl-C (128 + SIGINT)
)

// usageError is a mistake in the command line rather than in the inputs.
type usageError struct{ error }

func main() {
	var c cli
	parser, err := kong.New(&c,
		kong.Name("tiesmm"),
		kong.Description("TIES-Merging of safetensors checkpoints, out of core, with SIMD kernels.\n\n"+
			"Sizes take binary units (KiB, MiB, GiB = 2^30 bytes) or decimal ones (KB, MB, GB = 10^9 bytes; "+
			"mergekit's K, M, B = thousand, million, billion).\n\n"+
			"Exit codes: 0 done, 1 bad input or failure (nothing written), 2 usage, 130 interrupted."),
		kong.Vars{"version": version(), "methods": strings.Join(config.KnownMethods(), ", ")},
		kong.ExplicitGroups(mergeGroups),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tiesmm:", err)
		os.Exit(exitFailure)
	}
	ctx, err := parser.Parse(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "tiesmm: %v\nRun 'tiesmm --help' (or 'tiesmm COMMAND --help') for usage.\n", err)
		os.Exit(exitUsage)
	}
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
	var usage usageError
	if errors.As(err, &usage) {
		return exitUsage
	}
	return exitFailure
}

var mergeGroups = []kong.Group{
	{Key: "input", Title: "Inputs (flag form)"},
	{Key: "method", Title: "Method"},
	{Key: "output", Title: "Output"},
	{Key: "resources", Title: "Resources"},
	{Key: "diagnostics", Title: "Diagnostics and output format"},
}

// commit is set by the Makefile's build (-X main.commit=...) where the
// build info carries no VCS stamp (-buildvcs=false, or not a git checkout).
var commit string

// version is the module's version and the commit it was built from.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "tiesmm (unknown version)"
	}
	v := "tiesmm " + info.Main.Version
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "-dirty"
			}
		}
	}
	if rev == "" {
		rev = strings.TrimSuffix(commit, "-dirty")
		if rev != commit {
			modified = "-dirty"
		}
	}
	if rev != "" {
		v += fmt.Sprintf(" (commit %.12s%s)", rev, modified)
	}
	return v + ", " + info.GoVersion + " " + runtime.GOOS + "/" + runtime.GOARCH
}
