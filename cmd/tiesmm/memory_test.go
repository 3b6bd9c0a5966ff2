package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
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
		peak, msg := mergePeak(t, dir, "--preset", preset, "--density", "0.2", "--max-memory", "100MiB",
			"--base", "sets/base", "--model", "sets/ft1", "--model", "sets/ft2", "--model", "sets/ft3", out)
		t.Logf("%s: peak RSS %d MiB, bound %d MiB", preset, peak>>20, bound>>20)
		if peak > bound {
			t.Errorf("%s: peak RSS %d MiB over --max-memory %d MiB\n%s", preset, peak>>20, bound>>20, msg)
		}
	}
}

// mergePeak runs a merge with --json and returns the peak resident memory
// the child measured of itself (VmHWM: its own address space's high-water
// mark; the exit's rusage would also count the parent's pages it was
// spawned from), and its stderr.
func mergePeak(t *testing.T, dir string, args ...string) (int64, string) {
	t.Helper()
	stdout, stderr, code := tiesmm(t, dir, append([]string{"merge", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("tiesmm merge %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	var sum struct {
		Peak int64 `json:"peak_rss_bytes"`
	}
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil || sum.Peak <= 0 {
		t.Fatalf("no peak_rss_bytes in the summary (%v):\n%s", err, stdout)
	}
	return sum.Peak, stderr
}
