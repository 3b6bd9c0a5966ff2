// Package units reads and prints the sizes and counts tiesmm shows to people:
// byte sizes in binary (GiB = 2^30 bytes) or decimal (GB = 10^9 bytes) units,
// and counts of elements or parameters with K, M, B and T suffixes.
package units

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// MaxBytes is the largest size ParseBytes takes: 4 EiB, well inside int64.
const MaxBytes = 1 << 62

type suffix struct {
	name string
	mult float64
}

// byteSuffixes are tried in order, so the longer names come first.
var byteSuffixes = []suffix{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"t", 1e12}, {"b", 1e9},
}

// countSuffixes are the multipliers of a count: powers of 1000, with B (and
// G) for billion as in "7B".
var countSuffixes = []suffix{
	{"k", 1e3}, {"m", 1e6}, {"b", 1e9}, {"g", 1e9}, {"t", 1e12},
}

// ParseBytes reads a byte size: "2GiB", "512MiB", "5GB", "5B" (mergekit's
// 5 billion), "1048576". Binary suffixes (KiB, MiB, GiB, TiB) are powers of
// 1024; decimal ones (KB, MB, GB, TB) and mergekit's bare K, M, B (or G), T
// are powers of 1000. Case and spaces around the number do not matter. A bare
// number is bytes; a fraction of a byte is dropped.
func ParseBytes(s string) (int64, error) {
	t, mult := cut(s, byteSuffixes)
	v, err := strconv.ParseFloat(t, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("%q is not a size (examples: 2GiB, 512MiB, 5GB)", s)
	case math.IsNaN(v):
		return 0, fmt.Errorf("%q is not a size: not a number (examples: 2GiB, 512MiB, 5GB)", s)
	case v < 0:
		return 0, fmt.Errorf("%q is not a size: sizes cannot be negative", s)
	case err != nil || math.IsInf(v, 0) || v*mult > MaxBytes:
		return 0, fmt.Errorf("%q is too large a size (at most 4EiB)", s)
	}
	return int64(v * mult), nil
}

// ParseCount reads a count: a number with an optional K, M, B (or G) or T
// suffix, powers of 1000: "125k", "50M", "1.5B", "1e6". It is rounded to the
// nearest integer; negatives, NaN, infinities and counts over 4e18 are errors.
func ParseCount(s string) (int64, error) {
	t, mult := cut(s, countSuffixes)
	v, err := strconv.ParseFloat(t, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange), math.IsNaN(v):
		return 0, fmt.Errorf("%q is not a count (examples: 125K, 50M, 1.5B)", s)
	case v < 0:
		return 0, fmt.Errorf("%q is not a count: counts cannot be negative", s)
	case err != nil || math.IsInf(v, 0) || v*mult > 4e18:
		return 0, fmt.Errorf("%q is too large a count", s)
	}
	return int64(math.Round(v * mult)), nil
}

// cut splits the first matching suffix off s (case-insensitive, spaces
// trimmed) and returns the rest with its multiplier (1 without one).
func cut(s string, suffixes []suffix) (string, float64) {
	t := strings.ToLower(strings.TrimSpace(s))
	for _, u := range suffixes {
		if strings.HasSuffix(t, u.name) {
			return strings.TrimSpace(strings.TrimSuffix(t, u.name)), u.mult
		}
	}
	return t, 1
}

// FormatBinary prints a byte size in binary units to three decimals' worth:
// "1023 B", "1.50 KiB", "5.00 GiB".
func FormatBinary(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 5 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.2f %ciB", v, "KMGTPE"[i])
}

// FormatDecimal prints a byte size in decimal units: "512 B", "12 kB",
// "340 MB", "4.2 GB".
func FormatDecimal(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.0f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.0f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

// FormatCount prints a count the way ParseCount reads it, to three
// significant digits: 950, 9999, 12.3K, 4.56M, 50M, 7.1B. Counts under 10,000
// are printed whole.
func FormatCount(n int64) string {
	if n > -1e4 && n < 1e4 {
		return strconv.FormatInt(n, 10)
	}
	sign := ""
	f := float64(n)
	if f < 0 {
		sign, f = "-", -f
	}
	units := []suffix{{"K", 1e3}, {"M", 1e6}, {"B", 1e9}, {"T", 1e12}}
	i := 0
	for i+1 < len(units) && f >= units[i+1].mult {
		i++
	}
	v := f / units[i].mult
	s := digits3(v)
	if s == "1000" && i+1 < len(units) { // 999.6K rounds up to the next unit
		i++
		s = digits3(f / units[i].mult)
	}
	return sign + s + units[i].name
}

// digits3 prints v (≥ 1) to three significant digits, without trailing
// zeros; from 1000 on, whole.
func digits3(v float64) string {
	prec := 0
	switch {
	case v < 9.995:
		prec = 2
	case v < 99.95:
		prec = 1
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}
