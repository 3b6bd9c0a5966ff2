package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// watchWriter keeps what is written and closes seen once it holds want.
type watchWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// An interrupt (SIGINT or SIGTERM) mid-merge stops it: exit 130, a message
// saying it was interrupted and what was removed (not "context canceled"),
// and nothing at the destination, the hidden partial directory included.
func TestCLIInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 50M-parameter models")
	}
	dir := t.TempDir()
	mustRun(t, dir, "synth", "--params", "50M", "--models", "2", "--seed", "1", "in")
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dst := filepath.Join(dir, "dst-"+strings.ReplaceAll(sig.String(), " ", "-"))
			if err := os.Mkdir(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			// Slow on purpose: three passes, one worker, the pure-Go kernels.
			cmd := exec.Command(bin, "merge", "--two-pass", "--kernel", "go", "--threads", "1", "--max-memory", "96MiB",
				"--base", "in/base", "--model", "in/ft1", "--model", "in/ft2", filepath.Join(dst, "out"))
			cmd.Dir = dir
			var stdout bytes.Buffer
			stderr := &watchWriter{want: "[1/3] select", seen: make(chan struct{})}
			cmd.Stdout, cmd.Stderr = &stdout, stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-stderr.seen:
			case err := <-done:
				t.Fatalf("the merge ended before any progress: %v\n%s", err, stderr)
			case <-time.After(60 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("no progress after 60s\n%s", stderr)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("still running 30s after %v\n%s", sig, stderr)
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("exit: %v, want code 130 (did the merge finish before the signal?)\nstdout: %s\nstderr: %s", err, &stdout, stderr)
			}
			if code := exit.ExitCode(); code != 130 {
				t.Errorf("exit code %d, want 130\n%s", code, stderr)
			}
			msg := stderr.String()
			if !strings.Contains(msg, "tiesmm: interrupted; removed the partial output "+filepath.Join(dst, ".out.tiesmm-partial-")) {
				t.Errorf("stderr does not say it was interrupted and what was removed:\n%s", msg)
			}
			if strings.Contains(msg, "context canceled") {
				t.Errorf("stderr says \"context canceled\":\n%s", msg)
			}
			if ents, _ := os.ReadDir(dst); len(ents) > 0 {
				t.Errorf("%s holds %v after the interrupt", dst, ents)
			}
		})
	}
}
