package main

import (
	"bytes"
	"encoding/json"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tiesmm/tiesmm/internal/units"
)

func inspectArgs(extra ...string) []string {
	return append([]string{"inspect", "-q", "--base", "demo/base", "--model", "demo/ft1", "--model", "demo/ft2", "--model", "demo/ft3"}, extra...)
}

func TestCLIInspect(t *testing.T) {
	dir := workDir(t)
	out := mustRun(t, dir, inspectArgs()...)
	for _, want := range []string{"3 models (ft1, ft2, ft3)", "whole model", "sign conflict", "top-k conflict", "cosine"} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\nlayer ") + strings.Count(out, "\nmodule ") + strings.Count(out, "\noutside layers"); n != 10 {
		t.Errorf("%d layer or module rows, want 10:\n%s", n, out)
	}

	// --json: the format, and the same numbers whatever the workers and blocks.
	var first string
	for _, extra := range [][]string{{"--threads", "1"}, {"--threads", "2"}, {"--threads", "2", "--block-size", "1024"}, {"--max-memory", "128MiB"}} {
		js := mustRun(t, dir, inspectArgs(append([]string{"--json", "--densities", "0.2,0.1,0.5"}, extra...)...)...)
		if first == "" {
			first = js
			continue
		}
		if js != first {
			t.Errorf("%v: the JSON differs from --threads 1's", extra)
		}
	}
	var v struct {
		Format    string           `json:"format"`
		Density   float64          `json:"density"`
		Densities []float64        `json:"densities"`
		Tensors   []map[string]any `json:"tensors"`
		Model     map[string]any   `json:"model"`
	}
	if err := json.Unmarshal([]byte(first), &v); err != nil {
		t.Fatalf("--json: %v\n%.500s", err, first)
	}
	if v.Format != "tiesmm-inspect" || v.Density != 0.2 || len(v.Densities) != 3 || len(v.Tensors) != 21 || v.Model["sign_conflict_frac"] == nil {
		t.Errorf("--json: %s %v %v %d tensors", v.Format, v.Density, v.Densities, len(v.Tensors))
	}

	// The config form: the example's densities differ per model, so it asks
	// for one, and takes it.
	_, errOut, code := tiesmm(t, dir, "inspect", "-q", filepath.Join(examplesDir(t), "ties.yml"))
	if code != 1 || !strings.Contains(errOut, "--density") {
		t.Errorf("a config with per-model densities: exit %d, %s", code, errOut)
	}
	out = mustRun(t, dir, "inspect", "-q", "--density", "0.3", filepath.Join(examplesDir(t), "ties.yml"))
	if !strings.Contains(out, "density 0.3") {
		t.Errorf("config form:\n%s", out)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"inspect", "--base", "demo/base", "--model", "demo/ft1"}, "twice or more"},
		{inspectArgs("--density", "0.2", "--densities", "0.1,0.2"), "not both"},
		{inspectArgs("--density", "1.5"), "(0, 1]"},
		{inspectArgs("--block-size", "1000"), "multiple of 1024"},
	} {
		_, errOut, code := tiesmm(t, dir, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", c.args, code, errOut, c.want)
		}
	}
}

// TestCLIInspectProgress: progress goes to stderr with the phase word.
func TestCLIInspectProgress(t *testing.T) {
	dir := workDir(t)
	_, errOut, code := tiesmm(t, dir, "inspect", "--base", "demo/base", "--model", "demo/ft1", "--model", "demo/ft2")
	if code != 0 || !strings.Contains(errOut, "[1/1] inspect") || !strings.Contains(errOut, "100%") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

// TestCLIInspectHTML renders the page in headless Chromium: a screenshot
// that is not blank, and the charts in the DOM.
func TestCLIInspectHTML(t *testing.T) {
	dir := workDir(t)
	page := filepath.Join(dir, "inspect.html")
	mustRun(t, dir, inspectArgs("--densities", "0.2,0.05,0.1,0.5,0.9", "--html", page)...)
	src, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"http://", "https://", "<script", "<link"} {
		if bytes.Contains(src, []byte(bad)) {
			t.Errorf("the page holds %q: it must not fetch anything", bad)
		}
	}
	dom := renderPage(t, dir, page)
	for what, want := range map[string]int{
		`<svg class="heatmap"`: 2, `<svg class="norms"`: 1, `<svg class="matrix"`: 2, `<svg class="trim"`: 1,
		"<polyline": 3 + 4, "<rect": 100, "<table": 1,
	} {
		if n := strings.Count(dom, what); n < want {
			t.Errorf("the rendered page has %d %s, want %d or more", n, what, want)
		}
	}
}

// renderPage renders page in headless Chromium, checks that the screenshot
// is not blank, and returns the rendered DOM; it skips the test without
// Chromium.
func renderPage(t *testing.T, dir, page string) string {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install -y chromium): the page is not rendered")
	}
	chrome := func(args ...string) []byte {
		t.Helper()
		args = append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + t.TempDir(), "--window-size=1200,1600"}, args...)
		cmd := exec.Command(chromium, append(args, "file://"+page)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
		}
		return stdout.Bytes()
	}
	shot := filepath.Join(dir, "shot.png")
	chrome("--screenshot=" + shot)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if colours := distinctColours(img); colours < 50 {
		t.Errorf("the screenshot has %d colours: blank?", colours)
	}
	return string(chrome("--dump-dom"))
}

func distinctColours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
		}
	}
	return len(seen)
}

func TestCLIMergeReport(t *testing.T) {
	dir := workDir(t)
	page := filepath.Join(dir, "report.html")
	merge := []string{"merge", "-q", "--base", "demo/base", "--model", "demo/ft1", "--model", "demo/ft2", "--model", "demo/ft3",
		"--preset", "mergekit", "--density", "0.2", "--json"}
	js := mustRun(t, dir, append(merge, "--report", page, "out")...)
	var sum jsonSummary
	if err := json.Unmarshal([]byte(js), &sum); err != nil {
		t.Fatalf("--json: %v", err)
	}
	src, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	text := string(src)
	// The merge's figures, as the page formats them, and the statistics.
	want := []string{`<section class="merge">`, "elected positive", "sign conflicts resolved", "zero sums",
		units.FormatCount(int64(sum.Votes.Positive)), units.FormatCount(int64(sum.Votes.Negative)), units.FormatCount(int64(sum.Votes.Conflicts)),
		"merge&#39;s density 0.2", "Sign conflict by layer and module", "Cosine similarity", "Most conflict"}
	for _, m := range sum.Models {
		want = append(want, units.FormatCount(int64(*m.Kept)), units.FormatCount(int64(*m.Asked)))
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("the page lacks %q", w)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "report.html")); err == nil {
		t.Error("the report was written into the model directory")
	}

	// A path inside the output is refused before the merge starts.
	for _, inside := range []string{"out2/report.html", "out2/sub/../r.html", "out2"} {
		_, errOut, code := tiesmm(t, dir, append(merge, "--report", inside, "out2")...)
		if code != 2 || !strings.Contains(errOut, "inside the output directory") {
			t.Errorf("--report %s: exit %d, want 2:\n%s", inside, code, errOut)
		}
		if _, err := os.Stat(filepath.Join(dir, "out2")); err == nil {
			t.Errorf("--report %s: the merge ran", inside)
		}
	}

	// A method without a density: the statistics at density 1.
	ta := filepath.Join(dir, "ta.html")
	mustRun(t, dir, "merge", "-q", "--method", "task_arithmetic", "--base", "demo/base", "--model", "demo/ft1", "--model", "demo/ft2", "--report", ta, "out3")
	if src, err := os.ReadFile(ta); err != nil || !strings.Contains(string(src), "at density 1") || !strings.Contains(string(src), "Cosine similarity") {
		t.Errorf("task_arithmetic's page: %v\n%.300s", err, src)
	}

	dom := renderPage(t, dir, page)
	for what, want := range map[string]int{`<section class="merge">`: 1, `<table class="kept">`: 1, `<table class="votes">`: 1,
		`<svg class="heatmap"`: 2, `<svg class="matrix"`: 2} {
		if n := strings.Count(dom, what); n < want {
			t.Errorf("the rendered page has %d %s, want %d or more", n, what, want)
		}
	}
}
