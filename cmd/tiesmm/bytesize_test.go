package main

import (
	"strings"
	"testing"
)

// The merge's size flags refuse nan, inf, negatives and 0 (which is not
// "unbounded"), and --out-shard-size anything under 1MiB, before any input
// is read.
func TestMergeSizeFlags(t *testing.T) {
	for _, c := range []struct{ flag, val, want string }{
		{"--max-memory", "nan", "--max-memory: \"nan\" is not a size: not a number"},
		{"--max-memory", "inf", "--max-memory: \"inf\" is too large"},
		{"--max-memory", "-1", "--max-memory: \"-1\" is not a size: sizes cannot be negative"},
		{"--max-memory", "-2GiB", "cannot be negative"},
		{"--max-memory", "0", "--max-memory 0: want a positive size"},
		{"--max-memory", "0GiB", "--max-memory 0: want a positive size"},
		{"--max-memory", "0.4", "--max-memory 0: want a positive size"},
		{"--out-shard-size", "nan", "--out-shard-size: \"nan\" is not a size: not a number"},
		{"--out-shard-size", "inf", "--out-shard-size: \"inf\" is too large"},
		{"--out-shard-size", "-1", "--out-shard-size: \"-1\" is not a size: sizes cannot be negative"},
		{"--out-shard-size", "0", "--out-shard-size 0: want at least 1048576 bytes (1MiB)"},
		{"--out-shard-size", "1", "--out-shard-size 1: want at least 1048576 bytes"},
		{"--out-shard-size", "1023KiB", "want at least 1048576 bytes"},
	} {
		t.Run(c.flag+"="+c.val, func(t *testing.T) {
			dir := t.TempDir()
			_, stderr, code := tiesmm(t, dir, "merge", "--dry-run", c.flag+"="+c.val, "--base", "nowhere/base", "--model", "nowhere/ft1", "out")
			if code == 0 {
				t.Fatal("exit 0")
			}
			if !strings.Contains(stderr, c.want) {
				t.Errorf("stderr does not say %q:\n%s", c.want, stderr)
			}
			if strings.Contains(stderr, "nowhere") {
				t.Errorf("the inputs were looked at before the sizes were checked:\n%s", stderr)
			}
		})
	}
	// The smallest shard size and a positive memory bound pass the check.
	m := mergeCmd{MaxMemory: 1, OutShardSize: minShardSize}
	if err := m.checkSizes(); err != nil {
		t.Error(err)
	}
}
