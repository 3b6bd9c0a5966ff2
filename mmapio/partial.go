package mmapio

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// A merge builds its model in a hidden folder beside the destination,
// .<dest>.tiesmm-partial-<random>, and holds an exclusive flock on it while it
// runs. A folder of that name whose lock can be taken belongs to a merge that
// is no longer running (killed, or the machine stopped), and the next merge
// into the same destination removes it.
const partialInfix = ".tiesmm-partial-"

// makeLockedTemp creates the hidden partial folder in parent and locks it.
// The lock lives as long as the returned descriptor.
func makeLockedTemp(parent, prefix string) (string, *os.File, error) {
	tmp, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return "", nil, err
	}
	lock, err := os.Open(tmp)
	if err == nil {
		err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != nil {
			lock.Close()
		}
	}
	if err != nil {
		os.RemoveAll(tmp)
		return "", nil, fmt.Errorf("locking %s: %w", tmp, err)
	}
	_ = os.Chmod(tmp, 0o755) // MkdirTemp makes it 0700; the model is for everyone
	return tmp, lock, nil
}

// removeStale removes the partial folders of merges into parent/base that
// are no longer running, and returns what it removed and the bytes freed.
// A folder whose lock is held by a live merge is left alone.
func removeStale(parent, base string) ([]string, int64, error) {
	matches, err := filepath.Glob(filepath.Join(parent, "."+globEscape(base)+partialInfix+"*"))
	if err != nil {
		return nil, 0, err
	}
	var removed []string
	var freed int64
	for _, dir := range matches {
		st, err := os.Lstat(dir)
		if err != nil || !st.IsDir() {
			continue // not ours: a partial folder is a real directory
		}
		f, err := os.Open(dir)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			f.Close() // a live merge holds it
			continue
		}
		size := treeBytes(dir)
		err = os.RemoveAll(dir)
		f.Close()
		if err != nil {
			return removed, freed, fmt.Errorf("removing the partial output %s of a merge no longer running: %w", dir, err)
		}
		removed = append(removed, dir)
		freed += size
	}
	return removed, freed, nil
}

// globEscape quotes the pattern characters of a file name for filepath.Glob.
func globEscape(name string) string {
	var b strings.Builder
	for _, r := range name {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// treeBytes is the disk space the files under dir take.
func treeBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*unix.Stat_t); ok {
				n += st.Blocks * 512
			} else {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
