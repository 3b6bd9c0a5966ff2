package merge

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// A frankenmerge (mergekit's slices) builds the output's layers slice after
// slice, each from layer ranges of its sources: output layer o of a slice
// starting at output layer s reads layer First+(o−s) of every source. The
// embeddings come from the first slice's sources, the final norm and the
// output head from the last slice's.

// Slice is one output slice.
type Slice struct {
	Sources []SliceSource
	Base    int   // the source that is θ₀ (an index into Sources), −1 for none
	Models  []int // the sources merged, in order
}

// SliceSource is one model of a slice and its layers [First, End).
type SliceSource struct {
	Model      string
	First, End int
}

// Len is the slice's number of layers.
func (s Slice) Len() int { return s.Sources[0].End - s.Sources[0].First }

// lead is the source that lays out the slice's tensors: its base, else its
// first model.
func (s Slice) lead() int {
	if s.Base >= 0 {
		return s.Base
	}
	return s.Models[0]
}

// LayerSource is where an output layer comes from: layer Index of slice
// Slice.
type LayerSource struct{ Slice, Index int }

// NewSlicePlan is NewPlan for a frankenmerge: opts.Base lays out the
// output's extra files (config.json). Each slice merges its own models, as
// many as it lists; the plan's Models (opts.Models is set to them) are every
// model a slice merges, each once, in the order they first appear.
func NewSlicePlan(opts Options, m Method, sl []Slice, resolve SliceResolver) (*Plan, error) {
	if opts.Vocab.Source != "" {
		return nil, fmt.Errorf("tokenizer_source %s with slices of different layer ranges is not supported yet: its rows are aligned per model of a whole-model merge", opts.Vocab.Source)
	}
	if m.OwnPath == PathEMR {
		return nil, errors.New("emr keeps each fine-tune as a task over all its layers, which slices of different models do not have: merge whole models with the models form")
	}
	if m.Trim && m.Scope == ScopeModel || m.GlobalMajority {
		return nil, errors.New("trim_scope: model (the paper preset) takes one threshold per model over all its layers, which slices of different models do not have: use trim_scope: tensor")
	}
	if m.OwnPath == PathPCB && m.PCB.Scope == ScopeModel {
		for k, s := range sl {
			if len(s.Models) != len(sl[0].Models) {
				return nil, fmt.Errorf("pcb with scope: model ranks each task over every layer it merges, but slices[%d] merges %d models and slices[0] %d, so the tasks differ from slice to slice: use scope: tensor", k, len(s.Models), len(sl[0].Models))
			}
		}
	}
	for k, s := range sl {
		if !m.NoBase && s.Base < 0 {
			return nil, fmt.Errorf("slices[%d]: %s merges onto a base model, which is not among the slice's sources: add it with the layer_range to use", k, m.Name)
		}
		if err := checkOwnModels(m, len(s.Models)); err != nil {
			return nil, fmt.Errorf("slices[%d]: %w", k, err)
		}
	}
	opts.Models = mergedModels(sl)
	open := func(p *Plan) error {
		p.slices = sl
		if len(p.Adapters) > 0 {
			return errors.New("LoRA adapters as inputs of slices are not supported yet: merge the adapter into its base first")
		}
		have := map[string]bool{}
		for _, md := range p.inputs() {
			have[filepath.Clean(md.Path)] = true
		}
		for _, s := range sl {
			for _, src := range s.Sources {
				if have[filepath.Clean(src.Model)] {
					continue
				}
				if _, _, ok := config.SplitModelRef(src.Model); ok {
					return fmt.Errorf("model %s: LoRA adapters as inputs of slices are not supported yet: merge the adapter into its base first", src.Model)
				}
				md, err := mmapio.OpenModel(src.Model)
				if err != nil {
					return fmt.Errorf("model %s: %w", src.Model, err)
				}
				have[filepath.Clean(src.Model)] = true
				p.others = append(p.others, md)
			}
		}
		return nil
	}
	p, err := newPlan(opts, m, open, func(p *Plan, outDT *kernels.DType) []error {
		return p.sliceJobs(outDT, resolve)
	})
	if err != nil {
		return nil, err
	}
	if err := p.sliceConfig(); err != nil {
		return nil, err
	}
	return p, nil
}

// mergedModels lists every model the slices merge, each once, in the order
// they first appear.
func mergedModels(sl []Slice) []string {
	var out []string
	for _, s := range sl {
		for _, j := range s.Models {
			path := s.Sources[j].Model
			if !slices.ContainsFunc(out, func(o string) bool { return filepath.Clean(o) == filepath.Clean(path) }) {
				out = append(out, path)
			}
		}
	}
	return out
}

// slotOf is the index in the plan's Models of the model at path.
func (p *Plan) slotOf(path string) int {
	return slices.IndexFunc(p.Models, func(md *mmapio.Model) bool { return filepath.Clean(md.Path) == filepath.Clean(path) })
}

// inputs are every model the plan reads, each once.
func (p *Plan) inputs() []*mmapio.Model {
	out := []*mmapio.Model{p.Base}
	for _, md := range append(slices.Clone(p.Models), p.others...) {
		if !slices.ContainsFunc(out, func(o *mmapio.Model) bool { return o.Path == md.Path }) {
			out = append(out, md)
		}
	}
	return out
}

// model is the opened model at path.
func (p *Plan) model(path string) *mmapio.Model {
	for _, md := range p.inputs() {
		if filepath.Clean(md.Path) == filepath.Clean(path) {
			return md
		}
	}
	return nil
}

// modelPath names the model of input t: path, the plan's model in that
// place, or in a frankenmerge the model whose shards hold t.
func (p *Plan) modelPath(t *mmapio.Tensor, path string) string {
	if p.slices == nil {
		return path
	}
	for _, md := range p.inputs() {
		if slices.Contains(md.Files, t.File) {
			return md.Path
		}
	}
	return path
}

// modelLayers is a model's number of layers: one more than its highest.
func modelLayers(md *mmapio.Model) int {
	n := 0
	for _, name := range md.Names {
		if l, ok := config.LayerIndex(name); ok {
			n = max(n, l+1)
		}
	}
	return n
}

// sliceJobs makes the jobs of a frankenmerge: the first slice's embeddings,
// every slice's layers, the last slice's final tensors.
func (p *Plan) sliceJobs(outDT *kernels.DType, resolve SliceResolver) []error {
	var errs []error
	for k, s := range p.slices {
		for j, src := range s.Sources {
			if n := modelLayers(p.model(src.Model)); src.End > n {
				errs = append(errs, fmt.Errorf("slices[%d].sources[%d]: layer_range [%d, %d] of %s, which has %d layers", k, j, src.First, src.End, src.Model, n))
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	add := func(job Job, jerrs []error) {
		errs = append(errs, jerrs...)
		if len(jerrs) == 0 {
			p.Jobs = append(p.Jobs, job)
		}
	}
	first, last := p.slices[0], p.slices[len(p.slices)-1]
	for _, name := range p.model(first.Sources[first.lead()].Model).Names {
		if _, ok := config.LayerIndex(name); !ok && preTensor(name) {
			add(p.sliceJob(0, name, sameName(first, name), 0, outDT, resolve))
		}
	}
	o := 0
	for k, s := range p.slices {
		lead := p.model(s.Sources[s.lead()].Model)
		for i := range s.Len() {
			p.layerMap = append(p.layerMap, LayerSource{Slice: k, Index: i})
			t := config.SlicePosition(i, s.Len())
			for _, name := range lead.Names {
				prefix, l, suffix, ok := config.SplitLayer(name)
				if !ok || l != s.Sources[s.lead()].First+i {
					continue
				}
				in := make([]string, len(s.Sources))
				for j, src := range s.Sources {
					in[j] = prefix + strconv.Itoa(src.First+i) + suffix
				}
				add(p.sliceJob(k, prefix+strconv.Itoa(o)+suffix, in, t, outDT, resolve))
			}
			o++
		}
	}
	p.Layers = o
	for _, name := range p.postNames(last) {
		add(p.sliceJob(len(p.slices)-1, name, p.postInputs(last, name), 0, outDT, resolve))
	}
	return errs
}

// preTensor reports whether a tensor outside the layers comes before them
// (embeddings), and so from the first slice.
func preTensor(name string) bool {
	return !strings.Contains(name, "lm_head") && (vocabTensor(name) || strings.Contains(name, "embed"))
}

func sameName(s Slice, name string) []string {
	in := make([]string, len(s.Sources))
	for j := range in {
		in[j] = name
	}
	return in
}

// postNames are the last slice's tensors after the layers: its lead's, and
// the output head if any source has one (a source without it gives its
// embeddings: tied weights).
func (p *Plan) postNames(s Slice) []string {
	var names []string
	for _, name := range p.model(s.Sources[s.lead()].Model).Names {
		if _, ok := config.LayerIndex(name); !ok && !preTensor(name) {
			names = append(names, name)
		}
	}
	const head = "lm_head.weight"
	if slices.Contains(names, head) {
		return names
	}
	for _, src := range s.Sources {
		if _, ok := p.model(src.Model).Tensors[head]; ok {
			return append(names, head)
		}
	}
	return names
}

// postInputs names each source's input of a final tensor: itself, or for an
// output head the source lacks, its embeddings.
func (p *Plan) postInputs(s Slice, name string) []string {
	in := sameName(s, name)
	if !strings.Contains(name, "lm_head") {
		return in
	}
	for j, src := range s.Sources {
		md := p.model(src.Model)
		if _, ok := md.Tensors[name]; ok {
			continue
		}
		for _, e := range md.Names {
			if _, layered := config.LayerIndex(e); !layered && preTensor(e) && vocabTensor(e) {
				in[j] = e
				break
			}
		}
	}
	return in
}

// sliceJob makes output tensor out of slice k, its sources reading the
// tensors named in (one per source), at gradient position t.
func (p *Plan) sliceJob(k int, out string, in []string, t float64, outDT *kernels.DType, resolve SliceResolver) (Job, []error) {
	s := p.slices[k]
	lead := s.lead()
	lmd := p.model(s.Sources[lead].Model)
	bt, ok := lmd.Tensors[in[lead]]
	if !ok {
		return Job{}, []error{fmt.Errorf("%s: tensor %q (for %q of slices[%d]): missing", lmd.Path, in[lead], out, k)}
	}
	job := Job{Name: out, Base: bt, Shape: bt.Shape, Elements: bt.Elements(), OutDType: bt.DType}
	bdt, isFloat := floatDType(bt.DType)
	if !isFloat {
		if !slices.Contains(copyable, bt.DType) {
			return job, []error{fmt.Errorf("%s: tensor %q: dtype %s is not supported (merged: F32, F16, BF16; copied: integer and bool)", bt.File, in[lead], bt.DType)}
		}
		job.Copy = true
		return job, nil
	}
	job.BaseDT, job.OutDT = bdt, bdt
	if outDT != nil {
		job.OutDT = *outDT
		job.OutDType = outDT.String()
	}
	var errs []error
	merged := make([]string, len(s.Models))
	for i, j := range s.Models {
		md := p.model(s.Sources[j].Model)
		merged[i] = in[j]
		mt, ok := md.Tensors[in[j]]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: tensor %q (for %q of slices[%d]): missing, though %s has it", md.Path, in[j], out, k, lmd.Path))
			continue
		}
		dt, err := p.inputDType(out, bt, mt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		job.Models = append(job.Models, mt)
		job.ModelDT = append(job.ModelDT, dt)
		job.Slots = append(job.Slots, p.slotOf(s.Sources[j].Model))
	}
	if len(errs) == 0 && p.embedding(out, bt) {
		if err := p.alignRows(&job); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return job, errs
	}
	tp, err := resolve(k, out, merged, t)
	if err != nil {
		return job, []error{fmt.Errorf("tensor %q: %w", out, err)}
	}
	job.Params = tp
	p.passThrough(&job)
	return job, p.checkParams(out, tp)
}

// passThrough turns a passthrough job whose output is its one input
// unchanged (no scale, the same dtype) into a copy of the input's bytes.
func (p *Plan) passThrough(j *Job) {
	if p.Method.Name != "passthrough" || j.Rows != nil || len(j.Models) != 1 || j.Params.Weights[0] != 1 || j.OutDT != j.ModelDT[0] {
		return
	}
	j.Copy, j.Base, j.BaseDT, j.OutDType = true, j.Models[0], j.ModelDT[0], j.Models[0].DType
	j.Models, j.ModelDT, j.Slots = nil, nil, nil
}

// sliceConfig rewrites config.json for the output's layers:
// num_hidden_layers, and every list with one entry per layer, each output
// layer's entry taken from the config of the model its layer comes from.
func (p *Plan) sliceConfig() error {
	if p.config == nil {
		return nil
	}
	own, ok := p.config["num_hidden_layers"].(float64)
	configs := map[string]map[string]any{}
	for key, v := range p.config {
		list, isList := v.([]any)
		if !ok || !isList || len(list) != int(own) {
			continue
		}
		out := make([]any, len(p.layerMap))
		for o, ls := range p.layerMap {
			s := p.slices[ls.Slice]
			src := s.Sources[s.lead()]
			cfg, seen := configs[src.Model]
			if !seen {
				var err error
				if cfg, err = readConfig(p.model(src.Model).Dir); err != nil {
					return fmt.Errorf("model %s: %w", src.Model, err)
				}
				configs[src.Model] = cfg
			}
			theirs, _ := cfg[key].([]any)
			l := src.First + ls.Index
			if l >= len(theirs) {
				return fmt.Errorf("model %s: config.json: %s lists %d layers, but layer %d is merged into the output's layer %d", src.Model, key, len(theirs), l, o)
			}
			out[o] = theirs[l]
		}
		p.config[key] = out
	}
	p.config["num_hidden_layers"] = len(p.layerMap)
	if dt, err := kernels.ParseDType(p.Opts.OutDType); p.Opts.OutDType != "" && err == nil {
		p.config["torch_dtype"] = dt.TorchName() // copied layers too: the dtype asked for
	}
	return nil
}

// Frankenmerge reports whether the plan lays out the output from slices.
func (p *Plan) Frankenmerge() bool { return p.slices != nil }

// DescribeLayers prints the output's layer map (a frankenmerge's; nothing
// for a merge of whole models).
func (p *Plan) DescribeLayers(w io.Writer) { p.describeLayers(w) }

// describeLayers prints the output's layers, a line per run of layers from
// the same slice: "0–23 ← A 0–23", "24–47 ← B 8–31, C 8–31 (base D 0–23)".
func (p *Plan) describeLayers(w io.Writer) {
	o := 0
	for _, s := range p.slices {
		n := s.Len()
		var parts []string
		span := func(src SliceSource) string { return src.Model + " " + layerSpan(src.First, src.End) }
		for _, j := range s.Models {
			parts = append(parts, span(s.Sources[j]))
		}
		line := strings.Join(parts, ", ")
		if s.Base >= 0 && !slices.Contains(s.Models, s.Base) {
			line += " (base " + span(s.Sources[s.Base]) + ")"
		}
		fmt.Fprintf(w, "layers:   %s ← %s\n", layerSpan(o, o+n), line)
		o += n
	}
}

// layerSpan prints layers [first, end): "3" or "0–23".
func layerSpan(first, end int) string {
	if end-first == 1 {
		return strconv.Itoa(first)
	}
	return fmt.Sprintf("%d–%d", first, end-1)
}

// ExplainSlices prints, for each output tensor of a frankenmerge, every
// input it reads (model and tensor) with the weight (passthrough: scale)
// and, for the methods that sparsify, the density the merge uses, defaults
// included.
func (p *Plan) ExplainSlices(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	weight := "weight"
	if p.Method.Name == "passthrough" {
		weight = "scale"
	}
	head := []string{"tensor", "model", "input", weight}
	if p.Method.Sparsifies() {
		head = append(head, "density")
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, j := range p.Jobs {
		if j.Copy {
			fmt.Fprintf(tw, "%s\t%s\t%s\tcopied\n", j.Name, p.modelPath(j.Base, p.Base.Path), j.Base.Name)
			continue
		}
		for i, t := range j.Models {
			name := j.Name
			if i > 0 {
				name = ""
			}
			row := []string{name, p.modelPath(t, p.Models[j.slot(i)].Path), t.Name, fmt.Sprint(j.Params.Weights[i])}
			if p.Method.Sparsifies() {
				row = append(row, fmt.Sprint(j.Params.Density[i]))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
	}
	tw.Flush()
}
