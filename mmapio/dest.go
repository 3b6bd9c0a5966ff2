package mmapio

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// The output directory's safety rules live here: where a merge may write is
// decided on resolved file system objects (device and inode), never on how
// a path is spelled, so symlinks, ".." through symlinks and bind mounts
// cannot lead a --force merge onto its inputs or onto unrelated data.

// fileID identifies a file system object across the names it has.
type fileID struct{ dev, ino uint64 }

func statID(path string) (fileID, bool) {
	st, err := os.Stat(path)
	if err != nil {
		return fileID{}, false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{uint64(sys.Dev), uint64(sys.Ino)}, true
}

// maxLinks bounds the symlinks followed while resolving a path, as the kernel does.
const maxLinks = 255

// ResolvePath returns the absolute physical path that path names: every
// symlink in its existing part followed and ".." taken after the link it
// follows (as the kernel does, unlike filepath.Clean). The part that does
// not exist yet is appended as given. An empty path is an error.
func ResolvePath(path string) (string, error) {
	if path == "" {
		return "", errors.New("empty path")
	}
	resolved := "/"
	if !filepath.IsAbs(path) {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		if resolved, err = filepath.EvalSymlinks(wd); err != nil {
			return "", err
		}
	}
	todo := strings.Split(path, "/")
	links, missing := 0, false
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch {
		case c == "" || c == ".":
			continue
		case c == "..":
			resolved = filepath.Dir(resolved)
			continue
		}
		next := filepath.Join(resolved, c)
		if missing {
			resolved = next
			continue
		}
		st, err := os.Lstat(next)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = true
			resolved = next
			continue
		case err != nil:
			return "", err
		case st.Mode()&fs.ModeSymlink == 0:
			resolved = next
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("%s: too many levels of symbolic links", path)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			resolved = "/"
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return resolved, nil
}

// ancestors returns the existing objects of path and each of its parents up to
// the root, with the path of each (path must be resolved and absolute).
func ancestors(path string) ([]fileID, []string) {
	var ids []fileID
	var names []string
	for p := path; ; p = filepath.Dir(p) {
		if id, ok := statID(p); ok {
			ids = append(ids, id)
			names = append(names, p)
		}
		if p == "/" {
			return ids, names
		}
	}
}

// CheckDestination refuses an output directory that is, contains or lies
// inside one of the inputs (files or folders, compared by device and inode
// after resolving every link); one that is the root, the home folder, the
// current folder or a folder above it; and an existing one that is not empty
// (without force) or holds anything a merge does not write (with force). It
// creates nothing.
func CheckDestination(dest string, force bool, inputs []string) error {
	real, err := resolveDest(dest)
	if err != nil {
		return err
	}
	return checkDestination(dest, real, force, inputs)
}

// resolveDest resolves an output path, refusing an empty one.
func resolveDest(dest string) (string, error) {
	if strings.TrimSpace(dest) == "" {
		return "", errors.New("output: the path is empty: name the directory to write the merged model to")
	}
	real, err := ResolvePath(dest)
	if err != nil {
		return "", fmt.Errorf("output %s: %w", dest, err)
	}
	return real, nil
}

// checkDestination is CheckDestination on dest resolved to real.
func checkDestination(dest, real string, force bool, inputs []string) error {
	if err := checkSpecialDest(dest, real); err != nil {
		return err
	}
	destIDs, destNames := ancestors(real)
	destID, destExists := statID(real)
	for _, in := range inputs {
		inReal, err := ResolvePath(in)
		if err != nil {
			return fmt.Errorf("input %s: %w", in, err)
		}
		inID, ok := statID(inReal)
		if !ok {
			continue // missing inputs are reported where they are opened
		}
		if i := slices.Index(destIDs, inID); i >= 0 {
			if destNames[i] == real {
				return fmt.Errorf("output %s is the input %s (the same directory or file): write the merge somewhere else", dest, in)
			}
			if destNames[i] == inReal {
				return fmt.Errorf("output %s lies inside the input %s: write the merge somewhere else", dest, in)
			}
			return fmt.Errorf("output %s lies inside the input %s (the same folder as %s): write the merge somewhere else", dest, in, destNames[i])
		}
		if destExists {
			if ids, _ := ancestors(inReal); slices.Contains(ids, destID) {
				return fmt.Errorf("output %s holds the input %s: write the merge somewhere else", dest, in)
			}
		}
	}
	return checkExisting(dest, real, force)
}

// checkSpecialDest refuses the folders no merge should replace: the root, the
// home folder, the current folder and those above it.
func checkSpecialDest(shown, real string) error {
	id, ok := statID(real)
	if !ok {
		return nil
	}
	if root, ok := statID("/"); ok && id == root {
		return fmt.Errorf("output %s is the root folder: name a new directory for the merged model", shown)
	}
	if home, err := os.UserHomeDir(); err == nil {
		if h, ok := statID(home); ok && id == h {
			return fmt.Errorf("output %s is the home folder: name a new directory for the merged model", shown)
		}
	}
	if wd, err := os.Getwd(); err == nil {
		if wdReal, err := filepath.EvalSymlinks(wd); err == nil {
			if ids, _ := ancestors(wdReal); slices.Contains(ids, id) {
				return fmt.Errorf("output %s is the current folder or one above it: name a new directory for the merged model", shown)
			}
		}
	}
	return nil
}

// modelFileNames are the files a merge writes besides its shards.
var modelFileNames = []string{
	IndexName, "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
	"special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
	"chat_template.jinja", "tiesmm_config.yml", "mergekit_config.yml", "README.md",
}

// isModelFile reports whether a directory entry is one a merge writes: what
// --force may replace.
func isModelFile(e fs.DirEntry) bool {
	return e.Type().IsRegular() && isModelFileName(e.Name())
}

func isModelFileName(name string) bool {
	return slices.Contains(modelFileNames, name) || name == EMRManifestName ||
		strings.HasSuffix(name, ".safetensors") || strings.HasSuffix(name, ".safetensors.index.json")
}

// EMRManifestName is the file that marks an EMR-Merging output, whose model
// folders (EMRFolder) --force may replace along with it.
const EMRManifestName = "emr.json"

// EMRFolder reports whether name is a folder of an EMR-Merging output: the
// unified task vector, the masks, or a task's model (task-NAME).
func EMRFolder(name string) bool {
	return name == "unified" || name == "masks" || strings.HasPrefix(name, "task-") && len(name) > len("task-")
}

// listForeign returns the entries of dir that no merge writes. In an EMR
// output (one holding emr.json), its folders may hold model files.
func listForeign(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	emr := slices.ContainsFunc(entries, func(e fs.DirEntry) bool { return e.Name() == EMRManifestName && e.Type().IsRegular() })
	var foreign []string
	for _, e := range entries {
		name := e.Name()
		switch {
		case isModelFile(e):
		case emr && e.IsDir() && EMRFolder(name):
			inner, err := listForeign(filepath.Join(dir, name))
			if err != nil {
				return nil, err
			}
			for _, f := range inner {
				foreign = append(foreign, name+"/"+f)
			}
		case e.IsDir():
			foreign = append(foreign, name+"/")
		default:
			foreign = append(foreign, name)
		}
	}
	return foreign, nil
}

// foreignError lists what keeps --force from replacing a directory.
func foreignError(shown string, foreign []string) error {
	const show = 8
	list := strings.Join(foreign[:min(show, len(foreign))], ", ")
	if len(foreign) > show {
		list += fmt.Sprintf(" and %d more", len(foreign)-show)
	}
	return fmt.Errorf("output %s holds files a merge does not write (%s): --force replaces only a model directory; move them or name another directory", shown, list)
}
