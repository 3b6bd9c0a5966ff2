package main

import (
	"crypto/sha256"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// digests hashes every file of a model directory but tiesmm_config.yml;
// hashes keep the test process small (a child's rusage counts the pages of
// the process it was spawned from).
func digests(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][32]byte{}
	for _, e := range ents {
		if e.Name() == "tiesmm_config.yml" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = sha256.Sum256(b)
	}
	return out
}

// sameModel reports whether dir holds exactly the files of want.
func sameModel(t *testing.T, dir string, want map[string][32]byte) bool {
	t.Helper()
	return maps.Equal(digests(t, dir), want)
}

// Merges killed with SIGKILL at random points leave the destination absent,
// the old model whole, or the new model complete, and nothing else but
// hidden partial folders, which the next merge removes.
func TestCLIKilledMerges(t *testing.T) {
	if testing.Short() {
		t.Skip("runs and kills a few dozen merges")
	}
	dir := t.TempDir()
	mustRun(t, dir, "synth", "--params", "20M", "--models", "2", "--seed", "5", "in")
	merge := func(density, out string) []string {
		return []string{"merge", "--quiet", "--force", "--base", "in/base", "--model", "in/ft1", "--model", "in/ft2",
			"--density", density, "--threads", "2", out}
	}
	start := time.Now()
	mustRun(t, dir, merge("0.2", "ref")...)
	took := time.Since(start)
	mustRun(t, dir, merge("0.5", "old")...)
	ref, old := digests(t, filepath.Join(dir, "ref")), digests(t, filepath.Join(dir, "old"))

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d; an unkilled merge took %v", seed, took)
	rng := rand.New(rand.NewPCG(seed, 7))
	var kills, absent, olds, news int
	for trial := range 24 {
		dest := filepath.Join(dir, "out")
		replacing := trial%2 == 1
		os.RemoveAll(dest)
		if replacing {
			if err := os.CopyFS(dest, os.DirFS(filepath.Join(dir, "old"))); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(bin, merge("0.2", "out")...)
		cmd.Dir = dir
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(took) * 5 / 4)))
		if cmd.Process.Kill() == nil {
			kills++
		}
		cmd.Wait()

		_, err := os.Stat(dest)
		switch {
		case os.IsNotExist(err) && !replacing:
			absent++
		case err != nil:
			t.Fatalf("trial %d: %s: %v (replacing an old model: %v)", trial, dest, err, replacing)
		case replacing && sameModel(t, dest, old):
			olds++
		case sameModel(t, dest, ref):
			news++
		default:
			t.Fatalf("trial %d: %s is neither absent, the old model nor the complete new one", trial, dest)
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			name := e.Name()
			if !slices.Contains([]string{"in", "ref", "old", "out"}, name) && !strings.HasPrefix(name, ".out.tiesmm-partial-") {
				t.Fatalf("trial %d: %s left beside the output", trial, name)
			}
		}
	}
	t.Logf("%d kills: destination absent %d, old model %d, new model %d times", kills, absent, olds, news)

	stdout := mustRun(t, dir, merge("0.2", "out")...)
	if !sameModel(t, filepath.Join(dir, "out"), ref) {
		t.Fatal("the merge after the kills differs from the reference")
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".out.tiesmm-partial-*"))
	if len(leftovers) > 0 {
		t.Fatalf("partial folders survived the next merge: %v\n%s", leftovers, stdout)
	}
}
