package merge

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tiesmm/tiesmm/mmapio"
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

// A shard truncated or grown after the plan read its header fails the merge
// with the file and a tensor named, and nothing left at the destination.
func TestErrShardChangedSize(t *testing.T) {
	for _, c := range []struct {
		name  string
		delta int64
	}{{"truncated", -4}, {"grown", 8}} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			base, ft1, ft2 := f.model(t, "base", 0), f.model(t, "ft1", 1), f.model(t, "ft2", 2)
			m, _, _ := NewMethod("ties", "mergekit")
			p, err := NewPlan(Options{Base: base, Models: []string{ft1, ft2}, Out: f.out, Threads: 2}, m, tiesParams(0.5))
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(shard(ft1))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(shard(ft1), st.Size()+c.delta); err != nil {
				t.Fatal(err)
			}
			_, err = Run(context.Background(), p, nil, nil)
			t.Log(err)
			f.expectErr(t, err, shard(ft1), "changed size since its header was read", `tensor "w1"|tensor "w2"`)
		})
	}
}

// A shard truncated while its mapping is read: the fault is an error naming
// the file and the tensor, not a crash.
func TestErrShardTruncatedWhileMapped(t *testing.T) {
	r, bs, path := sampledRuns(t, 4096) // contiguous blocks: read from the mapping
	j := &r.p.Jobs[0]
	var once sync.Once
	var sum byte
	err := r.parallel(context.Background(), bs, func(w *worker, b block) error {
		data := r.src(w, j.Base, j.BaseDT, b.start, b.n)
		once.Do(func() {
			if err := os.Truncate(path, j.Base.Offset); err != nil {
				t.Error(err)
			}
		})
		for i := 0; i < len(data); i += 64 {
			sum += data[i]
		}
		return nil
	})
	if err != nil && strings.Contains(err.Error(), "fault at address 0x0") {
		t.Skip("faults reported without an address (qemu-user): cannot tell the file")
	}
	if !errors.Is(err, mmapio.ErrFault) {
		t.Fatalf("got %v, want a fault", err)
	}
	t.Log(err)
	for _, w := range []string{path + ": mapped file truncated or unreadable", `tensor "` + j.Name + `"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q: %v", w, err)
		}
	}
}
