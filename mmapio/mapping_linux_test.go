package mmapio

import (
	"bytes"
	"encoding/binary"
	"os"
	"runtime"
	"testing"
	"unsafe"
)

// mapped reports, per page of b, whether it is in this process's page tables
// (counted in its RSS), from /proc/self/pagemap bit 63. mincore would not do: it
// tells page-cache residency, which DONTNEED on a file mapping leaves alone.
func mapped(t *testing.T, b []byte, pg int) []bool {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Skipf("no pagemap: %v", err)
	}
	defer f.Close()
	n := (len(b) + pg - 1) / pg
	buf := make([]byte, 8*n)
	if _, err := f.ReadAt(buf, int64(uintptr(unsafe.Pointer(&b[0]))/uintptr(pg))*8); err != nil {
		t.Skipf("pagemap: %v", err)
	}
	r := make([]bool, n)
	for i := range r {
		r[i] = binary.LittleEndian.Uint64(buf[8*i:])>>63 != 0
	}
	return r
}

// DontNeed drops exactly the pages lying wholly inside the range from this process,
// and the data reads back unchanged.
func TestDontNeedReleases(t *testing.T) {
	pg := os.Getpagesize()
	want := pattern(8 * pg)
	m, err := MapFile(writeRaw(t, t.TempDir(), "f", want))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	data := m.Data()
	sum := touch(data, pg) // fault every page in
	for i, r := range mapped(t, data, pg) {
		if !r {
			t.Skipf("page %d not present after reading it: pagemap cannot tell here", i)
		}
	}
	// [pg+1, 5pg+1): pages 2, 3, 4 are inside; 1 and 5 are only touched.
	m.DontNeed(int64(pg+1), int64(4*pg))
	after := mapped(t, data, pg)
	wantRes := []bool{true, true, false, false, false, true, true, true}
	for i := range after {
		if after[i] != wantRes[i] {
			t.Fatalf("pages present after DontNeed %v, want %v", after, wantRes)
		}
	}
	if !bytes.Equal(data, want) {
		t.Fatal("data changed")
	}
	// The last, partial page counts as whole at the end of the file.
	m2, err := MapFile(writeRaw(t, t.TempDir(), "g", want[:2*pg+10]))
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	d2 := m2.Data()
	sum += touch(d2, pg)
	m2.DontNeed(int64(pg), int64(pg+10))
	if got := mapped(t, d2, pg); !got[0] || got[1] || got[2] {
		t.Fatalf("pages present after DontNeed to the end %v, want [true false false]", got)
	}
	m.WillNeed(int64(2*pg), int64(pg)) // advice only: harmless
	runtime.KeepAlive(sum)
	if !bytes.Equal(d2, want[:2*pg+10]) {
		t.Fatal("data changed")
	}
}

// touch reads one byte of every page; its result is used so the loads stay.
//
//go:noinline
func touch(b []byte, pg int) byte {
	var s byte
	for i := 0; i < len(b); i += pg {
		s += b[i]
	}
	return s
}
