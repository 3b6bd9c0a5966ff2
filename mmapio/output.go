package mmapio

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/tiesmm/tiesmm/internal/units"
)

// spaceMargin is free space demanded beyond the shards, for the index, config files
// and the file system's own metadata.
const spaceMargin = 32 << 20

// Output is an output model directory being built. It is built in a hidden directory
// beside dest (.<base>.tiesmm-partial-<random>, locked while the merge runs), shard
// files carry a .partial suffix, and Commit renames everything into place: a killed
// process leaves only the hidden directory, never a file named like a finished model.
type Output struct {
	dest   string // final directory (symlinks resolved)
	parent string
	tmp    string
	force  bool
	parts  []OutPart
	shards []*outShard
	places map[partTensor]place

	lock *os.File // holds the flock on tmp that marks the merge as live
	// Partial folders of merges no longer running, removed on creation.
	reclaimed      []string
	reclaimedBytes int64

	mu    sync.RWMutex // writers share it; Commit and Abort take it alone
	state int          // building, committed, aborted

	// Written data goes to disk in the background as the merge runs, so
	// Commit's fsync has little left to wait for.
	written   atomic.Int64
	flush     chan struct{}
	flushDone chan struct{}
	stopOnce  sync.Once
}

// writebackEvery is how many bytes written start a background writeback.
// What is written after the last one, Commit's fsync waits for, so it is
// kept small.
const writebackEvery = 8 << 20

const (
	building = iota
	committed
	aborted
)

type outShard struct {
	part      int // index in parts
	shard     *Shard
	f         *os.File
	partial   string // path while building
	final     string // path inside tmp after the first step of Commit
	shown     string // dest/FileName, for messages
	dataStart int64
}

// partTensor names a tensor of one part: parts may hold tensors of the same name.
type partTensor struct {
	part int
	name string
}

type place struct {
	s          *outShard
	begin, end int64 // file offsets of the tensor's bytes
}

// CreateOutput starts an output model at dest. dest may not exist, or be an empty
// directory; a non-empty directory is an error unless force, and then it may hold
// only what a merge writes (it is replaced on Commit); the root, the home folder and
// the current folder or one above it are refused, and so is anything else. Partial
// folders of merges into dest that no longer run are removed. Whether the parent is
// writable and has the space for the whole layout is checked first, then every shard
// file is created with its header and its data reserved (fallocate where the file
// system has it), so a full disk shows now, not mid-merge. The output may not be,
// hold or lie inside any of inputs (CheckDestination).
func CreateOutput(dest string, force bool, layout *Layout, inputs ...string) (*Output, error) {
	if layout == nil || len(layout.Shards) == 0 {
		return nil, fmt.Errorf("output %s: empty layout", dest)
	}
	return CreateOutputParts(dest, force, []OutPart{{Layout: layout}}, inputs...)
}

// OutPart is one model folder of an output: Dir is its subfolder ("" for the
// output folder itself), Layout its shards (nil: side files only).
type OutPart struct {
	Dir    string
	Layout *Layout
}

// CreateOutputParts is CreateOutput for an output made of several model
// folders, built, checked and committed as one: each part gets its shards
// (and its index when sharded) in its own subfolder.
func CreateOutputParts(dest string, force bool, parts []OutPart, inputs ...string) (*Output, error) {
	o := &Output{force: force, parts: parts, places: map[partTensor]place{}}
	var err error
	if o.dest, err = resolveDest(dest); err != nil { // build beside the real directory, on its file system
		return nil, err
	}
	if err := checkDestination(dest, o.dest, force, inputs); err != nil {
		return nil, err
	}
	base := filepath.Base(o.dest)
	o.parent = filepath.Dir(o.dest)
	if err := o.checkLayout(); err != nil {
		return nil, fmt.Errorf("output %s: %w", dest, err)
	}
	if err := os.MkdirAll(o.parent, 0o755); err != nil {
		return nil, fmt.Errorf("output %s: %w", dest, err)
	}
	if err := CheckWritable(o.parent); err != nil {
		return nil, fmt.Errorf("output %s: %w", dest, err)
	}
	if o.reclaimed, o.reclaimedBytes, err = removeStale(o.parent, base); err != nil {
		return nil, fmt.Errorf("output %s: %w", dest, err)
	}
	if err := checkSpace(o.parent, parts); err != nil {
		return nil, err
	}
	if o.tmp, o.lock, err = makeLockedTemp(o.parent, "."+base+partialInfix); err != nil {
		return nil, fmt.Errorf("output %s: %w", dest, err)
	}
	if err := o.createParts(); err != nil {
		o.Abort()
		return nil, err
	}
	o.flush, o.flushDone = make(chan struct{}, 1), make(chan struct{})
	go o.flusher()
	return o, nil
}

// flusher starts the writeback of every shard's dirty pages each time it is
// signalled. It only starts I/O: Commit's fsync waits for it and reports
// errors, so a failed writeback here is ignored.
func (o *Output) flusher() {
	defer close(o.flushDone)
	for range o.flush {
		o.mu.RLock()
		for _, s := range o.shards {
			if s.f != nil {
				startWriteback(s.f)
			}
		}
		o.mu.RUnlock()
	}
}

// stopFlusher ends the flusher before Commit or Abort take the lock.
func (o *Output) stopFlusher() {
	o.stopOnce.Do(func() {
		if o.flush != nil {
			close(o.flush)
			<-o.flushDone
		}
	})
}

// checkExisting refuses a dest (resolved to real) that is a file, a non-empty
// directory without force, or one holding what a merge does not write.
func checkExisting(shown, real string, force bool) error {
	st, err := os.Stat(real)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("output %s: %w", shown, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("output %s exists and is not a directory", shown)
	}
	empty, err := isEmptyDir(real)
	if err != nil {
		return fmt.Errorf("output %s: %w", shown, err)
	}
	if empty {
		return nil
	}
	if !force {
		return fmt.Errorf("output %s exists and is not empty (use --force to replace it)", shown)
	}
	foreign, err := listForeign(real)
	if err != nil {
		return fmt.Errorf("output %s: %w", shown, err)
	}
	if len(foreign) > 0 {
		return foreignError(shown, foreign)
	}
	return nil
}

func isEmptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if err == io.EOF {
		return true, nil
	}
	return false, err
}

// createParts makes each part's subfolder and shard files.
func (o *Output) createParts() error {
	for pi, part := range o.parts {
		if part.Dir != "" {
			if err := os.Mkdir(filepath.Join(o.tmp, part.Dir), 0o755); err != nil {
				return fmt.Errorf("output %s: %w", o.dest, err)
			}
		}
		if part.Layout == nil {
			continue
		}
		for i := range part.Layout.Shards {
			if err := o.createShard(pi, &part.Layout.Shards[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkLayout checks every part: a plain, unique folder name, and a layout
// PlanLayout could have made.
func (o *Output) checkLayout() error {
	dirs := map[string]bool{}
	for pi, part := range o.parts {
		if dirs[part.Dir] || part.Dir != "" && (part.Dir != filepath.Base(part.Dir) || part.Dir == "." || part.Dir == ".." || isModelFileName(part.Dir)) {
			return fmt.Errorf("part %d: bad folder name %q", pi, part.Dir)
		}
		dirs[part.Dir] = true
		if part.Layout == nil {
			continue
		}
		if err := o.checkPartLayout(pi, part.Layout); err != nil {
			if part.Dir != "" {
				return fmt.Errorf("%s: %w", part.Dir, err)
			}
			return err
		}
	}
	if len(o.parts) == 0 {
		return errors.New("no parts")
	}
	return nil
}

// checkPartLayout accepts a layout PlanLayout could have made: dense shards, headers of
// the recorded length, unique names.
func (o *Output) checkPartLayout(pi int, layout *Layout) error {
	files := map[string]bool{}
	var total int64
	for i := range layout.Shards {
		s := &layout.Shards[i]
		if s.FileName == "" || s.FileName != filepath.Base(s.FileName) || files[s.FileName] || s.FileName == IndexName {
			return fmt.Errorf("shard %d: bad file name %q", i, s.FileName)
		}
		files[s.FileName] = true
		pos := int64(0)
		for _, t := range s.Tensors {
			size, err := tensorBytes(t.DType, t.Shape)
			if err != nil {
				return fmt.Errorf("%s: tensor %q: %w", s.FileName, t.Name, err)
			}
			if t.Begin != pos || t.End-t.Begin != size {
				return fmt.Errorf("%s: tensor %q: data_offsets [%d, %d] are not dense (expected [%d, %d])", s.FileName, t.Name, t.Begin, t.End, pos, pos+size)
			}
			if _, dup := o.places[partTensor{pi, t.Name}]; dup {
				return fmt.Errorf("%s: tensor %q: placed twice", s.FileName, t.Name)
			}
			o.places[partTensor{pi, t.Name}] = place{}
			pos = t.End
			total += size
		}
		if hl := int64(len(s.Header())); hl != s.HeaderLen || s.Size != 8+hl+pos {
			return fmt.Errorf("%s: header length %d / size %d do not match its tensors (%d / %d)", s.FileName, s.HeaderLen, s.Size, hl, 8+hl+pos)
		}
	}
	if total != layout.TotalSize {
		return fmt.Errorf("total size %d does not match the tensors (%d bytes)", layout.TotalSize, total)
	}
	return nil
}

// checkSpace fails early when the file system of dir cannot hold the layout.
func checkSpace(dir string, parts []OutPart) error {
	var need int64 = spaceMargin
	for _, part := range parts {
		if part.Layout == nil {
			continue
		}
		for _, s := range part.Layout.Shards {
			need = satAdd(need, s.Size)
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil // no statfs here: fallocate will tell
	}
	have := satMul(int64(st.Bavail), int64(st.Bsize))
	if have < need {
		return fmt.Errorf("not enough free space on %s: need %s, have %s", dir, units.FormatBinary(need), units.FormatBinary(have))
	}
	return nil
}

func satAdd(a, b int64) int64 {
	if a > maxInt64-b {
		return maxInt64
	}
	return a + b
}

func satMul(a, b int64) int64 {
	if a < 0 || b < 0 {
		return 0
	}
	if b != 0 && a > maxInt64/b {
		return maxInt64
	}
	return a * b
}

const maxInt64 = 1<<63 - 1

// createShard makes a shard's .partial file: length prefix, header, data reserved.
func (o *Output) createShard(pi int, s *Shard) error {
	dir := o.parts[pi].Dir
	os_ := &outShard{
		part:      pi,
		shard:     s,
		partial:   filepath.Join(o.tmp, dir, s.FileName+".partial"),
		final:     filepath.Join(o.tmp, dir, s.FileName),
		shown:     filepath.Join(o.dest, dir, s.FileName),
		dataStart: 8 + s.HeaderLen,
	}
	f, err := os.OpenFile(os_.partial, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("%s: %w", os_.shown, err)
	}
	os_.f = f
	o.shards = append(o.shards, os_) // before any failure, so Abort closes it
	hdr := make([]byte, 8, 8+s.HeaderLen)
	binary.LittleEndian.PutUint64(hdr, uint64(s.HeaderLen))
	hdr = append(hdr, s.Header()...)
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return fmt.Errorf("%s: writing header: %w", os_.shown, err)
	}
	if err := reserve(f, s.Size); err != nil {
		return fmt.Errorf("%s: reserving %s for the shard: %w", os_.shown, units.FormatBinary(s.Size), err)
	}
	for _, t := range s.Tensors {
		o.places[partTensor{pi, t.Name}] = place{s: os_, begin: os_.dataStart + t.Begin, end: os_.dataStart + t.End}
	}
	return nil
}

// Dest is the directory the model appears at on Commit.
func (o *Output) Dest() string { return o.dest }

// TempDir is the hidden directory the model is built in.
func (o *Output) TempDir() string { return o.tmp }

// locate checks a tensor access and returns its file and absolute offset.
func (o *Output) locate(op string, part int, name string, off int64, n int) (place, int64, error) {
	pl, ok := o.places[partTensor{part, name}]
	if !ok || pl.s == nil {
		return pl, 0, fmt.Errorf("output %s: tensor %q: not in the output layout", o.partDir(part), name)
	}
	if o.state != building {
		return pl, 0, fmt.Errorf("%s: tensor %q: %s after the output was committed or aborted", pl.s.shown, name, op)
	}
	size := pl.end - pl.begin
	if off < 0 || off > size || int64(n) > size-off {
		return pl, 0, fmt.Errorf("%s: tensor %q: %s of %d bytes at offset %d is outside the tensor's %d bytes", pl.s.shown, name, op, n, off, size)
	}
	return pl, pl.begin + off, nil
}

// partDir is the folder part pi appears at, for messages.
func (o *Output) partDir(pi int) string {
	if pi < 0 || pi >= len(o.parts) {
		return fmt.Sprintf("%s (part %d)", o.dest, pi)
	}
	return filepath.Join(o.dest, o.parts[pi].Dir)
}

// WriteTensor writes p at byte offset off of tensor name (pwrite; safe for concurrent
// use on disjoint ranges).
func (o *Output) WriteTensor(name string, off int64, p []byte) error {
	return o.WritePartTensor(0, name, off, p)
}

// WritePartTensor is WriteTensor for a tensor of part pi.
func (o *Output) WritePartTensor(pi int, name string, off int64, p []byte) error {
	o.mu.RLock()
	defer o.mu.RUnlock()
	pl, at, err := o.locate("write", pi, name, off, len(p))
	if err != nil {
		return err
	}
	if _, err := pl.s.f.WriteAt(p, at); err != nil {
		return fmt.Errorf("%s: tensor %q: writing %d bytes at offset %d: %w", pl.s.shown, name, len(p), off, err)
	}
	if n := o.written.Add(int64(len(p))); n/writebackEvery != (n-int64(len(p)))/writebackEvery {
		select {
		case o.flush <- struct{}{}:
		default: // one is pending already
		}
	}
	return nil
}

// ReadTensor reads back len(p) bytes at byte offset off of tensor name (pread).
func (o *Output) ReadTensor(name string, off int64, p []byte) error {
	return o.ReadPartTensor(0, name, off, p)
}

// ReadPartTensor is ReadTensor for a tensor of part pi.
func (o *Output) ReadPartTensor(pi int, name string, off int64, p []byte) error {
	o.mu.RLock()
	defer o.mu.RUnlock()
	pl, at, err := o.locate("read", pi, name, off, len(p))
	if err != nil {
		return err
	}
	if _, err := pl.s.f.ReadAt(p, at); err != nil {
		return fmt.Errorf("%s: tensor %q: reading %d bytes at offset %d: %w", pl.s.shown, name, len(p), off, err)
	}
	return nil
}

// checkName accepts a plain file name that is not one of the model's own files.
func (o *Output) checkName(pi int, name string) error {
	if pi < 0 || pi >= len(o.parts) {
		return fmt.Errorf("output %s: no part %d", o.dest, pi)
	}
	dir := o.partDir(pi)
	if name == "" || name == "." || name == ".." || name != filepath.Base(name) || strings.ContainsRune(name, '\\') {
		return fmt.Errorf("output %s: %q is not a plain file name", dir, name)
	}
	if name == IndexName || strings.HasSuffix(name, ".partial") {
		return fmt.Errorf("output %s: %q is reserved for the model's own files", dir, name)
	}
	for _, part := range o.parts {
		if pi == 0 && name == part.Dir {
			return fmt.Errorf("output %s: %q is one of the output's folders", dir, name)
		}
	}
	for _, s := range o.shards {
		if s.part == pi && name == s.shard.FileName {
			return fmt.Errorf("output %s: %q is one of the output's shards", dir, name)
		}
	}
	return nil
}

// WriteFile writes a side file (config.json, tokenizer files...) into the output.
func (o *Output) WriteFile(name string, data []byte) error {
	return o.WritePartFile(0, name, data)
}

// WritePartFile is WriteFile into part pi's folder.
func (o *Output) WritePartFile(pi int, name string, data []byte) error {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if err := o.checkName(pi, name); err != nil {
		return err
	}
	if o.state != building {
		return fmt.Errorf("output %s: %s: written after the output was committed or aborted", o.partDir(pi), name)
	}
	return writeSynced(filepath.Join(o.tmp, o.parts[pi].Dir, name), func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// writeSynced creates (or replaces) path with what fill writes, and fsyncs it.
func writeSynced(path string, fill func(io.Writer) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := fill(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("%s: fsync: %w", path, err)
	}
	return f.Close()
}

// Commit makes the model durable and visible: fsync every shard, give it its final
// name, write the index last (when sharded), fsync the directory, and rename it to
// dest (with force, an existing dest is moved aside first and removed after).
func (o *Output) Commit() error {
	o.stopFlusher()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.state != building {
		return fmt.Errorf("output %s: commit after the output was committed or aborted", o.dest)
	}
	for _, s := range o.shards {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("%s: fsync: %w", s.shown, err)
		}
		err := s.f.Close()
		s.f = nil
		if err != nil {
			return fmt.Errorf("%s: close: %w", s.shown, err)
		}
		if err := os.Rename(s.partial, s.final); err != nil {
			return fmt.Errorf("%s: %w", s.shown, err)
		}
	}
	for pi, part := range o.parts {
		if part.Layout != nil && len(part.Layout.Shards) > 1 {
			if err := o.writeIndex(pi); err != nil {
				return err
			}
		}
		if part.Dir == "" {
			continue
		}
		if err := syncDir(filepath.Join(o.tmp, part.Dir)); err != nil {
			return fmt.Errorf("output %s: %w", o.dest, err)
		}
	}
	if err := syncDir(o.tmp); err != nil {
		return fmt.Errorf("output %s: %w", o.dest, err)
	}
	if err := o.moveIntoPlace(); err != nil {
		return err
	}
	o.state = committed
	o.unlock()
	if err := syncDir(o.parent); err != nil {
		return fmt.Errorf("output %s: %w", o.dest, err)
	}
	return nil
}

func (o *Output) writeIndex(pi int) error {
	wm := map[string]string{}
	for _, s := range o.shards {
		if s.part != pi {
			continue
		}
		for _, t := range s.shard.Tensors {
			wm[t.Name] = s.shard.FileName
		}
	}
	idx := struct {
		Metadata  map[string]int64  `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}{map[string]int64{"total_size": o.parts[pi].Layout.TotalSize}, wm}
	data, err := json.MarshalIndent(idx, "", "  ") // maps marshal with sorted keys, as HF writes them
	if err != nil {
		return fmt.Errorf("output %s: index: %w", o.partDir(pi), err)
	}
	data = append(data, '\n')
	return writeSynced(filepath.Join(o.tmp, o.parts[pi].Dir, IndexName), func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// moveIntoPlace puts the finished temporary directory at dest. With force, an
// existing model directory is swapped with it in one rename and then removed;
// until that rename the old directory stays whole.
func (o *Output) moveIntoPlace() error {
	st, err := os.Lstat(o.dest)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// nothing in the way
	case err != nil:
		return fmt.Errorf("output %s: %w", o.dest, err)
	case !st.IsDir():
		return fmt.Errorf("output %s exists and is not a directory", o.dest)
	default:
		empty, err := isEmptyDir(o.dest)
		if err != nil {
			return fmt.Errorf("output %s: %w", o.dest, err)
		}
		if empty {
			if err := os.Remove(o.dest); err != nil {
				return fmt.Errorf("output %s: %w", o.dest, err)
			}
			break
		}
		if !o.force {
			return fmt.Errorf("output %s exists and is not empty (use --force to replace it)", o.dest)
		}
		// What is in the way is checked again: it may have changed during the merge.
		foreign, err := listForeign(o.dest)
		if err != nil {
			return fmt.Errorf("output %s: %w", o.dest, err)
		}
		if len(foreign) > 0 {
			return foreignError(o.dest, foreign)
		}
		return o.replace()
	}
	if err := os.Rename(o.tmp, o.dest); err != nil {
		return fmt.Errorf("output %s: %w", o.dest, err)
	}
	return nil
}

// replace swaps the finished model with the old one at dest, then removes
// the old one (now at the temporary name, so a kill mid-removal leaves a
// partial folder the next merge cleans up).
func (o *Output) replace() error {
	err := exchange(o.tmp, o.dest)
	if err == nil {
		if err := syncDir(o.parent); err != nil {
			return fmt.Errorf("output %s: %w", o.dest, err)
		}
		if err := os.RemoveAll(o.tmp); err != nil {
			return fmt.Errorf("output %s: the new model is in place but removing the old one (%s) failed: %w", o.dest, o.tmp, err)
		}
		return nil
	}
	if !errors.Is(err, errExchangeUnsupported) {
		return fmt.Errorf("output %s: %w", o.dest, err)
	}
	// No exchange on this file system: the old model goes aside under a
	// partial name first, so either name holds a whole model at every moment.
	old, err := os.MkdirTemp(o.parent, "."+filepath.Base(o.dest)+partialInfix)
	if err == nil {
		err = os.Remove(old) // only the fresh name is wanted: rename does not replace a directory
	}
	if err != nil {
		return fmt.Errorf("output %s: %w", o.dest, err)
	}
	if err := os.Rename(o.dest, old); err != nil {
		return fmt.Errorf("output %s: moving the old directory aside: %w", o.dest, err)
	}
	if err := os.Rename(o.tmp, o.dest); err != nil {
		if rerr := os.Rename(old, o.dest); rerr != nil {
			return fmt.Errorf("output %s: %w (and the old directory stays at %s: %v)", o.dest, err, old, rerr)
		}
		return fmt.Errorf("output %s: %w", o.dest, err)
	}
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("output %s: the new model is in place but removing the old one (%s) failed: %w", o.dest, old, err)
	}
	return nil
}

// Reclaimed lists the partial folders of merges no longer running that
// CreateOutput removed, and the bytes they held.
func (o *Output) Reclaimed() ([]string, int64) { return o.reclaimed, o.reclaimedBytes }

func (o *Output) unlock() {
	if o.lock != nil {
		o.lock.Close()
		o.lock = nil
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTSUP) {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// Abort removes everything the output made. After Commit it does nothing, so
// `defer o.Abort()` is safe; it may be called twice.
func (o *Output) Abort() error {
	o.stopFlusher()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.state != building {
		return nil
	}
	o.state = aborted
	var errs []error
	for _, s := range o.shards {
		if s.f != nil {
			errs = append(errs, s.f.Close())
			s.f = nil
		}
	}
	if o.tmp != "" {
		if err := os.RemoveAll(o.tmp); err != nil {
			errs = append(errs, fmt.Errorf("output %s: removing %s: %w", o.dest, o.tmp, err))
		}
	}
	o.unlock()
	return errors.Join(errs...)
}
