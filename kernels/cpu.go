package kernels

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/klauspost/cpuid/v2"

	"github.com/tiesmm/tiesmm/internal/units"
)

// CPUReport describes this CPU as the kernels see it: vendor and brand, the
// features the kernel sets use or could use, the cache sizes, the sets it
// runs, and the one named by selected ("" or "auto": the one Best picks).
func CPUReport(selected string) string {
	var b strings.Builder
	brand := cpuid.CPU.BrandName
	if brand == "" {
		brand = "unknown"
	}
	vendor := cpuid.CPU.VendorString
	if vendor == "" {
		vendor = cpuid.CPU.VendorID.String()
	}
	fmt.Fprintf(&b, "cpu:       %s (%s), %s/%s, %d logical cores\n", brand, vendor, runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	var feats []string
	var ids []cpuid.FeatureID
	switch runtime.GOARCH {
	case "amd64", "386":
		ids = []cpuid.FeatureID{cpuid.AVX2, cpuid.F16C, cpuid.FMA3, cpuid.AVX512F, cpuid.AVX512BW, cpuid.AVX512VL, cpuid.AVX512BF16, cpuid.AVX512FP16}
	case "arm64":
		ids = []cpuid.FeatureID{cpuid.ASIMD, cpuid.FP, cpuid.FPHP, cpuid.ASIMDHP, cpuid.BF16, cpuid.SVE}
	}
	for _, id := range ids {
		mark := "-"
		if cpuid.CPU.Supports(id) {
			mark = "+"
		}
		feats = append(feats, mark+id.String())
	}
	if len(feats) > 0 {
		fmt.Fprintf(&b, "features:  %s\n", strings.Join(feats, " "))
	}
	c := caches()
	fmt.Fprintf(&b, "caches:    L1d %s, L2 %s, L3 %s (%s)\n", sizeString(c.l1d), sizeString(c.l2), sizeString(c.l3), c.source)
	fmt.Fprintf(&b, "block L2:  %s per core assumed for block sizing\n", sizeString(L2Bytes()))
	fmt.Fprintf(&b, "kernels:   %s\n", strings.Join(setNames(Available()), ", "))
	auto := Best().Name
	if selected != "" && selected != "auto" {
		if s, err := Lookup(selected); err == nil {
			fmt.Fprintf(&b, "selected:  %s (auto would pick %s)\n", s.Name, auto)
		} else {
			fmt.Fprintf(&b, "selected:  error: %v (auto would pick %s)\n", err, auto)
		}
	} else {
		fmt.Fprintf(&b, "selected:  %s (auto)\n", auto)
	}
	return b.String()
}

func setNames(s []*Set) []string {
	n := make([]string, len(s))
	for i, k := range s {
		n[i] = k.Name
	}
	return n
}

// L2Bytes is the L2 cache size of one core, to size blocks by; 1 MiB when
// it cannot be found out.
func L2Bytes() int {
	if l2 := caches().l2; l2 > 0 {
		return l2
	}
	return 1 << 20
}

// L3Bytes is the size of the last-level cache, 0 if unknown: buffers
// meant to come from RAM must be larger.
func L3Bytes() int { return max(caches().l3, 0) }

type cacheSizes struct {
	l1d, l2, l3 int // bytes; ≤ 0 unknown
	source      string
}

// caches reads the sizes once: from cpuid, and on Linux from sysfs for the
// levels cpuid does not report (it reports none on arm64).
var caches = sync.OnceValue(func() cacheSizes {
	c := cacheSizes{cpuid.CPU.Cache.L1D, cpuid.CPU.Cache.L2, cpuid.CPU.Cache.L3, "cpuid"}
	if c.l1d > 0 && c.l2 > 0 && c.l3 > 0 {
		return c
	}
	if runtime.GOOS != "linux" {
		return c
	}
	s := sysfsCaches("/sys/devices/system/cpu/cpu0/cache")
	used := false
	for _, p := range []struct {
		dst *int
		v   int
	}{{&c.l1d, s.l1d}, {&c.l2, s.l2}, {&c.l3, s.l3}} {
		if *p.dst <= 0 && p.v > 0 {
			*p.dst, used = p.v, true
		}
	}
	if used {
		c.source = "cpuid and sysfs"
		if cpuid.CPU.Cache.L1D <= 0 && cpuid.CPU.Cache.L2 <= 0 && cpuid.CPU.Cache.L3 <= 0 {
			c.source = "sysfs"
		}
	}
	return c
})

// sysfsCaches reads Linux's cache description of one CPU: index*/level,
// type (Data, Instruction, Unified) and size ("48K", "2048K", "32M").
func sysfsCaches(dir string) cacheSizes {
	var c cacheSizes
	idx, _ := filepath.Glob(filepath.Join(dir, "index*"))
	for _, d := range idx {
		read := func(name string) string {
			b, _ := os.ReadFile(filepath.Join(d, name))
			return strings.TrimSpace(string(b))
		}
		size := parseCacheSize(read("size"))
		typ := read("type")
		if size <= 0 || typ == "Instruction" {
			continue
		}
		switch read("level") {
		case "1":
			c.l1d = size
		case "2":
			c.l2 = size
		case "3":
			c.l3 = size
		}
	}
	return c
}

// parseCacheSize reads a sysfs cache size ("48K", "2048K", "32M": binary units).
func parseCacheSize(s string) int {
	if strings.HasSuffix(s, "K") || strings.HasSuffix(s, "M") || strings.HasSuffix(s, "G") {
		s += "iB"
	}
	n, err := units.ParseBytes(s)
	if err != nil || n <= 0 {
		return 0
	}
	return int(n)
}

func sizeString(n int) string {
	if n <= 0 {
		return "unknown"
	}
	return units.FormatBinary(int64(n))
}
