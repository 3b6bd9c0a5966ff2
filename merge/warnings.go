package merge

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// Warning is a policy tiesmm applied that the user may not expect: printed
// once on stderr, listed again after the merge, and kept in --json.
type Warning struct {
	Code    string `json:"code"`             // stable identifier, e.g. "vocab-cut"
	Model   string `json:"model,omitempty"`  // the model's path as given
	Tensor  string `json:"tensor,omitempty"` // a tensor's name, when one is concerned
	Message string `json:"message"`
}

func (w Warning) String() string {
	s := w.Message
	if w.Tensor != "" {
		s = fmt.Sprintf("tensor %q: %s", w.Tensor, s)
	}
	if w.Model != "" {
		s = w.Model + ": " + s
	}
	return s
}

// PrintWarnings writes one line per warning.
func PrintWarnings(w io.Writer, ws []Warning) {
	for _, x := range ws {
		fmt.Fprintf(w, "warning: %s\n", x)
	}
}

// Warning codes.
const (
	WarnVocabCut         = "vocab-cut"
	WarnTensorIgnored    = "tensor-ignored"
	WarnStrayShard       = "stray-shard"
	WarnCopiedFromBase   = "copied-from-base"
	WarnZeroTaskVector   = "zero-task-vector"
	WarnContributesNone  = "contributes-nothing"
	WarnNarrowerOutDType = "narrower-out-dtype"
	WarnNormalizeGuard   = "normalize-guard"
	WarnBaseOnly         = "base-only"
	WarnVocabOrder       = "vocab-order"
)

// listed names at most listMax of names, quoted, and says how many more.
func listed(names []string) string {
	const listMax = 3
	q := make([]string, 0, listMax)
	for _, n := range names[:min(len(names), listMax)] {
		q = append(q, strconv.Quote(n))
	}
	s := strings.Join(q, ", ")
	if more := len(names) - listMax; more > 0 {
		s += fmt.Sprintf(" and %d more", more)
	}
	return s
}

// only is the tensor a warning about names concerns, if it is the only one.
func only(names []string) string {
	if len(names) == 1 {
		return names[0]
	}
	return ""
}

// plural is "1 tensor" or "3 tensors"; is is "is" or "are" to follow it.
func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

func is(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

// findWarnings lists the policies the plan applies that the user may not
// expect; it reads headers and file identities only.
func (p *Plan) findWarnings() {
	add := func(code, model, tensor, format string, args ...any) {
		w := Warning{Code: code, Model: model, Tensor: tensor, Message: fmt.Sprintf(format, args...)}
		if !slices.Contains(p.Warnings, w) { // a model given twice (or as the base) is told once
			p.Warnings = append(p.Warnings, w)
		}
	}
	for _, md := range append([]*mmapio.Model{p.Base}, p.Models...) {
		if len(md.Stray) == 0 {
			continue
		}
		names := make([]string, len(md.Stray))
		for i, f := range md.Stray {
			names[i] = filepath.Base(f)
		}
		why := "only model.safetensors is read"
		if md.Index != "" {
			why = "not named by the index " + filepath.Base(md.Index)
		}
		add(WarnStrayShard, md.Path, "", "%s in the directory %s ignored (%s): %s",
			plural(len(names), "*.safetensors file", "*.safetensors files"), is(len(names)), why, listed(names))
	}
	if len(p.Models) == 0 {
		add(WarnBaseOnly, "", "", "%s has no model besides the base: the base passes through unchanged", p.Method.Name)
	}
	if !p.Method.NoBase {
		for i, md := range p.Models {
			if sameShards(md, p.Base) && p.adapterNote(i+1) == "" && p.adapterNote(0) == "" {
				names := make([]string, len(p.Base.Files))
				for i, f := range p.Base.Files {
					names[i] = filepath.Base(f)
				}
				add(WarnZeroTaskVector, md.Path, "", "its shards are the base's own files (%s): its task vector is zero and it contributes nothing", listed(names))
			}
		}
	}
	for _, md := range p.Models {
		if p.slices != nil {
			break // a frankenmerge reads the layers the slices name
		}
		var extra []string
		for _, name := range md.Names {
			if _, ok := p.Base.Tensors[name]; !ok {
				extra = append(extra, name)
			}
		}
		switch len(extra) {
		case 0:
		case 1:
			add(WarnTensorIgnored, md.Path, extra[0], "not in the base: ignored")
		default:
			add(WarnTensorIgnored, md.Path, "", "%d tensors not in the base are ignored: %s", len(extra), listed(extra))
		}
	}
	var copied []string
	for _, j := range p.Jobs {
		if j.Copy {
			if _, passed := floatDType(j.Base.DType); !passed { // passthrough copies float layers as they are
				copied = append(copied, j.Name)
			}
			continue
		}
		p.warnCut(add, j)
	}
	const unread = "copied from the base unmerged (the fine-tunes' values are not read)"
	switch len(copied) {
	case 0:
	case 1:
		add(WarnCopiedFromBase, p.Base.Path, copied[0], "not a float tensor: "+unread)
	default:
		add(WarnCopiedFromBase, p.Base.Path, "", "%d non-float tensors are %s: %s", len(copied), unread, listed(copied))
	}
	p.warnContributions(add)
	p.warnOutDType(add)
	p.warnNormalizeGuard(add)
	if vm := p.vocab; vm != nil && len(vm.appended)-vm.listed > 1 {
		n := len(vm.appended) - vm.listed
		first := vm.appended[0].id
		add(WarnVocabOrder, "", "", "tokenizer_source union: the %d tokens appended take ids %d–%d in config order; mergekit orders them by a set and a hash map, so its ids change from run to run", n, first, first+int64(n)-1)
	}
}

// sameShards reports whether a's shards are b's files, by device and inode.
func sameShards(a, b *mmapio.Model) bool {
	if len(a.Files) != len(b.Files) {
		return false
	}
	for _, fa := range a.Files {
		sa, err := os.Stat(fa)
		if err != nil {
			return false
		}
		found := false
		for _, fb := range b.Files {
			if sb, err := os.Stat(fb); err == nil && os.SameFile(sa, sb) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// warnContributions: a model whose trim keeps nothing, or whose weight is 0,
// adds nothing to the merge (or to some tensors).
func (p *Plan) warnContributions(add func(code, model, tensor, format string, args ...any)) {
	keepsNone := map[string]bool{}
	for i, md := range p.Models {
		if p.Method.Trim && p.Method.Scope == ScopeModel && p.Need[i] == 0 {
			add(WarnContributesNone, md.Path, "", "density %v keeps no element of %d (k = ⌊n·density⌋ = 0): the model contributes nothing", p.Density[i], p.Merged)
			keepsNone[md.Path] = true
		}
	}
	if p.Method.ModelStock { // Model Stock takes no weights
		return
	}
	// Per model (a frankenmerge's models each take part in some tensors):
	// the tensors it is merged into, and those where its weight is 0.
	zero, takes := map[string][]string{}, map[string]int{}
	for _, j := range p.Jobs {
		if j.Copy {
			continue
		}
		for i, t := range j.Models {
			path := p.modelPath(t, p.Models[j.slot(i)].Path)
			takes[path]++
			if j.Params.Weights[i] == 0 {
				zero[path] = append(zero[path], j.Name)
			}
		}
	}
	for _, md := range p.inputs() {
		zero := zero[md.Path]
		switch {
		case len(zero) == 0 || keepsNone[md.Path]:
		case len(zero) == takes[md.Path]:
			add(WarnContributesNone, md.Path, only(zero), "weight 0 on every merged tensor (%d): the model contributes nothing", len(zero))
		case len(zero) == 1:
			add(WarnContributesNone, md.Path, zero[0], "weight 0 (on 1 of %d merged tensors): the model contributes nothing to it", takes[md.Path])
		default:
			add(WarnContributesNone, md.Path, "", "weight 0 on %d of %d merged tensors, to which the model contributes nothing: %s", len(zero), takes[md.Path], listed(zero))
		}
	}
}

// warnOutDType: an out dtype narrower than some merged input loses range or
// precision (F16 from F32 or BF16, BF16 from F32 or F16).
func (p *Plan) warnOutDType(add func(code, model, tensor, format string, args ...any)) {
	if p.Opts.OutDType == "" {
		return
	}
	var out kernels.DType
	var wider []string
	var tensors []string
	for _, j := range p.Jobs {
		if j.Copy || j.OutDT == kernels.F32 {
			continue
		}
		out = j.OutDT
		lossy := false
		for i, t := range append([]*mmapio.Tensor{j.Base}, j.Models...) {
			dt := j.BaseDT
			if i > 0 {
				dt = j.ModelDT[i-1]
			}
			if dt = p.storedDT(t, dt); dt != j.OutDT {
				lossy = true
				if !slices.Contains(wider, dt.String()) {
					wider = append(wider, dt.String())
				}
			}
		}
		if lossy {
			tensors = append(tensors, j.Name)
		}
	}
	if len(tensors) == 0 {
		return
	}
	slices.Sort(wider)
	what := "merged values are rounded to 8 significant bits"
	if out == kernels.F16 {
		what = "merged values are rounded to 11 significant bits, and those beyond ±65504 become ±Inf"
	}
	add(WarnNarrowerOutDType, "", only(tensors), "out dtype %s is narrower than the %s inputs of %s: %s",
		out, strings.Join(wider, " and "), plural(len(tensors), "merged tensor", "merged tensors"), what)
}

// warnCut names the rows and columns of an embedding that a merge without a
// tokenizer_source drops: every input is cut to the common submatrix.
func (p *Plan) warnCut(add func(code, model, tensor, format string, args ...any), j Job) {
	if p.vocab != nil || len(j.Shape) != 2 || !p.embedding(j.Name, j.Base) {
		return
	}
	rows, cols := j.Shape[0], j.Shape[1]
	paths := append([]string{p.Base.Path}, make([]string, len(p.Models))...)
	for i, md := range p.Models {
		paths[i+1] = md.Path
	}
	for i, t := range append([]*mmapio.Tensor{j.Base}, j.Models...) {
		paths[i] = p.modelPath(t, paths[i])
		if len(t.Shape) != 2 {
			continue
		}
		var parts []string
		switch added := t.Shape[0] - rows; {
		case added == 1:
			parts = append(parts, fmt.Sprintf("row %d (1 added token) is", rows))
		case added > 1:
			parts = append(parts, fmt.Sprintf("rows %d–%d (%d added tokens) are", rows, t.Shape[0]-1, added))
		}
		if extra := t.Shape[1] - cols; extra > 0 {
			parts = append(parts, fmt.Sprintf("columns %d–%d are", cols, t.Shape[1]-1))
		}
		if len(parts) == 0 {
			continue
		}
		add(WarnVocabCut, paths[i], j.Name, "%s dropped: every input is cut to the %d×%d all of them have; tokenizer_source: union would keep every model's tokens, aligned by token", strings.Join(parts, " and "), rows, cols)
	}
}
