package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runWithin runs the binary in dir, killing it after d: a regression that
// blocks fails the test instead of hanging it.
func runWithin(t *testing.T, d time.Duration, dir string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("tiesmm %s: still running after %v, killed\nstderr: %s", strings.Join(args, " "), d, stderr.String())
	}
	var exit *exec.ExitError
	code := 0
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// Inputs that are not regular files fail the merge, --dry-run too, with the
// path and its kind named, and nothing blocks.
func TestCLINotRegularInputs(t *testing.T) {
	flags := []string{"merge", "--quiet", "--base", "in/base", "--model", "in/ft1", "--model", "in/ft2"}
	fifo := func(t *testing.T, p string) {
		os.Remove(p)
		if err := syscall.Mkfifo(p, 0o644); err != nil {
			t.Skipf("mkfifo: %v", err)
		}
	}
	for _, c := range []struct {
		name  string
		spoil func(t *testing.T, in string)
		args  []string
		wants []string
	}{
		{"shard-FIFO", func(t *testing.T, in string) {
			fifo(t, shardOf(filepath.Join(in, "ft2")))
		}, nil, []string{"in/ft2/model.safetensors is a named pipe (FIFO), not a regular file"}},
		{"shard-directory", func(t *testing.T, in string) {
			os.Remove(shardOf(filepath.Join(in, "ft1")))
			os.Mkdir(shardOf(filepath.Join(in, "ft1")), 0o755)
		}, nil, []string{"in/ft1/model.safetensors is a directory, not a regular file"}},
		{"shard-socket", func(t *testing.T, in string) {
			os.Remove(shardOf(filepath.Join(in, "ft1")))
			l, err := net.Listen("unix", shardOf(filepath.Join(in, "ft1")))
			if err != nil {
				t.Skip(err)
			}
			t.Cleanup(func() { l.Close() })
		}, nil, []string{"in/ft1/model.safetensors is a socket, not a regular file"}},
		{"shard-dev-null", func(t *testing.T, in string) {
			os.Remove(shardOf(filepath.Join(in, "base")))
			if err := os.Symlink(os.DevNull, shardOf(filepath.Join(in, "base"))); err != nil {
				t.Fatal(err)
			}
		}, nil, []string{"in/base/model.safetensors is a character device, not a regular file"}},
		{"index-names-FIFO", func(t *testing.T, in string) {
			dir := filepath.Join(in, "ft2")
			os.Remove(shardOf(dir))
			writeST(t, filepath.Join(dir, "model-00001-of-00002.safetensors"), tiny(2)[:1], nil)
			fifo(t, filepath.Join(dir, "model-00002-of-00002.safetensors"))
			writeFile(t, filepath.Join(dir, "model.safetensors.index.json"), `{"weight_map":{"model.layers.0.w1":"model-00001-of-00002.safetensors","model.layers.0.w2":"model-00002-of-00002.safetensors"}}`)
		}, nil, []string{"in/ft2/model-00002-of-00002.safetensors is a named pipe (FIFO)"}},
		{"tokenizer-FIFO", func(t *testing.T, in string) {
			fifo(t, filepath.Join(in, "base", "tokenizer.json"))
		}, nil, []string{"in/base/tokenizer.json is a named pipe (FIFO)"}},
		{"config-FIFO", func(t *testing.T, in string) {
			fifo(t, filepath.Join(in, "cfg.yml"))
		}, []string{"merge", "--quiet", "in/cfg.yml", "dst/out"}, []string{"in/cfg.yml is a named pipe (FIFO)"}},
	} {
		for _, dry := range []bool{true, false} {
			name := c.name
			if dry {
				name += "/dry-run"
			}
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				in := filepath.Join(dir, "in")
				for i, name := range []string{"base", "ft1", "ft2"} {
					writeST(t, shardOf(filepath.Join(in, name)), tiny(float32(i)), nil)
				}
				if err := os.MkdirAll(filepath.Join(dir, "dst"), 0o755); err != nil {
					t.Fatal(err)
				}
				c.spoil(t, in)
				args := c.args
				if args == nil {
					args = append(append([]string(nil), flags...), "dst/out")
				}
				if dry {
					args = append([]string{args[0], "--dry-run"}, args[1:]...)
				}
				stdout, stderr, code := runWithin(t, 20*time.Second, dir, args...)
				if code != 1 {
					t.Fatalf("exit %d, want 1\nstdout: %s\nstderr: %s", code, stdout, stderr)
				}
				for _, w := range c.wants {
					if !strings.Contains(stderr, w) {
						t.Errorf("stderr does not say %q:\n%s", w, stderr)
					}
				}
				if ents, _ := os.ReadDir(filepath.Join(dir, "dst")); len(ents) > 0 {
					t.Errorf("dst holds %v after a failed merge", ents)
				}
			})
		}
	}
}
