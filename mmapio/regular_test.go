package mmapio

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// within runs f and fails the test if it has not returned in a few seconds:
// a regression that blocks in open fails instead of hanging the suite.
func within(t *testing.T, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("still blocked after 5s")
		return nil
	}
}

func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
}

// listenUnix leaves a unix socket at path while the test runs.
func listenUnix(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Skipf("unix socket: %v", err)
	}
	t.Cleanup(func() { l.Close() })
}

// Inputs that are not regular files are refused by name and kind, and
// nothing blocks in open.
func TestOpenModelNotRegular(t *testing.T) {
	if _, err := os.Stat(os.DevNull); err != nil {
		t.Skip(err)
	}
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, d string) string // returns the model path
		want  []string
	}{
		{"FIFO as model.safetensors", func(t *testing.T, d string) string {
			mkfifo(t, filepath.Join(d, "model.safetensors"))
			return d
		}, []string{"model.safetensors is a named pipe (FIFO), not a regular file"}},
		{"FIFO given as the model", func(t *testing.T, d string) string {
			p := filepath.Join(d, "x.safetensors")
			mkfifo(t, p)
			return p
		}, []string{"x.safetensors is a named pipe (FIFO)"}},
		{"FIFO among shards", func(t *testing.T, d string) string {
			writeRaw(t, d, "a.safetensors", fileBytes(hdrA, 8))
			mkfifo(t, filepath.Join(d, "b.safetensors"))
			return d
		}, []string{"b.safetensors is a named pipe (FIFO)"}},
		{"FIFO as the index", func(t *testing.T, d string) string {
			writeRaw(t, d, "s1.safetensors", fileBytes(hdrA, 8))
			mkfifo(t, filepath.Join(d, IndexName))
			return d
		}, []string{"index", IndexName + " is a named pipe (FIFO)"}},
		{"FIFO named in the index", func(t *testing.T, d string) string {
			writeRaw(t, d, "s1.safetensors", fileBytes(hdrA, 8))
			mkfifo(t, filepath.Join(d, "s2.safetensors"))
			writeRaw(t, d, IndexName, []byte(`{"weight_map":{"a0":"s1.safetensors","a1":"s1.safetensors","b":"s2.safetensors"}}`))
			return d
		}, []string{IndexName, "s2.safetensors is a named pipe (FIFO)"}},
		{"directory as model.safetensors", func(t *testing.T, d string) string {
			os.Mkdir(filepath.Join(d, "model.safetensors"), 0o755)
			return d
		}, []string{"model.safetensors is a directory, not a regular file"}},
		{"socket as a shard", func(t *testing.T, d string) string {
			listenUnix(t, filepath.Join(d, "x.safetensors"))
			return d
		}, []string{"x.safetensors is a socket, not a regular file"}},
		{"/dev/null by a symbolic link", func(t *testing.T, d string) string {
			os.Symlink(os.DevNull, filepath.Join(d, "model.safetensors"))
			return d
		}, []string{"model.safetensors is a character device, not a regular file"}},
		{"/dev/null named in the index", func(t *testing.T, d string) string {
			writeRaw(t, d, "s1.safetensors", fileBytes(hdrA, 8))
			os.Symlink(os.DevNull, filepath.Join(d, "s2.safetensors"))
			writeRaw(t, d, IndexName, []byte(`{"weight_map":{"a0":"s1.safetensors","a1":"s1.safetensors","b":"s2.safetensors"}}`))
			return d
		}, []string{IndexName, "s2.safetensors is a character device"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := testDir(t)
			path := c.setup(t, d)
			err := within(t, func() error { _, err := OpenModel(path); return err })
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			var nr *NotRegularError
			if !errors.As(err, &nr) {
				t.Errorf("not a *NotRegularError: %v", err)
			}
		})
	}
}

// testDir is a short temporary directory: a unix socket's path is limited
// to about a hundred bytes.
func testDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "reg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// Each way of opening an input refuses a FIFO without blocking, and the
// descriptor check catches a FIFO that replaced a file after its stat.
func TestOpenRegularFIFO(t *testing.T) {
	d := testDir(t)
	fifo := filepath.Join(d, "fifo")
	mkfifo(t, fifo)
	sock := filepath.Join(d, "sock")
	listenUnix(t, sock)
	for _, c := range []struct {
		name, path, want string
		open             func(string) error
	}{
		{"OpenRegular", fifo, "is a named pipe (FIFO)", func(p string) error { _, err := OpenRegular(p); return err }},
		{"after stat", fifo, "is a named pipe (FIFO)", func(p string) error { _, err := openChecked(p); return err }},
		{"ReadRegular", fifo, "is a named pipe (FIFO)", func(p string) error { _, err := ReadRegular(p); return err }},
		{"MapFile", fifo, "is a named pipe (FIFO), not a regular file: cannot map it", func(p string) error { _, err := MapFile(p); return err }},
		{"Prefetch", fifo, "", func(p string) error { Prefetch(p, 0, 1<<20); return nil }},
		{"ReadRegular socket", sock, "is a socket", func(p string) error { _, err := ReadRegular(p); return err }},
		{"ReadRegular /dev/null", os.DevNull, "is a character device", func(p string) error { _, err := ReadRegular(p); return err }},
		{"after stat /dev/null", os.DevNull, "is a character device", func(p string) error { _, err := openChecked(p); return err }},
		{"ReadRegular directory", d, "is a directory", func(p string) error { _, err := ReadRegular(p); return err }},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := within(t, func() error { return c.open(c.path) })
			if c.want == "" {
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.path+" "+c.want) {
				t.Errorf("got %v, want %q", err, c.path+" "+c.want)
			}
		})
	}
	// A regular file opens, blocking, and reads whole.
	reg := writeRaw(t, d, "reg", []byte("hello"))
	f, err := OpenRegular(reg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b, err := ReadRegular(reg); err != nil || string(b) != "hello" {
		t.Errorf("ReadRegular: %q, %v", b, err)
	}
}
