package kernels

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseCacheSize(t *testing.T) {
	for s, want := range map[string]int{"48K": 48 << 10, "2048K": 2 << 20, "32M": 32 << 20, "1G": 1 << 30, "512": 512, "": 0, "xK": 0, "-1K": 0} {
		if got := parseCacheSize(s); got != want {
			t.Errorf("parseCacheSize(%q) = %d, want %d", s, got, want)
		}
	}
}

// TestSysfsCaches reads a fake sysfs tree laid out as Linux lays out
// /sys/devices/system/cpu/cpu0/cache.
func TestSysfsCaches(t *testing.T) {
	dir := t.TempDir()
	for i, c := range []struct{ level, typ, size string }{
		{"1", "Data", "64K"}, {"1", "Instruction", "32K"}, {"2", "Unified", "1024K"}, {"3", "Unified", "32M"},
	} {
		d := filepath.Join(dir, "index"+string(rune('0'+i)))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, v := range map[string]string{"level": c.level, "type": c.typ, "size": c.size + "\n"} {
			if err := os.WriteFile(filepath.Join(d, name), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := sysfsCaches(dir)
	if c.l1d != 64<<10 || c.l2 != 1<<20 || c.l3 != 32<<20 {
		t.Fatalf("sysfsCaches = %+v, want L1d 64 KiB, L2 1 MiB, L3 32 MiB", c)
	}
	if c := sysfsCaches(filepath.Join(dir, "missing")); c.l1d != 0 || c.l2 != 0 || c.l3 != 0 {
		t.Fatalf("missing dir: %+v", c)
	}
}

func TestCPUReport(t *testing.T) {
	r := CPUReport("")
	if got := CPUReport("go"); !strings.Contains(got, "selected:  go (auto would pick "+Best().Name+")") {
		t.Errorf("CPUReport(go) does not name go as selected:\n%s", got)
	}
	if got := CPUReport("no-such-kernel"); !strings.Contains(got, "selected:  error:") {
		t.Errorf("CPUReport(no-such-kernel) reports no error:\n%s", got)
	}
	for _, want := range []string{"cpu:", "caches:", "kernels:", "selected:", Available()[0].Name} {
		if !strings.Contains(r, want) {
			t.Errorf("CPUReport lacks %q:\n%s", want, r)
		}
	}
	if l2 := L2Bytes(); l2 < 64<<10 || l2 > 1<<30 {
		t.Errorf("L2Bytes() = %d, implausible", l2)
	}
	t.Logf("\n%s", r)
}
