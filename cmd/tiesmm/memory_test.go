package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tiesmm/tiesmm/internal/units"
)

// TestPeakRSSUnderMaxMemory merges inputs four times larger than
// --max-memory and holds the process's peak resident set to the bound,
// for the whole-model (single pass, spill) and the per-tensor presets, and
// for pcb in both scopes.
func TestPeakRSSUnderMaxMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and merges 400 MB")
	}
	dir := t.TempDir()
	mustRun(t, dir, "synth", "--params", "50M", "--models", "3", "--seed", "3", "sets")
	const bound = 100 << 20 // inputs: 4 × 100 MB
	for _, preset := range []string{"paper", "mergekit", "pcb-model", "pcb-tensor"} {
		out := filepath.Join(dir, "out-"+preset)
		method := []string{"--preset", preset, "--density", "0.2"}
		if scope, ok := strings.CutPrefix(preset, "pcb-"); ok {
			method = []string{"--method", "pcb", "--scope", scope}
		}
		peak, msg := mergePeak(t, dir, append(method, "--max-memory", "100MiB",
			"--base", "sets/base", "--model", "sets/ft1", "--model", "sets/ft2", "--model", "sets/ft3", out)...)
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

// TestPeakRSSProperty draws block sizes, thread counts, methods and bounds
// at random: each merge either stays under --max-memory and under the bound
// it prints, or is refused before any work with the smallest --max-memory
// that would fit, which --dry-run then accepts (and a bound a little below
// it does not).
func TestPeakRSSProperty(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a few dozen small merges")
	}
	seed := uint64(20240607)
	if s := os.Getenv("TIESMM_MEMORY_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	t.Logf("seed %d (TIESMM_MEMORY_SEED)", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	mustRun(t, dir, "synth", "--params", "3M", "--models", "2", "--seed", "7", "sets")
	methods := [][]string{
		{"--method", "ties", "--preset", "paper", "--density", "0.3"},
		{"--method", "ties", "--preset", "mergekit", "--density", "0.3"},
		{"--method", "ties", "--preset", "peft", "--density", "0.3"},
		{"--method", "task_arithmetic"},
		{"--method", "dare_ties", "--density", "0.5"},
		{"--method", "breadcrumbs", "--density", "0.3"},
		{"--method", "della", "--density", "0.5"},
		{"--method", "model_stock"},
		{"--method", "emr", "--materialize", "all"},
		{"--method", "pcb"},
		{"--method", "pcb", "--scope", "tensor", "--inter", "pairwise"},
	}
	blocks := []int{0, 1, 2, 3, 5, 7, 33, 127, 1000, 4096, 65536}
	bounds := []int64{64 << 20, 96 << 20, 160 << 20, 256 << 20, 512 << 20}
	var ran, refused int
	for trial := range 60 {
		args := []string{"merge", "--json", "--base", "sets/base", "--model", "sets/ft1", "--model", "sets/ft2"}
		args = append(args, methods[r.IntN(len(methods))]...)
		var flags []string // as the refusal names them
		if b := blocks[r.IntN(len(blocks))]; b > 0 {
			args = append(args, "--block-size", strconv.Itoa(b))
			flags = append(flags, fmt.Sprintf("--block-size %d", b))
		}
		switch k := r.IntN(4); {
		case k == 0:
		case k == 1:
			args = append(args, "--threads", "512") // far above the cores
			flags = append(flags, "--threads 512")
		default:
			th := 1 + r.IntN(64)
			args = append(args, "--threads", strconv.Itoa(th))
			flags = append(flags, fmt.Sprintf("--threads %d", th))
		}
		bound := bounds[r.IntN(len(bounds))]
		name := fmt.Sprintf("out%d", trial)
		run := append(append([]string{}, args...), "--max-memory", strconv.FormatInt(bound, 10), name)
		what := fmt.Sprintf("trial %d: %s", trial, strings.Join(run[1:], " "))
		cmd := exec.Command(bin, run...)
		cmd.Dir = dir
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		if err == nil {
			ran++
			var sum struct {
				Peak    int64 `json:"peak_rss_bytes"`
				Planned int64 `json:"memory_bound_bytes"`
			}
			if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil || sum.Peak <= 0 || sum.Planned <= 0 {
				t.Fatalf("%s: no peak and bound in the summary (%v):\n%s", what, err, stdout.String())
			}
			peak, planned := sum.Peak, sum.Planned // the child's own VmHWM: see mergePeak
			t.Logf("%s: peak RSS %.1f MiB, plan's bound %.1f MiB", what, float64(peak)/(1<<20), float64(planned)/(1<<20))
			if peak > bound || peak > planned {
				t.Errorf("%s: peak RSS %d KiB over --max-memory %d KiB or the plan's bound %d KiB", what, peak>>10, bound>>10, planned>>10)
			}
			os.RemoveAll(filepath.Join(dir, name))
			continue
		}
		refused++
		msg := stderr.String()
		m := regexp.MustCompile(`needs at least ([0-9.]+) ([KMG]iB)`).FindStringSubmatch(msg)
		if m == nil {
			t.Fatalf("%s: exit %d without the smallest bound:\n%s", what, exit.ExitCode(), msg)
		}
		if want := "too small for " + strings.Join(flags, " and ") + ":"; len(flags) > 0 && !strings.Contains(msg, want) {
			t.Errorf("%s: the refusal does not say %q:\n%s", what, want, msg)
		}
		t.Logf("%s: refused, %s", what, strings.TrimSpace(msg))
		left, lerr := os.ReadDir(dir)
		if lerr != nil {
			t.Fatal(lerr)
		}
		for _, e := range left {
			if e.Name() == name || strings.HasPrefix(e.Name(), "."+name+".tiesmm-partial-") {
				t.Errorf("%s: refused but left %s", what, e.Name())
			}
		}
		least, perr := units.ParseBytes(m[1] + m[2])
		if perr != nil {
			t.Fatal(perr)
		}
		if _, errOut, code := tiesmm(t, dir, append(append([]string{}, args...), "--dry-run", "--max-memory", strconv.FormatInt(least, 10), name)...); code != 0 {
			t.Errorf("%s: --max-memory %d, the smallest bound it named, is refused too:\n%s", what, least, errOut)
		}
		below := least - least/50
		if _, _, code := tiesmm(t, dir, append(append([]string{}, args...), "--dry-run", "--max-memory", strconv.FormatInt(below, 10), name)...); code == 0 {
			t.Errorf("%s: --max-memory %d, below the smallest bound it named (%d), fits", what, below, least)
		}
	}
	t.Logf("%d merges ran, %d refused", ran, refused)
	if ran == 0 || refused == 0 {
		t.Errorf("the draws exercised one branch only: %d ran, %d refused", ran, refused)
	}
}
