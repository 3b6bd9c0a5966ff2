package units

import (
	"strings"
	"testing"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"2GiB": 2 << 30, "512MiB": 512 << 20, "1.5GiB": 3 << 29, "5GB": 5e9, "5B": 5e9,
		"100M": 1e8, "4096": 4096, " 1kib ": 1024, "0": 0, "2 TiB": 2 << 40, "3kb": 3000,
		"1g": 1e9, "1T": 1e12, "0.5KiB": 512, "1e3": 1000,
	} {
		got, err := ParseBytes(in)
		if err != nil || got != want {
			t.Errorf("%q: got %d, %v; want %d", in, got, err, want)
		}
	}
}

// Each bad size is refused with a message that quotes it and says what is wrong.
func TestParseBytesBad(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "is not a size"},
		{"GiB", "is not a size"},
		{"two", "is not a size"},
		{"nan", "not a number"},
		{"nanGiB", "not a number"},
		{"inf", "too large"},
		{"-inf", "cannot be negative"},
		{"-1GiB", "cannot be negative"},
		{"1e30GB", "too large"},
		{"1e400", "too large"},
		{"5EiB", "is not a size"},
	} {
		_, err := ParseBytes(c.in)
		if err == nil {
			t.Errorf("%q: accepted", c.in)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "\""+c.in+"\"") {
			t.Errorf("%q: %v; want %q and the input quoted", c.in, err, c.want)
		}
	}
}

func TestParseCount(t *testing.T) {
	for in, want := range map[string]int64{
		"50M": 50_000_000, "1.5B": 1_500_000_000, "7B": 7_000_000_000, "1M": 1_000_000,
		"125k": 125_000, "1000": 1000, " 2T ": 2_000_000_000_000, "0.5m": 500_000,
		"1e6": 1_000_000, "8G": 8_000_000_000, "0": 0, "0.4": 0, "2.5": 3,
	} {
		got, err := ParseCount(in)
		if err != nil || got != want {
			t.Errorf("ParseCount(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-5M", "abc", "NaN", "InfM", "5MB", "5GiB", "5 M x", "1e20"} {
		if got, err := ParseCount(in); err == nil {
			t.Errorf("ParseCount(%q) = %d, want an error", in, got)
		}
	}
}

func TestFormatBinary(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.00 KiB", 1536: "1.50 KiB", 5 << 30: "5.00 GiB", 1<<63 - 1: "8.00 EiB",
	} {
		if got := FormatBinary(n); got != want {
			t.Errorf("FormatBinary(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFormatDecimal(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 999: "999 B", 1000: "1 kB", 12_345: "12 kB", 340e6: "340 MB", 4.2e9: "4.2 GB", 5e9: "5.0 GB",
	} {
		if got := FormatDecimal(n); got != want {
			t.Errorf("FormatDecimal(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFormatCount(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0", 950: "950", 9999: "9999", 10_000: "10K", 12_345: "12.3K", 999_600: "1M",
		4_560_000: "4.56M", 50_000_000: "50M", 918_144: "918K", 6_940_798_976: "6.94B",
		7_100_000_000: "7.1B", 2e12: "2T", 1500e12: "1500T", -12_345: "-12.3K",
	} {
		if got := FormatCount(n); got != want {
			t.Errorf("FormatCount(%d) = %q, want %q", n, got, want)
		}
	}
	// What FormatCount prints, ParseCount reads back to three digits.
	for _, n := range []int64{12_345, 4_567_890, 6_940_798_976, 123_456_789_012} {
		back, err := ParseCount(FormatCount(n))
		if err != nil {
			t.Fatal(err)
		}
		if d := float64(back-n) / float64(n); d > 0.005 || d < -0.005 {
			t.Errorf("%d -> %s -> %d", n, FormatCount(n), back)
		}
	}
}
