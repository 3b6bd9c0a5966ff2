package mmapio

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
)

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*131 + i>>8)
	}
	return b
}

func TestMapFile(t *testing.T) {
	d := t.TempDir()
	want := pattern(3*os.Getpagesize() + 100)
	p := writeRaw(t, d, "f", want)
	m, err := MapFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Data(), want) || m.Path() != p {
		t.Fatal("mapped data differs from the file")
	}
	if err := m.Close(); err != nil || m.Data() != nil || m.Close() != nil {
		t.Fatal("close")
	}

	empty := writeRaw(t, d, "empty", nil)
	if _, err := MapFile(empty); err == nil || !strings.Contains(err.Error(), empty+": empty file") {
		t.Errorf("empty file: %v", err)
	}
	if _, err := MapFile(d); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
	if _, err := MapFile(filepath.Join(d, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
}

// Advice over any range, however odd, never crashes and never changes the data.
func TestAdviceRanges(t *testing.T) {
	pg := int64(os.Getpagesize())
	want := pattern(int(5*pg + 17))
	m, err := MapFile(writeRaw(t, t.TempDir(), "f", want))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	size := int64(len(want))
	for _, r := range [][2]int64{
		{0, size}, {-pg, 3 * pg}, {1, 1}, {pg - 1, pg + 2}, {size - 1, 1 << 62}, {size, 10}, {size + 5, 10},
		{-1 << 62, 1 << 62}, {1 << 62, 1 << 62}, {0, 0}, {3, -5}, {pg, 1<<63 - 1},
	} {
		m.WillNeed(r[0], r[1])
		m.DontNeed(r[0], r[1])
		if !bytes.Equal(m.Data(), want) {
			t.Fatalf("data changed after advice on %v", r)
		}
	}
}

// clamp and the page rounding, hand-worked for 4 KiB pages.
func TestAdviceRounding(t *testing.T) {
	m := &Mapping{mm: make([]byte, 10000), page: 4096}
	for _, c := range []struct{ off, n, lo, hi int64 }{
		{0, 10000, 0, 10000}, {-5, 100, 0, 95}, {9000, 5000, 9000, 10000}, {10000, 1, 0, 0}, {5, 0, 0, 0}, {5, 1<<63 - 1, 5, 10000},
	} {
		if lo, hi := m.clamp(c.off, c.n); lo != c.lo || hi != c.hi {
			t.Errorf("clamp(%d,%d) = %d,%d want %d,%d", c.off, c.n, lo, hi, c.lo, c.hi)
		}
	}
}

func TestGuardFault(t *testing.T) {
	pg := os.Getpagesize()
	p := writeRaw(t, t.TempDir(), "f", pattern(4*pg))
	m, err := MapFile(p)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := os.Truncate(p, int64(pg)); err != nil {
		t.Fatal(err)
	}
	data := m.Data()
	var sum byte
	func() {
		defer func() {
			// qemu-user delivers SIGBUS without its address, which the runtime
			// takes for a nil dereference; a real kernel gives the address.
			if r := recover(); r != nil {
				if re, ok := r.(runtime.Error); ok && strings.Contains(re.Error(), "nil pointer") {
					t.Skip("fault reported without an address (qemu-user): cannot test here")
				}
				panic(r)
			}
		}()
		err = GuardFile(p, func() error {
			for i := 0; i < len(data); i += 64 {
				sum += data[i]
			}
			return nil
		})
	}()
	if !errors.Is(err, ErrFault) || !strings.Contains(err.Error(), p+": mapped file truncated or unreadable") {
		t.Fatalf("reading past the truncation: %v", err)
	}
	if debug.SetPanicOnFault(false) {
		t.Fatal("Guard left panic-on-fault set")
	}
	// The part still in the file reads fine.
	if err := Guard(func() error { sum += data[pg-1]; return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestGuardPassesThrough(t *testing.T) {
	sentinel := errors.New("x")
	if err := Guard(func() error { return sentinel }); err != sentinel {
		t.Fatalf("error not returned as is: %v", err)
	}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recovered %v", r)
			}
		}()
		Guard(func() error { panic("boom") })
		t.Fatal("no panic")
	}()
	func() {
		defer func() {
			if _, ok := recover().(runtime.Error); !ok {
				t.Fatal("nil dereference was not re-panicked as a runtime error")
			}
		}()
		var p *int
		Guard(func() error { return errors.New(string(rune(*p))) })
	}()
}

func TestPool(t *testing.T) {
	d := t.TempDir()
	a := writeRaw(t, d, "a.safetensors", fileBytes(hdrA, 8))
	writeRaw(t, d, "b.safetensors", fileBytes(hdrB, 8))
	md, err := OpenModel(d)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPool()
	p.Register(md)
	m1, err := p.Acquire(a)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := p.Acquire(a)
	if err != nil || m1 != m2 {
		t.Fatalf("second acquire: %v, same mapping %v", err, m1 == m2)
	}
	if err := p.Release(a); err != nil || m1.Data() == nil {
		t.Fatalf("unmapped with a user left: %v", err)
	}
	if err := p.Release(a); err != nil || m1.Data() != nil {
		t.Fatalf("still mapped with no user: %v", err)
	}
	if err := p.Release(a); err == nil {
		t.Fatal("release without acquire accepted")
	}
	// A shard that changed size since OpenModel is refused.
	b := filepath.Join(d, "b.safetensors")
	os.WriteFile(b, fileBytes(hdrB, 9), 0o644)
	if _, err := p.Acquire(b); err == nil || !strings.Contains(err.Error(), b+": file changed size") {
		t.Fatalf("changed file: %v", err)
	}
	// Concurrent users share one mapping; Close unmaps what is left.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				m, err := p.Acquire(a)
				if err != nil {
					t.Error(err)
					return
				}
				if m.Data()[0] != byte(len(hdrA)) {
					t.Error("bad data")
				}
				if err := p.Release(a); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	m3, _ := p.Acquire(a)
	if err := p.Close(); err != nil || m3.Data() != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := p.Acquire(a); err == nil {
		t.Fatal("acquire after close")
	}
}
