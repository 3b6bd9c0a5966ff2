package mmapio

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An output of several folders: each part's shards, index and side files
// in its folder, the same tensor name in two parts, one commit.
func TestOutputParts(t *testing.T) {
	parent := t.TempDir()
	dest := filepath.Join(parent, "out")
	sharded := smallLayout(t, 20)
	parts := []OutPart{{}, {Dir: "one", Layout: smallLayout(t, 0)}, {Dir: "two", Layout: sharded}}
	o, err := CreateOutputParts(dest, false, parts)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.WritePartTensor(1, "a", 0, []byte("1111222233334444")); err != nil {
		t.Fatal(err)
	}
	if err := o.WritePartTensor(2, "a", 0, []byte("aaaabbbbccccdddd")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if err := o.ReadPartTensor(1, "a", 4, got); err != nil || string(got) != "2222" {
		t.Errorf("read back %q, %v", got, err)
	}
	if err := o.WritePartTensor(0, "a", 0, got); err == nil || !strings.Contains(err.Error(), "not in the output layout") {
		t.Errorf("a tensor of no part's layout: %v", err)
	}
	if err := o.WritePartFile(0, "one", nil); err == nil {
		t.Error("a side file named like a part's folder was written")
	}
	for pi, name := range map[int]string{0: "emr.json", 2: "config.json"} {
		if err := o.WritePartFile(pi, name, []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	assertOnly(t, dest, "emr.json", "one", "two")
	assertOnly(t, filepath.Join(dest, "one"), "model.safetensors")
	assertOnly(t, filepath.Join(dest, "two"), "config.json", IndexName, sharded.Shards[0].FileName, sharded.Shards[1].FileName)
	m, err := OpenModel(filepath.Join(dest, "two"))
	if err != nil || len(m.Tensors) != 2 {
		t.Fatalf("part two: %v", err)
	}
	for _, bad := range []string{"..", "a/b", "model.safetensors"} {
		if _, err := CreateOutputParts(filepath.Join(parent, "bad"), false, []OutPart{{Dir: bad, Layout: smallLayout(t, 0)}}); err == nil {
			t.Errorf("part folder %q accepted", bad)
		}
	}
}

// --force replaces an EMR output (emr.json and its folders of model files)
// and nothing with other files inside its folders.
func TestForceEMROutput(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"emr.json", "unified/model.safetensors", "masks/model.safetensors", "task-a/config.json", "task-a/model.safetensors"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := CheckDestination(dir, true, nil); err != nil {
		t.Errorf("an EMR output refused: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "masks", "notes.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckDestination(dir, true, nil); err == nil || !strings.Contains(err.Error(), "masks/notes.txt") {
		t.Errorf("a foreign file inside masks/: %v", err)
	}
	os.Remove(filepath.Join(dir, "masks", "notes.txt"))
	os.Remove(filepath.Join(dir, "emr.json"))
	if err := CheckDestination(dir, true, nil); err == nil || !strings.Contains(err.Error(), "unified/") {
		t.Errorf("folders without emr.json: %v", err)
	}
}

// The fingerprint is the SHA-256 of each shard's length prefix and header,
// shard after shard: computed here from the files' bytes.
func TestHeaderFingerprint(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "m")
	l := smallLayout(t, 20)
	o, err := CreateOutput(dest, false, l)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	m, err := OpenModel(dest)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, s := range l.Shards {
		b, err := os.ReadFile(filepath.Join(dest, s.FileName))
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b[:8+binary.LittleEndian.Uint64(b)])
	}
	got, err := HeaderFingerprint(m)
	if want := hex.EncodeToString(h.Sum(nil)); err != nil || got != want {
		t.Errorf("fingerprint %s (%v), want %s", got, err, want)
	}
}
