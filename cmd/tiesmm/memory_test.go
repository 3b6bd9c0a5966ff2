package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestPeakRSSUnderMaxMemory merges inputs four times larger than
// --max-memory and holds the process's peak resident set to the bound,
// for the whole-model (single pass, spill) and the per-tensor presets.
func TestPeakRSSUnderMaxMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and merges 400 MB")
	}
	dir := t.TempDir()
	mustRun(t, dir, "synth", "--params", "50M", "--models", "3", "--seed", "3", "sets")
	const bound = 100 << 20 // inputs: 4 × 100 MB
	for _, preset := range []string{"paper", "mergekit"} {
		out := filepath.Join(dir, "out-"+preset)
		cmd := exec.Command(bin, "merge", "--quiet", "--preset", preset, "--density", "0.2", "--max-memory", "100MiB",
			"--base", "sets/base", "--model", "sets/ft1", "--model", "sets/ft2", "--model", "sets/ft3", out)
		cmd.Dir = dir
		msg, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", preset, err, msg)
		}
		peak := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10 // KiB on Linux
		t.Logf("%s: peak RSS %d MiB, bound %d MiB", preset, peak>>20, bound>>20)
		if peak > bound {
			t.Errorf("%s: peak RSS %d MiB over --max-memory %d MiB\n%s", preset, peak>>20, bound>>20, msg)
		}
		if !strings.Contains(string(msg), "peak RSS") {
			t.Errorf("%s: no summary:\n%s", preset, msg)
		}
	}
}
