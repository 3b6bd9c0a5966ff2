package merge

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tiesmm/tiesmm/mmapio"
)

// mappedFile maps one input shard while blocks of the current pass still
// need it, and unmaps it after the last: address space stays near the
// shards in flight, not the sum of every model (a 70B merge maps 4 × 140 GB;
// some arm64 kernels give a process 512 GiB).
type mappedFile struct {
	path    string
	mu      sync.Mutex
	m       *mmapio.Mapping
	rf      *os.File     // for readAt: sampled runs are copied, not mapped
	size    int64        // when the header was read; -1 if unknown
	pending atomic.Int64 // blocks of this pass still to read the file
}

// data maps the file on first use, refusing it if its size changed since
// its header was read: offsets from that header no longer hold.
func (f *mappedFile) data() ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		m, err := mmapio.MapFile(f.path)
		if err != nil {
			return nil, err
		}
		if got := int64(len(m.Data())); f.size >= 0 && got != f.size {
			m.Close()
			return nil, f.changedSize(got)
		}
		f.m = m
	}
	return f.m.Data(), nil
}

func (f *mappedFile) changedSize(now int64) error {
	return fmt.Errorf("%s: file changed size since its header was read (%d bytes, now %d): rewritten or truncated during the merge", f.path, f.size, now)
}

// contains reports whether addr lies in the file's mapping.
func (f *mappedFile) contains(addr uintptr) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m != nil && f.m.Contains(addr)
}

// InputError is a failure to read an input tensor's bytes: its file was
// truncated or rewritten during the merge, or could not be read.
type InputError struct {
	File, Tensor string
	Err          error
}

func (e *InputError) Error() string {
	if strings.Contains(e.Err.Error(), e.File) {
		return fmt.Sprintf("tensor %q: %v", e.Tensor, e.Err)
	}
	return fmt.Sprintf("tensor %q: %s: %v", e.Tensor, e.File, e.Err)
}

func (e *InputError) Unwrap() error { return e.Err }

// tensorError prefixes err with the tensor's name unless it starts with it
// already (an InputError, or a pass that named it).
func tensorError(name string, err error) error {
	if prefix := fmt.Sprintf("tensor %q: ", name); strings.HasPrefix(err.Error(), prefix) {
		return err
	}
	return fmt.Errorf("tensor %q: %w", name, err)
}

func (f *mappedFile) dontNeed(off, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m != nil {
		f.m.DontNeed(off, n)
	}
}

// willNeed asks for read-ahead of a range, if the file is mapped.
func (f *mappedFile) willNeed(off, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m != nil {
		f.m.WillNeed(off, n)
	}
}

// willRead asks for read-ahead of a range through the descriptor that
// readAt copies with.
func (f *mappedFile) willRead(off, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rf, err := f.openLocked(); err == nil {
		mmapio.PrefetchFile(rf, off, n)
	}
}

// openLocked opens the file for reads on first use; f.mu is held.
func (f *mappedFile) openLocked() (*os.File, error) {
	if f.rf == nil {
		rf, err := mmapio.OpenRegular(f.path)
		if err != nil {
			return nil, err
		}
		if st, err := rf.Stat(); err == nil && f.size >= 0 && st.Size() != f.size {
			rf.Close()
			return nil, f.changedSize(st.Size())
		}
		f.rf = rf
	}
	return f.rf, nil
}

// readAt copies len(buf) bytes at off.
func (f *mappedFile) readAt(buf []byte, off int64) error {
	f.mu.Lock()
	rf, err := f.openLocked()
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if _, err := rf.ReadAt(buf, off); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the file shrank since its header was read
		}
		return fmt.Errorf("%s: reading %d bytes at %d: %w", f.path, len(buf), off, err)
	}
	return nil
}

// close unmaps the file and closes its descriptor for readAt.
func (f *mappedFile) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var err error
	if f.m != nil {
		err = f.m.Close()
		f.m = nil
	}
	if f.rf != nil {
		if e := f.rf.Close(); err == nil {
			err = e
		}
		f.rf = nil
	}
	return err
}

// jobFiles lists the input files a job reads.
func (r *run) jobFiles(ji int) []*mappedFile {
	j := &r.p.Jobs[ji]
	fs := make([]*mappedFile, 0, len(j.Models)+1)
	if r.readsBase(j) {
		fs = append(fs, r.files[j.Base.File])
	}
	for _, t := range j.Models {
		fs = append(fs, r.files[t.File])
	}
	return r.adaptedFiles(ji, fs)
}

func (r *run) openFiles() {
	r.files = map[string]*mappedFile{}
	for _, md := range append(r.p.inputs(), r.p.adapterFiles()...) {
		for _, f := range md.Files {
			if r.files[f] == nil {
				size, ok := md.FileSizes[f]
				if !ok {
					size = -1
				}
				r.files[f] = &mappedFile{path: f, size: size}
			}
		}
	}
}

func (r *run) closeFiles() {
	for _, f := range r.files {
		f.close()
	}
}

// prefetchBytes is how far ahead of the workers, in input bytes, the kernel
// is asked to read: tens of milliseconds of a disk's reading.
const prefetchBytes = 64 << 20

// prefetchJobBytes bounds the read-ahead of a whole tensor's inputs.
const prefetchJobBytes = 1 << 30

// prefetchJob asks the kernel to read a tensor's inputs (up to
// prefetchJobBytes in all), in the background: a tensor-by-tensor merge then
// finds the next tensor read while it works on this one.
func (r *run) prefetchJob(ji int) {
	j := &r.p.Jobs[ji]
	type span struct {
		path      string
		off, size int64
	}
	var spans []span
	if r.readsBase(j) {
		spans = append(spans, span{j.Base.File, j.Base.Offset, j.Base.Size})
	}
	if !j.Copy {
		for _, t := range j.Models {
			spans = append(spans, span{t.File, t.Offset, t.Size})
		}
	}
	each := int64(prefetchJobBytes / max(1, len(spans)))
	go func() {
		for _, s := range spans {
			mmapio.Prefetch(s.path, s.off, min(s.size, each))
		}
	}()
}

// prefetch asks the kernel to start reading the inputs of blocks that
// workers will take soon, so the disk works while the cores merge.
func (r *run) prefetch(bs []block, copied bool) {
	if copied {
		r.eachInput(bs, (*mappedFile).willRead)
		return
	}
	r.eachInput(bs, (*mappedFile).willNeed)
}
