package inspect

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/tiesmm/tiesmm/internal/units"
)

// TopRows is how many layers or modules the table lists after the model.
const TopRows = 10

// namedRow is a layer or module row with its label.
type namedRow struct {
	label string
	f     *Figures
}

// Ranked lists the layer and module rows, most top-k conflict first (at the
// first density; sign conflict breaks ties, then the label).
func (r *Report) ranked() []namedRow {
	var rows []namedRow
	for i := range r.Layers {
		l := &r.Layers[i]
		label := "outside layers"
		if l.Layer != nil {
			label = fmt.Sprintf("layer %d", *l.Layer)
		}
		rows = append(rows, namedRow{label, &l.Figures})
	}
	for i := range r.Modules {
		rows = append(rows, namedRow{"module " + r.Modules[i].Module, &r.Modules[i].Figures})
	}
	key := func(v Num) float64 {
		if math.IsNaN(float64(v)) {
			return -1
		}
		return float64(v)
	}
	sort.SliceStable(rows, func(a, b int) bool {
		fa, fb := rows[a].f, rows[b].f
		if x, y := key(fa.TopkConflictFrac), key(fb.TopkConflictFrac); x != y {
			return x > y
		}
		if x, y := key(fa.SignConflictFrac), key(fb.SignConflictFrac); x != y {
			return x > y
		}
		return rows[a].label < rows[b].label
	})
	return rows
}

func pct(v Num) string {
	if math.IsNaN(float64(v)) {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(v))
}

func fixed(v Num) string {
	if math.IsNaN(float64(v)) {
		return "-"
	}
	return fmt.Sprintf("%.3f", float64(v))
}

// meanCos is the mean of the pairwise cosines that exist.
func meanCos(f *Figures) Num {
	var s float64
	n := 0
	for i := range f.Cos {
		for j := i + 1; j < len(f.Cos); j++ {
			if c := float64(f.Cos[i][j]); !math.IsNaN(c) {
				s += c
				n++
			}
		}
	}
	if n == 0 {
		return Num(math.NaN())
	}
	return Num(s / float64(n))
}

func overlapFrac(f *Figures, k int) Num {
	return frac(float64(f.Trims[k].Overlap), float64(f.N))
}

func removedList(t *Trim) string {
	var parts []string
	for _, v := range t.RemovedFrac {
		if math.IsNaN(float64(v)) {
			parts = append(parts, "-")
		} else {
			parts = append(parts, fmt.Sprintf("%.1f%%", 100*float64(v)))
		}
	}
	return strings.Join(parts, " ")
}

// grid prints rows of cells, the first column left-aligned, the others
// right-aligned, two spaces apart; a nil row is a blank line.
func grid(w io.Writer, rows [][]string) {
	var widths []int
	for _, r := range rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i == 0 {
				b.WriteString(c + pad)
			} else {
				b.WriteString("  " + pad + c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// WriteTable prints the whole model, then the TopRows layers or modules with
// the most top-k conflict, the model's cosine matrix, and with several
// densities what each trims.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "%d models (%s), %s elements in %d tensors, density %g\n\n",
		len(r.Models), strings.Join(r.Models, ", "), units.FormatCount(r.Model.N), len(r.Tensors), r.Density)
	rows := [][]string{{"", "elements", "sign conflict", "top-k conflict", "overlap", "removed L1 (" + strings.Join(r.Models, " ") + ")", "mean cos"}}
	line := func(label string, f *Figures) []string {
		return []string{label, units.FormatCount(f.N), pct(f.SignConflictFrac), pct(f.TopkConflictFrac),
			pct(overlapFrac(f, 0)), removedList(&f.Trims[0]), fixed(meanCos(f))}
	}
	rows = append(rows, line("whole model", &r.Model), nil)
	for i, row := range r.ranked() {
		if i == TopRows {
			break
		}
		rows = append(rows, line(row.label, row.f))
	}
	grid(w, rows)
	fmt.Fprintf(w, "\n(below the model: the %d layers or module kinds with the most top-k conflict)\n\n", TopRows)

	rows = [][]string{append([]string{"cosine"}, r.Models...)}
	for i, name := range r.Models {
		cells := []string{name}
		for j := range r.Models {
			cells = append(cells, fixed(r.Model.Cos[i][j]))
		}
		rows = append(rows, cells)
	}
	grid(w, rows)
	if len(r.Densities) > 1 {
		fmt.Fprintln(w)
		rows = [][]string{{"density", "top-k conflict", "overlap", "removed L1 (" + strings.Join(r.Models, " ") + ")"}}
		for k, d := range r.Densities {
			t := &r.Model.Trims[k]
			rows = append(rows, []string{fmt.Sprint(d), pct(t.TopkConflictFrac), pct(overlapFrac(&r.Model, k)), removedList(t)})
		}
		grid(w, rows)
	}
	return nil
}
