package mmapio

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"unsafe"

	"github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"
)

// Mapping is one whole shard mapped read-only. Whole shards are mapped (address space
// is cheap, and offsets stay file offsets); resident memory is bounded by releasing
// pages behind the reader with DontNeed.
type Mapping struct {
	path string
	mm   mmap.MMap
	page int64
}

// MapFile maps the whole file at path read-only. An empty file cannot be mapped and is
// an error, as is a directory.
func MapFile(path string) (*Mapping, error) {
	f, err := OpenRegular(path)
	var nr *NotRegularError
	if errors.As(err, &nr) {
		return nil, fmt.Errorf("%w: cannot map it", err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: cannot open for mapping: %w", path, err)
	}
	defer f.Close() // the mapping outlives the descriptor
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if st.Size() == 0 {
		return nil, fmt.Errorf("%s: empty file, cannot map it", path)
	}
	if int64(int(st.Size())) != st.Size() {
		return nil, fmt.Errorf("%s: %d bytes do not fit this platform's address space", path, st.Size())
	}
	mm, err := mmap.Map(f, mmap.RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", path, err)
	}
	adviseLargeFolios(mm)
	return &Mapping{path: path, mm: mm, page: int64(os.Getpagesize())}, nil
}

// Path is the mapped file.
func (m *Mapping) Path() string { return m.path }

// Data is the whole file; nil after Close. Reading it can fault if the file shrinks:
// read it inside Guard.
func (m *Mapping) Data() []byte { return m.mm }

// WillNeed asks the kernel to read ahead the pages covering [off, off+n), clamped to
// the file. Advice only: errors are ignored.
func (m *Mapping) WillNeed(off, n int64) {
	lo, hi := m.clamp(off, n)
	lo = lo / m.page * m.page                               // down
	hi = min((hi+m.page-1)/m.page*m.page, int64(len(m.mm))) // up; the last page may be partial
	if lo < hi {
		_ = unix.Madvise(m.mm[lo:hi], unix.MADV_WILLNEED)
	}
}

// DontNeed drops from this process the pages lying wholly inside [off, off+n), clamped
// to the file; a page shared with bytes outside the range is kept. The data stays
// readable: a later access faults it back in from the page cache or the file.
func (m *Mapping) DontNeed(off, n int64) {
	lo, hi := m.clamp(off, n)
	lo = (lo + m.page - 1) / m.page * m.page // up
	if hi < int64(len(m.mm)) {
		hi = hi / m.page * m.page // down; the file's last partial page counts as whole
	}
	if lo < hi {
		_ = unix.Madvise(m.mm[lo:hi], unix.MADV_DONTNEED)
	}
}

// clamp intersects [off, off+n) with the mapping, guarding against overflow.
func (m *Mapping) clamp(off, n int64) (int64, int64) {
	size := int64(len(m.mm))
	if n <= 0 || off >= size {
		return 0, 0
	}
	hi := size
	if off <= size-n { // off+n ≤ size without overflow
		hi = off + n
	}
	return max(off, 0), hi
}

// Contains reports whether addr lies in the mapping: which file a fault was in.
func (m *Mapping) Contains(addr uintptr) bool {
	if len(m.mm) == 0 {
		return false
	}
	lo := uintptr(unsafe.Pointer(&m.mm[0]))
	return addr >= lo && addr-lo < uintptr(len(m.mm))
}

// Close unmaps the file. It is safe to call twice.
func (m *Mapping) Close() error {
	if m.mm == nil {
		return nil
	}
	err := m.mm.Unmap()
	m.mm = nil
	if err != nil {
		return fmt.Errorf("%s: munmap: %w", m.path, err)
	}
	return nil
}

// Pool shares mappings between users with reference counts, so a shard is mapped
// only while someone reads it. It is safe for concurrent use.
type Pool struct {
	mu     sync.Mutex
	maps   map[string]*poolEntry
	sizes  map[string]int64
	closed bool
}

type poolEntry struct {
	m    *Mapping
	refs int
}

// NewPool returns an empty pool.
func NewPool() *Pool {
	return &Pool{maps: map[string]*poolEntry{}, sizes: map[string]int64{}}
}

// Register records the shard sizes OpenModel saw, so Acquire can refuse a file that
// changed size since its header was read.
func (p *Pool) Register(models ...*Model) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range models {
		for f, s := range m.FileSizes {
			p.sizes[f] = s
		}
	}
}

// Acquire returns the mapping of path, mapping it on first use; each Acquire needs a
// Release.
func (p *Pool) Acquire(path string) (*Mapping, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("%s: mapping pool is closed", path)
	}
	if e := p.maps[path]; e != nil {
		e.refs++
		return e.m, nil
	}
	m, err := MapFile(path)
	if err != nil {
		return nil, err
	}
	if want, ok := p.sizes[path]; ok && int64(len(m.mm)) != want {
		got := len(m.mm)
		m.Close()
		return nil, fmt.Errorf("%s: file changed size since its header was read (%d bytes, now %d)", path, want, got)
	}
	p.maps[path] = &poolEntry{m: m, refs: 1}
	return m, nil
}

// Release drops one reference to path's mapping and unmaps it at zero.
func (p *Pool) Release(path string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.maps[path]
	if e == nil {
		return fmt.Errorf("%s: released but not acquired", path)
	}
	if e.refs--; e.refs > 0 {
		return nil
	}
	delete(p.maps, path)
	return e.m.Close()
}

// Close unmaps everything still mapped, whatever the counts; later Acquires fail.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var errs []error
	for path, e := range p.maps {
		errs = append(errs, e.m.Close())
		delete(p.maps, path)
	}
	return errors.Join(errs...)
}

// ErrFault is what Guard returns for a memory fault.
var ErrFault = errors.New("mapped file truncated or unreadable")

// FaultError is a memory fault at Addr; it wraps ErrFault.
type FaultError struct{ Addr uintptr }

func (e *FaultError) Error() string {
	return fmt.Sprintf("%v (fault at address %#x)", ErrFault, e.Addr)
}

func (e *FaultError) Unwrap() error { return ErrFault }

// Guard runs f on this goroutine with debug.SetPanicOnFault(true), so a fault while
// reading a mapping (SIGBUS when the file was truncated under us, EIO) returns an error
// wrapping ErrFault instead of crashing. Other panics propagate unchanged. Goroutines
// that f starts are not covered: each must use Guard itself.
func Guard(f func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			if a, ok := r.(interface{ Addr() uintptr }); ok {
				err = &FaultError{Addr: a.Addr()}
				return
			}
			panic(r)
		}
	}()
	return f()
}

// GuardFile is Guard with the file named in the error.
func GuardFile(path string, f func() error) error {
	if err := Guard(f); err != nil {
		if errors.Is(err, ErrFault) {
			return fmt.Errorf("%s: %w", path, err)
		}
		return err
	}
	return nil
}
