package merge

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// within runs f and fails the test if it has not returned in a few seconds,
// so that a regression blocking in open fails instead of hanging.
func within(t *testing.T, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("still blocked after 10s")
		return nil
	}
}

// Files of the base that the merge reads or copies (config.json, the
// tokenizer's) are refused when they are not regular files, by the plan,
// without blocking; so are shards.
func TestErrNotRegularInputs(t *testing.T) {
	for _, c := range []struct {
		name  string
		spoil func(t *testing.T, base, ft2 string)
		wants []string
	}{
		{"config.json FIFO", func(t *testing.T, base, _ string) {
			os.Remove(filepath.Join(base, "config.json"))
			mkfifo(t, filepath.Join(base, "config.json"))
		}, []string{"config.json is a named pipe (FIFO), not a regular file"}},
		{"tokenizer.json FIFO", func(t *testing.T, base, _ string) {
			mkfifo(t, filepath.Join(base, "tokenizer.json"))
		}, []string{"tokenizer.json is a named pipe (FIFO), not a regular file"}},
		{"tokenizer.model socket", func(t *testing.T, base, _ string) {
			l, err := net.Listen("unix", filepath.Join(base, "tokenizer.model"))
			if err != nil {
				t.Skip(err)
			}
			t.Cleanup(func() { l.Close() })
		}, []string{"tokenizer.model is a socket"}},
		{"vocab.json /dev/null", func(t *testing.T, base, _ string) {
			if err := os.Symlink(os.DevNull, filepath.Join(base, "vocab.json")); err != nil {
				t.Fatal(err)
			}
		}, []string{"vocab.json is a character device"}},
		{"shard FIFO", func(t *testing.T, _, ft2 string) {
			os.Remove(shard(ft2))
			mkfifo(t, shard(ft2))
		}, []string{"model 2", "model.safetensors is a named pipe (FIFO)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := shortFixture(t)
			base, ft1, ft2 := f.model(t, "base", 0), f.model(t, "ft1", 1), f.model(t, "ft2", 2)
			c.spoil(t, base, ft2)
			err := within(t, func() error { return f.merge(base, []string{ft1, ft2}, nil, nil) })
			f.expectErr(t, err, c.wants...)
		})
	}
}

// A FIFO that takes a tokenizer file's place after the plan checked it
// fails the merge when the files are copied, rather than blocking.
func TestErrExtraReplacedByFIFO(t *testing.T) {
	f := shortFixture(t)
	base, ft1, ft2 := f.model(t, "base", 0), f.model(t, "ft1", 1), f.model(t, "ft2", 2)
	tok := filepath.Join(base, "tokenizer.json")
	if err := os.WriteFile(tok, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, _, _ := NewMethod("ties", "mergekit")
	p, err := NewPlan(Options{Base: base, Models: []string{ft1, ft2}, Out: f.out, Threads: 2}, m, tiesParams(0.5))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(tok)
	mkfifo(t, tok)
	err = within(t, func() error { _, err := Run(context.Background(), p, nil, nil); return err })
	f.expectErr(t, err, "tokenizer.json is a named pipe (FIFO)")
}

func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
}

// shortFixture is newFixture under a short directory: a unix socket's path
// is limited to about a hundred bytes.
func shortFixture(t *testing.T) errFixture {
	t.Helper()
	dir, err := os.MkdirTemp("", "in")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := errFixture{root: dir, in: filepath.Join(dir, "in"), dst: filepath.Join(dir, "dst")}
	f.out = filepath.Join(f.dst, "out")
	for _, d := range []string{f.in, f.dst} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}
