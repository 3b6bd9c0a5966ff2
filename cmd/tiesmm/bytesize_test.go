package main

import "testing"

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{
		"2GiB": 2 << 30, "512MiB": 512 << 20, "1.5GiB": 3 << 29, "5GB": 5e9, "5B": 5e9,
		"100M": 1e8, "4096": 4096, " 1kib ": 1024,
	} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("%q: got %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "GiB", "-1GiB", "two", "1e30GB"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
