package mmapio

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCheckWritable(t *testing.T) {
	d := t.TempDir()
	if err := CheckWritable(d); err != nil {
		t.Errorf("a temporary directory: %v", err)
	}
	missing := filepath.Join(d, "missing")
	if err := CheckWritable(missing); err == nil || errors.Is(err, ErrReadOnly) || !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), missing) {
		t.Errorf("a missing directory: %v", err)
	}
}

// A directory on a read-only mount (root can make one: a tmpfs mounted ro).
func TestCheckWritableReadOnlyFS(t *testing.T) {
	ro := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", ro, "tmpfs", unix.MS_RDONLY, "size=64k"); err != nil {
		t.Skipf("cannot mount a read-only tmpfs here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(ro, 0) })
	err := CheckWritable(ro)
	if !errors.Is(err, ErrReadOnly) || !errors.Is(err, unix.EROFS) {
		t.Fatalf("got %v, want ErrReadOnly wrapping EROFS", err)
	}
	if want := ro + " is read-only: it is on a read-only file system"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
}

// A directory this user may not write to. Root writes anywhere, so as root
// the check runs again in a child process as nobody.
func TestCheckWritableNotMine(t *testing.T) {
	if dir := os.Getenv("TIESMM_CHECK_NOT_MINE"); dir != "" {
		err := CheckWritable(dir)
		if !errors.Is(err, ErrReadOnly) || !errors.Is(err, unix.EACCES) {
			t.Fatalf("got %v, want ErrReadOnly wrapping EACCES", err)
		}
		if want := dir + " is read-only: it is not writable by this user"; err.Error() != want {
			t.Errorf("got %q, want %q", err, want)
		}
		return
	}
	parent, err := os.MkdirTemp("", "writable")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(parent, "ro"), 0o755); os.RemoveAll(parent) })
	dir := filepath.Join(parent, "ro")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Setenv("TIESMM_CHECK_NOT_MINE", dir)
		TestCheckWritableNotMine(t)
		return
	}
	// The test binary is copied where nobody can run it: the build's
	// directory is root's alone.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Skip(err)
	}
	exe := filepath.Join(parent, "mmapio.test")
	if err := os.WriteFile(exe, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestCheckWritableNotMine$", "-test.count=1", "-test.v")
	cmd.Dir = parent
	cmd.Env = append(os.Environ(), "TIESMM_CHECK_NOT_MINE="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		if strings.Contains(string(out), "permission denied") || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			t.Skipf("cannot run the test binary as nobody: %v\n%s", err, out)
		}
		t.Fatalf("as nobody: %v\n%s", err, out)
	} else if !strings.Contains(string(out), "--- PASS: TestCheckWritableNotMine") {
		t.Fatalf("as nobody, the check did not run:\n%s", out)
	}
}
