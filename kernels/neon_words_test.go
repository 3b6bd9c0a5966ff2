package kernels

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/arch/arm64/arm64asm"
)

// neonWordOps are the instructions internal/asmgen encodes as WORDs:
// each must occur, and so be checked, at least once.
var neonWordOps = []string{
	"FADD", "FSUB", "FMUL", "FDIV", "FABS", "FNEG",
	"FCMGT", "FCMLT", "FCMEQ", "FCMGE", "CMHS", "CMHI", "UCVTF",
	"FCVTL", "FCVTL2", "FCVTN", "FCVTN2", "FADDP", "CMGT", "CMLT", "UMAX", "UMIN", "UMINV",
}

// TestNEONWords decodes every WORD in the arm64 assembly and checks that it
// is the instruction its comment names: Go's assembler cannot check them,
// since it has no mnemonics for these. It runs on every GOARCH.
func TestNEONWords(t *testing.T) {
	seen := map[string]int{}
	files, err := filepath.Glob("*_arm64.s")
	if err != nil || len(files) == 0 {
		t.Fatalf("no arm64 assembly found: %v", err)
	}
	word := regexp.MustCompile(`^\s*WORD\s+\$0x([0-9a-fA-F]{8})\s*(?://\s*(.*))?$`)
	n := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(src), "\n") {
			if !strings.Contains(line, "WORD") {
				continue
			}
			m := word.FindStringSubmatch(line)
			if m == nil {
				t.Errorf("%s:%d: a WORD not of the form `WORD $0x%%08x // INSTRUCTION`: %q", f, i+1, line)
				continue
			}
			n++
			enc, _ := strconv.ParseUint(m[1], 16, 32)
			var b [4]byte
			binary.LittleEndian.PutUint32(b[:], uint32(enc))
			inst, err := arm64asm.Decode(b[:])
			if err != nil {
				t.Errorf("%s:%d: %#08x does not decode: %v", f, i+1, enc, err)
				continue
			}
			if got, want := normalizeARM(inst.String()), normalizeARM(m[2]); got != want {
				t.Errorf("%s:%d: %#08x is %q, the comment says %q", f, i+1, enc, inst.String(), m[2])
			}
			seen[inst.Op.String()]++
		}
	}
	if n == 0 {
		t.Fatal("no WORD found in the arm64 assembly")
	}
	for _, op := range neonWordOps {
		if seen[op] == 0 {
			t.Errorf("no %s WORD in the arm64 assembly", op)
		}
	}
	t.Logf("%d WORDs checked", n)
}

// normalizeARM makes ARM assembly text comparable: upper case, single
// spaces, none after commas, #0.0 written #0.
func normalizeARM(s string) string {
	s = strings.ToUpper(strings.Join(strings.Fields(s), " "))
	s = strings.ReplaceAll(s, ", ", ",")
	return strings.ReplaceAll(s, "#0.0", "#0")
}
