package merge

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync"
)

// Record files: fixed-size records of positions a pass could not decide
// (the single pass's spill) or outputs to patch in later (zero sums), on
// disk in the output's hidden folder, streamed back a block at a time.

// spill holds the positions a pass could not decide. Each worker fills a
// buffer block by block and appends it to the file under the lock, so the
// records of one block stay together and in order.
type spill struct {
	mu    sync.Mutex
	f     *os.File
	w     *bufio.Writer
	count int64
	rec   int // bytes per record: job, element, base value, one τ per model
	chunk int // bytes per read when streaming back
}

func newSpill(dir string, models int) (*spill, error) { return newRecordFile(dir, 4+8+4+4*models) }

// newRecordFile makes a file of fixed-size records that start with a job
// (uint32) and an element (uint64).
func newRecordFile(dir string, rec int) (*spill, error) {
	f, err := os.CreateTemp(dir, ".tiesmm-spill-*")
	if err != nil {
		return nil, fmt.Errorf("spill file: %w", err)
	}
	return &spill{f: f, w: bufio.NewWriterSize(f, recordBuffer), rec: rec, chunk: spillChunk}, nil
}

func (s *spill) append(buf []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count += int64(len(buf) / s.rec)
	_, err := s.w.Write(buf)
	return err
}

func (s *spill) close() {
	s.f.Close()
	os.Remove(s.f.Name())
}

// each streams the records back a block at a time (a block's records are
// contiguous, in element order: workers append whole blocks); block tells a
// record's job and block. fn may keep recs: each read gets a fresh buffer.
func (s *spill) each(block func(rec []byte) [2]int64, fn func(recs []byte) error) error {
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("spill file: %w", err)
	}
	var carry []byte // the records of a block the last read cut
	chunk := max(1, s.chunk/s.rec) * s.rec
	for off, size := int64(0), s.count*int64(s.rec); off < size || len(carry) > 0; {
		n := int(min(int64(chunk), size-off))
		buf := make([]byte, len(carry)+n)
		copy(buf, carry)
		if _, err := s.f.ReadAt(buf[len(carry):], off); err != nil {
			return fmt.Errorf("spill file: %w", err)
		}
		off += int64(n)
		carry = nil
		for len(buf) > 0 {
			first := block(buf)
			end := s.rec
			for end < len(buf) && block(buf[end:]) == first {
				end += s.rec
			}
			if end == len(buf) && off < size {
				carry = buf // the block may go on in the next read
				break
			}
			if err := fn(buf[:end:end]); err != nil {
				return err
			}
			buf = buf[end:]
		}
	}
	return nil
}

// spillChunk is how much of a record file one read takes; recordBuffer is
// a record file's write buffer, and recordFlush how many bytes of records a
// worker gathers before it appends them to a file.
const (
	spillChunk   = 1 << 20
	recordBuffer = 1 << 20
	recordFlush  = 1 << 20
)

// reset empties the spill for the next scope.
func (s *spill) reset() error { return s.truncate(0) }

// truncate keeps the first n records, dropping what is still buffered.
func (s *spill) truncate(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count = n
	s.w.Reset(s.f)
	if err := s.f.Truncate(n * int64(s.rec)); err != nil {
		return fmt.Errorf("spill file: %w", err)
	}
	_, err := s.f.Seek(n*int64(s.rec), io.SeekStart)
	return err
}

// spillDir is where the spill file goes: in the output's hidden temporary
// directory, on its disk, so a killed merge leaves it only there.
func (r *run) spillDir() string { return r.out.TempDir() }

// recordBlock is the job and block of a spill record.
func (r *run) recordBlock(rec []byte) [2]int64 {
	ji := int(binary.LittleEndian.Uint32(rec))
	e := int64(binary.LittleEndian.Uint64(rec[4:]))
	return [2]int64{int64(ji), e / int64(r.blockSize(ji))}
}
