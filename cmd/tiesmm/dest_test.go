package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// snapshot reads every file, link and folder under dir (links not followed):
// what a refused merge must leave exactly as it was.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			out[p] = "link " + target
			return err
		case info.IsDir():
			out[p] = "dir"
		default:
			b, err := os.ReadFile(p)
			out[p] = "file " + string(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSnapshot(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, v := range before {
		if w, ok := after[p]; !ok {
			t.Errorf("%s: %s is gone", what, p)
		} else if w != v {
			t.Errorf("%s: %s changed", what, p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s appeared", what, p)
		}
	}
}

// putFile writes path, making its folder first.
func putFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, text)
}

// runEnv runs the binary in dir with extra environment variables.
func runEnv(t *testing.T, dir string, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return stderr.String(), exit.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return stderr.String(), 0
}

// destCase is a place a --force merge must refuse to write to, however it is
// named: set makes it in root (which holds in/base, in/ft1, in/ft2 and an
// empty home/) and returns the output argument and the flags' base path.
type destCase struct {
	name  string
	set   func(t *testing.T, root string) (out, base string)
	wants string
}

// bindBase bind-mounts root/in/base at root/mnt for the test's duration.
func bindBase(t *testing.T, root string) {
	t.Helper()
	mnt := filepath.Join(root, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(filepath.Join(root, "in", "base"), mnt, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("cannot bind-mount here (%v): needs root and a mount namespace that allows it", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
}

func TestCLIDestinationIdentity(t *testing.T) {
	link := func(t *testing.T, target, name string) {
		t.Helper()
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
	}
	cases := []destCase{
		{"empty path", func(t *testing.T, root string) (string, string) { return "", "in/base" }, "path is empty"},
		{"blank path", func(t *testing.T, root string) (string, string) { return "  ", "in/base" }, "path is empty"},
		{"current folder", func(t *testing.T, root string) (string, string) { return ".", "in/base" }, "current folder"},
		{"current folder spelled ./", func(t *testing.T, root string) (string, string) { return "./", "in/base" }, "current folder"},
		{"parent folder", func(t *testing.T, root string) (string, string) { return "..", "in/base" }, "current folder or one above"},
		{"root", func(t *testing.T, root string) (string, string) { return "/", "in/base" }, "root folder"},
		{"home folder", func(t *testing.T, root string) (string, string) {
			putFile(t, filepath.Join(root, "home", "config.json"), "{}") // what a merge writes, still refused
			return filepath.Join(root, "home"), "in/base"
		}, "home folder"},
		{"the base itself", func(t *testing.T, root string) (string, string) { return "in/base", "in/base" }, "is the input"},
		{"a folder holding inputs", func(t *testing.T, root string) (string, string) { return "in", "in/base" }, "holds the input"},
		{"inside the base", func(t *testing.T, root string) (string, string) { return "in/base/merged", "in/base" }, "inside the input"},
		{"a shard named as output", func(t *testing.T, root string) (string, string) {
			return "in/ft1/model.safetensors", "in/base"
		}, "the input"},
		{"symlinked parent into the base", func(t *testing.T, root string) (string, string) {
			link(t, "in/base", filepath.Join(root, "lnk"))
			return "lnk/merged", "in/base"
		}, "inside the input"},
		{"output a symlink to the base", func(t *testing.T, root string) (string, string) {
			link(t, "in/base", filepath.Join(root, "outlink"))
			return "outlink", "in/base"
		}, "is the input"},
		{"output a symlink to a fine-tune", func(t *testing.T, root string) (string, string) {
			link(t, filepath.Join(root, "in", "ft2"), filepath.Join(root, "outlink"))
			return "outlink", "in/base"
		}, "is the input"},
		{"base named through a symlink, the real folder as output", func(t *testing.T, root string) (string, string) {
			link(t, "in/base", filepath.Join(root, "baselink"))
			return "in/base", "baselink"
		}, "is the input"},
		{".. through a symlink", func(t *testing.T, root string) (string, string) {
			if err := os.MkdirAll(filepath.Join(root, "in", "deep", "x"), 0o755); err != nil {
				t.Fatal(err)
			}
			link(t, "in/deep/x", filepath.Join(root, "hop"))
			// The kernel reads hop/../../base as in/base; spelled, it is ../base.
			return "hop/../../base", "in/base"
		}, "is the input"},
		{"a folder with foreign files", func(t *testing.T, root string) (string, string) {
			out := filepath.Join(root, "out")
			putFile(t, filepath.Join(out, "model.safetensors"), "an old merge")
			putFile(t, filepath.Join(out, "notes.txt"), "keep me")
			putFile(t, filepath.Join(out, "runs", "log"), "keep me too")
			return "out", "in/base"
		}, "notes.txt, runs/"},
		{"a bind mount of the base", func(t *testing.T, root string) (string, string) {
			bindBase(t, root)
			return "mnt", "in/base"
		}, "is the input"},
		{"inside a bind mount of the base", func(t *testing.T, root string) (string, string) {
			bindBase(t, root)
			return "mnt/merged", "in/base"
		}, "inside the input"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			writeST(t, shardOf(filepath.Join(root, "in", "base")), tiny(0), nil)
			putFile(t, filepath.Join(root, "in", "base", "config.json"), `{"model_type": "llama"}`)
			writeST(t, shardOf(filepath.Join(root, "in", "ft1")), tiny(1), nil)
			writeST(t, shardOf(filepath.Join(root, "in", "ft2")), tiny(2), nil)
			if err := os.Mkdir(filepath.Join(root, "home"), 0o755); err != nil {
				t.Fatal(err)
			}
			out, base := c.set(t, root)
			before := snapshot(t, root)
			parentBefore := snapshot(t, filepath.Dir(root))
			for _, dry := range []bool{true, false} {
				args := []string{"merge", "--quiet", "--force", "--base", base, "--model", "in/ft1", "--model", "in/ft2", out}
				if dry {
					args = append(args, "--dry-run")
				}
				stderr, code := runEnv(t, root, []string{"HOME=" + filepath.Join(root, "home")}, args...)
				if code != 1 || !strings.Contains(stderr, c.wants) {
					t.Errorf("dry-run %v: exit %d, stderr %q: want 1 and %q", dry, code, stderr, c.wants)
				}
			}
			sameSnapshot(t, "under the test folder", before, snapshot(t, root))
			sameSnapshot(t, "beside the test folder", parentBefore, snapshot(t, filepath.Dir(root)))
		})
	}
}

// --force replaces a folder holding only what a merge writes, and the
// partial folders of killed merges into the same place are removed.
func TestCLIForceReplacesModelAndCleansStale(t *testing.T) {
	dir := workDir(t)
	args := []string{"merge", "--base", "demo/base", "--model", "demo/ft1", "--model", "demo/ft2", "--force", "out"}
	mustRun(t, dir, args...)
	first := files(t, filepath.Join(dir, "out"))
	putFile(t, filepath.Join(dir, "out", "README.md"), "a model card")

	// Two partial folders of merges that were killed, and one whose merge is
	// still running (it holds the lock).
	dead1 := filepath.Join(dir, ".out.tiesmm-partial-111")
	dead2 := filepath.Join(dir, ".out.tiesmm-partial-222")
	live := filepath.Join(dir, ".out.tiesmm-partial-333")
	putFile(t, filepath.Join(dead1, "model.safetensors.partial"), strings.Repeat("x", 1<<20))
	putFile(t, filepath.Join(dead2, "config.json"), "{}")
	putFile(t, filepath.Join(live, "model.safetensors.partial"), "busy")
	other := filepath.Join(dir, ".other.tiesmm-partial-444") // another destination's
	putFile(t, filepath.Join(other, "x"), "not ours")
	lock, err := os.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}

	stdout := mustRun(t, dir, args...)
	if !strings.Contains(stdout, "removed 2 partial output(s)") || !strings.Contains(stdout, "reclaimed") {
		t.Errorf("summary does not say what was cleaned:\n%s", stdout)
	}
	for _, d := range []string{dead1, dead2} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s survived: %v", d, err)
		}
	}
	for _, d := range []string{live, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
	second := files(t, filepath.Join(dir, "out"))
	sameFiles(t, "merged again over the old merge", first, second)
}

// A read-only destination says so, before the free-space check (the
// read-only file system here is also too small for the model).
func TestCLIReadOnlyDestination(t *testing.T) {
	dir := workDir(t)
	ro := filepath.Join(dir, "ro")
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", ro, "tmpfs", unix.MS_RDONLY, "size=64k"); err != nil {
		t.Skipf("cannot mount a read-only tmpfs here (%v): needs root", err)
	}
	t.Cleanup(func() { unix.Unmount(ro, unix.MNT_DETACH) })
	_, stderr, code := tiesmm(t, dir, "merge", "--quiet", "--base", "demo/base", "--model", "demo/ft1", "ro/out")
	if code != 1 || !strings.Contains(stderr, "read-only file system") || strings.Contains(stderr, "free space") {
		t.Fatalf("exit %d, stderr %q: want 1 and a message saying read-only", code, stderr)
	}
}
