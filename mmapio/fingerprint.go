package mmapio

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// HeaderFingerprint identifies a model by its tensors' names, dtypes, shapes
// and places, not its data: the SHA-256 of each shard's first bytes, its
// 8-byte header length and its JSON header as stored, shard after shard in
// the order of Files. A copy of the model has the same; shard file names do
// not count.
func HeaderFingerprint(m *Model) (string, error) {
	h := sha256.New()
	for _, path := range m.Files {
		f, err := OpenRegular(path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		var pre [8]byte
		_, err = f.ReadAt(pre[:], 0)
		n := binary.LittleEndian.Uint64(pre[:])
		if err == nil && (n > MaxHeaderLen || int64(n) > m.FileSizes[path]-8) {
			err = fmt.Errorf("header length %d is out of range", n)
		}
		var hdr []byte
		if err == nil {
			hdr = make([]byte, n)
			_, err = f.ReadAt(hdr, 8)
		}
		f.Close()
		if err != nil {
			return "", fmt.Errorf("%s: reading the header: %w", path, err)
		}
		h.Write(pre[:])
		h.Write(hdr)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
