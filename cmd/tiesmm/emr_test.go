package main

import (
	"crypto/sha256"
	"encoding/json"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// emrFlags merges the demo set with emr in the flag form.
func emrFlags(extra ...string) []string {
	return append([]string{"merge", "--base", "demo/base", "--model", "demo/ft1", "--model", "demo/ft2", "--method", "emr"}, extra...)
}

// treeDigests hashes every file under dir by its path inside it, but
// tiesmm_config.yml.
func treeDigests(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "tiesmm_config.yml" {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = sha256.Sum256(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// An EMR merge from flags: --dry-run shows its folders, the summary and
// --json its rescalers, emr-apply writes what --materialize wrote, a base
// of other headers is refused naming both fingerprints, and --force
// replaces an EMR output.
func TestCLIEMR(t *testing.T) {
	dir := workDir(t)
	dry := mustRun(t, dir, emrFlags("--dry-run", "--materialize", "ft2", "out")...)
	if !strings.Contains(dry, "emr:      tasks ft1, ft2; rescale mean") || !strings.Contains(dry, "task-ft2/") {
		t.Errorf("--dry-run:\n%s", dry)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); !os.IsNotExist(err) {
		t.Fatalf("--dry-run wrote the output: %v", err)
	}
	stdout := mustRun(t, dir, emrFlags("--json", "--quiet", "--materialize", "ft2", "out")...)
	var sum struct {
		Tasks []struct {
			Name     string  `json:"name"`
			Rescaler float64 `json:"rescaler"`
		} `json:"emr_tasks"`
	}
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil || len(sum.Tasks) != 2 || sum.Tasks[1].Name != "ft2" || sum.Tasks[1].Rescaler <= 0 {
		t.Fatalf("--json: %v\n%s", err, stdout)
	}
	for _, f := range []string{"emr.json", "unified/model.safetensors", "masks/model.safetensors", "task-ft2/model.safetensors", "task-ft2/config.json", "tiesmm_config.yml"} {
		if _, err := os.Stat(filepath.Join(dir, "out", f)); err != nil {
			t.Errorf("no %s: %v", f, err)
		}
	}
	mustRun(t, dir, "emr-apply", "--quiet", "out", "--task", "1", "--threads", "1", "applied")
	sameFiles(t, "emr-apply against --materialize", files(t, filepath.Join(dir, "out", "task-ft2")), files(t, filepath.Join(dir, "applied")))

	mustRun(t, dir, "synth", "--params", "1M", "--models", "1", "other")
	_, errOut, code := tiesmm(t, dir, "emr-apply", "out", "--task", "ft1", "--base", "other/base", "refused")
	if code != 1 || !strings.Contains(errOut, "other/base has header fingerprint") || !strings.Contains(errOut, "was merged from demo/base") {
		t.Errorf("another base: exit %d, %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "refused")); !os.IsNotExist(err) {
		t.Errorf("a refused emr-apply left its output: %v", err)
	}

	// The base as a task: its τ is zero, so is its rescaler, with a warning.
	_, errOut, code = tiesmm(t, dir, emrFlags("--quiet", "--force", "--model", "demo/base", "out")...)
	if code != 0 || !strings.Contains(errOut, "emr: task base keeps no element of the unified task vector") {
		t.Errorf("a zero task vector over the EMR output with --force: exit %d, %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "task-ft2")); !os.IsNotExist(err) {
		t.Errorf("--force left the old output's task folder: %v", err)
	}
}

// EMR merges killed with SIGKILL at random points leave the destination
// absent or complete (emr.json, U, masks and the task written), and
// nothing beside it but hidden partial folders.
func TestCLIKilledEMR(t *testing.T) {
	if testing.Short() {
		t.Skip("runs and kills a dozen merges")
	}
	dir := t.TempDir()
	mustRun(t, dir, "synth", "--params", "20M", "--models", "2", "--seed", "5", "in")
	args := []string{"merge", "--quiet", "--base", "in/base", "--model", "in/ft1", "--model", "in/ft2", "--method", "emr", "--materialize", "all", "--threads", "2"}
	start := time.Now()
	mustRun(t, dir, append(args, "ref")...)
	took := time.Since(start)
	ref := treeDigests(t, filepath.Join(dir, "ref"))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 23))
	for trial := range 12 {
		dest := filepath.Join(dir, "out")
		os.RemoveAll(dest)
		cmd := exec.Command(bin, append(args, "out")...)
		cmd.Dir = dir
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(took) * 5 / 4)))
		cmd.Process.Kill()
		cmd.Wait()
		if _, err := os.Stat(dest); err == nil {
			got := treeDigests(t, dest)
			if len(got) != len(ref) {
				t.Fatalf("trial %d: %s holds %d files, a complete output %d", trial, dest, len(got), len(ref))
			}
			for name, d := range ref {
				if got[name] != d {
					t.Fatalf("trial %d: %s differs from the complete output", trial, name)
				}
			}
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if name := e.Name(); name != "in" && name != "ref" && name != "out" && !strings.HasPrefix(name, ".out.tiesmm-partial-") {
				t.Fatalf("trial %d: %s left beside the output", trial, name)
			}
		}
	}
}
