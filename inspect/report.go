package inspect

import (
	"encoding/json"
	"io"
	"sort"
)

// Format and Version name the JSON's layout (docs/inspect.md).
const (
	Format  = "tiesmm-inspect"
	Version = 1
)

// TensorRow is one tensor's figures.
type TensorRow struct {
	Name   string  `json:"name"`
	Shape  []int64 `json:"shape"`
	Layer  *int    `json:"layer"`
	Module string  `json:"module"`
	Figures
}

// LayerRow gathers the tensors of one layer; Layer is nil for the tensors
// outside the layers.
type LayerRow struct {
	Layer *int `json:"layer"`
	Figures
}

// ModuleRow gathers the tensors of one module kind, every layer's.
type ModuleRow struct {
	Module string `json:"module"`
	Figures
}

// CellRow gathers the tensors of one module kind in one layer.
type CellRow struct {
	Layer  *int   `json:"layer"`
	Module string `json:"module"`
	Figures
}

// Report is what Run measured. It marshals to the JSON of docs/inspect.md.
type Report struct {
	Format    string      `json:"format"`
	Version   int         `json:"version"`
	Density   float64     `json:"density"`
	Densities []float64   `json:"densities"`
	Base      string      `json:"base"`
	Models    []string    `json:"models"`
	Paths     []string    `json:"paths"`
	Skipped   []string    `json:"skipped"`
	Tensors   []TensorRow `json:"tensors"`
	Layers    []LayerRow  `json:"layers"`
	Modules   []ModuleRow `json:"modules"`
	Cells     []CellRow   `json:"cells"`
	Model     Figures     `json:"model"`

	// Merge, if set, is the merge the statistics are of (merge --report):
	// the page shows it first. It is not part of the JSON.
	Merge *MergeFacts `json:"-"`

	m, d   int
	layers map[int]*sums
	mods   map[string]*sums
	cells  map[cellKey]*sums
	model  *sums
}

type cellKey struct {
	layer  int
	module string
}

func newReport(names []string, opts Options, skipped []string) *Report {
	r := &Report{Format: Format, Version: Version, Density: opts.Densities[0],
		Densities: append([]float64(nil), opts.Densities...), Base: opts.Base,
		Models: append([]string(nil), names...), Paths: append([]string(nil), opts.Models...),
		Skipped: append([]string{}, skipped...), m: len(names), d: len(opts.Densities),
		layers: map[int]*sums{}, mods: map[string]*sums{}, cells: map[cellKey]*sums{},
		model: newSums(len(names), len(opts.Densities))}
	return r
}

func layerPtr(l int) *int {
	if l < 0 {
		return nil
	}
	return &l
}

// add records one tensor's sums.
func (r *Report) add(j *job, s *sums) {
	r.Tensors = append(r.Tensors, TensorRow{Name: j.name, Shape: append([]int64{}, j.shape...),
		Layer: layerPtr(j.layer), Module: j.module, Figures: s.figures(r.Densities)})
	get := func(s *sums) *sums {
		if s == nil {
			return newSums(r.m, r.d)
		}
		return s
	}
	ck := cellKey{j.layer, j.module}
	r.layers[j.layer] = get(r.layers[j.layer])
	r.mods[j.module] = get(r.mods[j.module])
	r.cells[ck] = get(r.cells[ck])
	for _, row := range []*sums{r.layers[j.layer], r.mods[j.module], r.cells[ck], r.model} {
		row.add(s)
	}
}

// finish turns the rows' sums into figures, in order: layers by number
// (the rest last), modules and cells as moduleOrder lists the kinds.
func (r *Report) finish() {
	var layers []int
	for l := range r.layers {
		layers = append(layers, l)
	}
	sort.Slice(layers, func(a, b int) bool { return lessLayer(layers[a], layers[b]) })
	for _, l := range layers {
		r.Layers = append(r.Layers, LayerRow{Layer: layerPtr(l), Figures: r.layers[l].figures(r.Densities)})
	}
	var mods []string
	for m := range r.mods {
		mods = append(mods, m)
	}
	sort.Slice(mods, func(a, b int) bool { return lessModule(mods[a], mods[b]) })
	for _, m := range mods {
		r.Modules = append(r.Modules, ModuleRow{Module: m, Figures: r.mods[m].figures(r.Densities)})
	}
	var cells []cellKey
	for c := range r.cells {
		cells = append(cells, c)
	}
	sort.Slice(cells, func(a, b int) bool {
		if cells[a].layer != cells[b].layer {
			return lessLayer(cells[a].layer, cells[b].layer)
		}
		return lessModule(cells[a].module, cells[b].module)
	})
	for _, c := range cells {
		r.Cells = append(r.Cells, CellRow{Layer: layerPtr(c.layer), Module: c.module, Figures: r.cells[c].figures(r.Densities)})
	}
	r.Model = r.model.figures(r.Densities)
}

// lessLayer orders layers by number, the tensors outside them last.
func lessLayer(a, b int) bool {
	if (a < 0) != (b < 0) {
		return b < 0
	}
	return a < b
}

func lessModule(a, b string) bool {
	ra, rb := moduleRank(a), moduleRank(b)
	if ra != rb {
		return ra < rb
	}
	return a < b
}

// WriteJSON writes the report as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}
