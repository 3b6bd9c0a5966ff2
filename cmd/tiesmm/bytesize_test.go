package main

import (
	"strings"
	"testing"
)

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{
		"2GiB": 2 << 30, "512MiB": 512 << 20, "1.5GiB": 3 << 29, "5GB": 5e9, "5B": 5e9,
		"100M": 1e8, "4096": 4096, " 1kib ": 1024, "0": 0,
	} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("%q: got %d, %v; want %d", in, got, err, want)
		}
	}
}

// Each bad size is refused with a message saying what is wrong with it.
func TestParseByteSizeBad(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "is not a size"},
		{"GiB", "is not a size"},
		{"two", "is not a size"},
		{"nan", "not a number"},
		{"NaN", "not a number"},
		{"nanGiB", "not a number"},
		{"inf", "too large"},
		{"+Inf", "too large"},
		{"infinity", "too large"},
		{"-inf", "cannot be negative"},
		{"-1", "cannot be negative"},
		{"-1GiB", "cannot be negative"},
		{"-0.5MiB", "cannot be negative"},
		{"1e30GB", "too large"},
		{"1e400", "too large"},
		{"5EiB", "is not a size"},
	} {
		_, err := ParseByteSize(c.in)
		if err == nil {
			t.Errorf("%q: accepted", c.in)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "\""+c.in+"\"") {
			t.Errorf("%q: %v; want %q and the input quoted", c.in, err, c.want)
		}
	}
}

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
