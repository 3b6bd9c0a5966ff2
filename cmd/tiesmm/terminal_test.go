package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// figures are what every progress line must show, whatever the width.
var figures = regexp.MustCompile(`^\[(\d)/(\d)\] (select|merge) .*?\s(\d+)%  \d+\.\d/\d+\.\d [MG]B  \d+ ?\.?\d* [kMG]?B/s  (ETA [-0-9.hms]+|in [0-9.hms]+)$`)

func TestProgressLine(t *testing.T) {
	for _, width := range []int{200, 99, 80, 60, 40} {
		for _, c := range []struct {
			done, total int64
			took        time.Duration
			final       bool
			pct         string
		}{
			{0, 3_900_000_000, 0, false, "0"},
			{1_800_000_000, 3_900_000_000, 1300 * time.Millisecond, false, "46"},
			{3_900_000_000, 3_900_000_000, 2800 * time.Millisecond, true, "100"},
			{52_000_000, 400_000_000, 90 * time.Minute, false, "13"},
		} {
			line := progressLine("merge", 2, 3, c.done, c.total, c.took, c.final, width)
			m := figures.FindStringSubmatch(line)
			if m == nil {
				t.Errorf("width %d: %q lacks the figures", width, line)
				continue
			}
			if m[4] != c.pct {
				t.Errorf("width %d: %q: %s%%, want %s%%", width, line, m[4], c.pct)
			}
			if len([]rune(line)) > width && strings.Contains(line, "[=") {
				t.Errorf("width %d: %q is %d columns with a bar that could shrink", width, line, len(line))
			}
		}
	}
	wide := progressLine("select", 1, 3, 1, 2, time.Second, false, 200)
	narrow := progressLine("select", 1, 3, 1, 2, time.Second, false, 60)
	if strings.Count(wide, "=")+strings.Count(wide, " ") <= strings.Count(narrow, "=")+strings.Count(narrow, " ") {
		t.Errorf("the bar does not shorten: %q at 200 columns, %q at 60", wide, narrow)
	}
	if !strings.Contains(progressLine("merge", 1, 1, 5e8, 1e9, time.Second, false, 80), "ETA 1.0s") {
		t.Error("half done in a second: the ETA is not a second")
	}
}

// openPTY returns a pseudo-terminal's master and slave, the slave sized
// cols × 40.
func openPTY(t *testing.T, cols uint16) (*os.File, *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: cols}); err != nil {
		t.Fatal(err)
	}
	return master, slave
}

// A merge on a 100-column terminal redraws one line in place with the
// percentage, the bytes, the speed and the ETA, each draw within the width.
func TestCLIProgressOnTerminal(t *testing.T) {
	if testing.Short() {
		t.Skip("a merge slow enough to be watched")
	}
	dir := t.TempDir()
	mustRun(t, dir, "synth", "--params", "50M", "--models", "2", "--seed", "2", "in")
	master, slave := openPTY(t, 100)
	defer master.Close()
	cmd := exec.Command(bin, "merge", "--kernel", "go", "--threads", "1", "--two-pass",
		"--base", "in/base", "--model", "in/ft1", "--model", "in/ft2", "--density", "0.2", "out")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, slave, slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var screen bytes.Buffer
	done := make(chan struct{})
	go func() { io.Copy(&screen, master); close(done) }() // ends with EIO once the child exits
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v\n%s", err, screen.String())
	}
	master.SetReadDeadline(time.Now().Add(5 * time.Second))
	<-done
	out := strings.ReplaceAll(screen.String(), "\r\n", "\n")
	var draws []string
	for _, line := range strings.Split(out, "\n") {
		for _, d := range strings.Split(line, "\r") {
			if d = strings.TrimSuffix(d, "\x1b[K"); strings.HasPrefix(d, "[") {
				draws = append(draws, d)
			}
		}
	}
	var midway int
	for _, d := range draws {
		if len([]rune(d)) > 99 {
			t.Errorf("a draw of %d columns on a 100-column terminal: %q", len([]rune(d)), d)
		}
		m := figures.FindStringSubmatch(d)
		if m == nil {
			t.Errorf("a draw without the figures: %q", d)
			continue
		}
		if strings.HasPrefix(m[5], "ETA") && m[4] != "0" && m[4] != "100" && !strings.Contains(d, "ETA -") {
			midway++
		}
	}
	if midway == 0 {
		t.Errorf("no draw showed a pass under way with its ETA:\n%q", out)
	}
	if !strings.Contains(out, "Merged 2 model(s)") || !strings.Contains(out, "peak") {
		t.Errorf("no summary:\n%s", out)
	}
	t.Logf("%d draws, %d midway; the last: %q", len(draws), midway, draws[len(draws)-1])
}

// Off a terminal, progress is a line per pass (and every few seconds), and
// --quiet prints nothing at all.
func TestCLIProgressQuietAndPipes(t *testing.T) {
	dir := workDir(t)
	args := []string{"merge", "--force", "--base", "demo/base", "--model", "demo/ft1", "--model", "demo/ft2", "--density", "0.3", "out"}
	stdout, stderr, code := tiesmm(t, dir, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if strings.Contains(stderr, "\r") || len(lines) == 0 || figures.FindString(lines[len(lines)-1]) == "" {
		t.Errorf("progress in a pipe is not plain lines with the figures:\n%q", stderr)
	}
	if !strings.Contains(stdout, "Merged 2 model(s) into out with ties (paper preset)") {
		t.Errorf("summary:\n%s", stdout)
	}
	stdout, stderr, code = tiesmm(t, dir, append([]string{"merge", "--quiet"}, args[1:]...)...)
	if code != 0 || stdout != "" || stderr != "" {
		t.Errorf("--quiet: exit %d, stdout %q, stderr %q: want 0 and nothing", code, stdout, stderr)
	}
}

func TestCLIJSONSummary(t *testing.T) {
	dir := workDir(t)
	stdout, stderr, code := tiesmm(t, dir, "merge", "--json", "--force", "--preset", "mergekit", "--base", "demo/base",
		"--model", "demo/ft1", "--model", "demo/ft2", "--density", "0.3", "out")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got struct {
		Method, Preset string
		Models         []struct {
			Path        string
			Kept, Asked *uint64
			Values      int64
		}
		InputBytes  int64   `json:"input_bytes"`
		OutputBytes int64   `json:"output_bytes"`
		Seconds     float64 `json:"seconds"`
		PeakRSS     int64   `json:"peak_rss_bytes"`
		Passes      []string
		Warnings    []map[string]string
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(stdout), &raw); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"method", "preset", "models", "input_bytes", "output_bytes", "seconds", "peak_rss_bytes", "passes", "warnings"} {
		if _, ok := raw[key]; !ok {
			t.Errorf("no %q in %s", key, stdout)
		}
	}
	if got.Method != "ties" || got.Preset != "mergekit" || len(got.Models) != 2 || got.Models[1].Path != "demo/ft2" {
		t.Errorf("method, preset or models wrong: %+v", got)
	}
	for _, m := range got.Models {
		if m.Kept == nil || m.Asked == nil || *m.Kept != *m.Asked || *m.Kept == 0 || *m.Kept >= uint64(m.Values) {
			t.Errorf("model %s: kept %v of %d, asked %v", m.Path, m.Kept, m.Values, m.Asked)
		}
	}
	st, err := os.Stat(filepath.Join(dir, "out", "model.safetensors"))
	if err != nil || got.OutputBytes <= 0 || got.OutputBytes > st.Size() || got.InputBytes < 3*got.OutputBytes || got.PeakRSS <= 0 || got.Seconds <= 0 || len(got.Passes) == 0 || got.Warnings == nil {
		t.Errorf("figures wrong: %+v (output file: %v)", got, err)
	}
}

// Exit codes: 2 for the command line, 1 for the inputs.
func TestCLIExitCodes(t *testing.T) {
	dir := workDir(t)
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"merge"}, 2},
		{[]string{"merge", "--no-such-flag", "out"}, 2},
		{[]string{"merge", "--max-memory", "lots", "--base", "demo/base", "--model", "demo/ft1", "out"}, 2},
		{[]string{"merge", "--density", "x", "--base", "demo/base", "--model", "demo/ft1", "out"}, 2},
		{[]string{"merge", "a.yml", "b", "c"}, 2},
		{[]string{"merge", "--base", "demo/nothing", "--model", "demo/ft1", "out"}, 1},
		{[]string{"merge", "--base", "demo/base", "--model", "demo/ft1", "--density", "2", "out"}, 1},
		{[]string{"--version"}, 0},
	} {
		_, stderr, code := tiesmm(t, dir, c.args...)
		if code != c.code {
			t.Errorf("tiesmm %s: exit %d, want %d (%s)", strings.Join(c.args, " "), code, c.code, stderr)
		}
	}
	if out := mustRun(t, dir, "--version"); !strings.HasPrefix(out, "tiesmm ") || !strings.Contains(out, "go1.") {
		t.Errorf("--version: %q", out)
	}
}

func TestCLICompletion(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "tiesmm.bash")
	writeFile(t, script, mustRun(t, dir, "completion", "bash"))
	complete := func(words ...string) string {
		cmd := exec.Command("bash", "-c", `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($#-1)); _tiesmm; echo "${COMPREPLY[*]}"`, "bash", script)
		cmd.Args = append(cmd.Args, words...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := complete("tiesmm", "me"); got != "merge" {
		t.Errorf("tiesmm me<TAB>: %q", got)
	}
	if got := complete("tiesmm", "merge", "--max-m"); got != "--max-memory" {
		t.Errorf("tiesmm merge --max-m<TAB>: %q", got)
	}
	if got := complete("tiesmm", "merge", "--preset", "me"); got != "mergekit" {
		t.Errorf("--preset me<TAB>: %q", got)
	}
	if got := complete("tiesmm", "merge", "--method", "dare_"); got != "dare_ties dare_linear" {
		t.Errorf("--method dare_<TAB>: %q", got)
	}
	fish := mustRun(t, dir, "completion", "fish")
	if !strings.Contains(fish, "__fish_seen_subcommand_from merge' -l max-memory -x") || !strings.Contains(fish, "-l base -r -F") {
		t.Errorf("fish script lacks merge's flags:\n%s", fish)
	}
	if zsh := mustRun(t, dir, "completion", "zsh"); !strings.HasPrefix(zsh, "autoload -U +X bashcompinit") {
		t.Errorf("zsh script: %.80q", zsh)
	}
}

// Flags may stand anywhere among the config and the output, as in mergekit.
func TestCLIFlagsBetweenArguments(t *testing.T) {
	dir := workDir(t)
	cfg := filepath.Join(examplesDir(t), "ties.yml")
	if _, stderr, code := tiesmm(t, dir, "merge", cfg, "--quiet", "--force", "out"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	files(t, filepath.Join(dir, "out"))
}
