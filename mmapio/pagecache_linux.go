package mmapio

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing f's dirty pages out
// (sync_file_range SYNC_FILE_RANGE_WRITE: pages already under writeback are
// skipped, nothing is waited for but a full request queue).
func startWriteback(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SyncFileRange(int(fd), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
		})
	}
}

// Prefetch asks the kernel to read [off, off+n) of the file at path into the
// page cache (fadvise WILLNEED), without a mapping; a hint, so errors are
// ignored. It may block while the disk's request queue is full: call it
// off the critical path.
func Prefetch(path string, off, n int64) {
	f, err := OpenRegular(path)
	if err != nil {
		return
	}
	defer f.Close()
	PrefetchFile(f, off, n)
}

// PrefetchFile is Prefetch on an open file.
func PrefetchFile(f *os.File, off, n int64) {
	_ = unix.Fadvise(int(f.Fd()), off, n, unix.FADV_WILLNEED)
}

// adviseLargeFolios marks a read-only file mapping MADV_HUGEPAGE: pages read
// through it from disk come into the page cache as large folios, which a
// later pass maps a folio per fault and releases a folio at a time (about
// half the page faults of later merges). A hint: where THP is off it fails,
// and nothing changes.
func adviseLargeFolios(b []byte) { _ = unix.Madvise(b, unix.MADV_HUGEPAGE) }
