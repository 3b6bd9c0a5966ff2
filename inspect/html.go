package inspect

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"

	"github.com/tiesmm/tiesmm/internal/units"
)

// palette colours the models, in order (then again).
var palette = []string{"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"}

func modelColor(i int) string { return palette[i%len(palette)] }

const pageCSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;background:#f6f7f9;margin:0}
main{max-width:1120px;margin:0 auto;padding:24px 28px 40px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:16px;margin:0 0 2px}
p.sub{color:#555;margin:0 0 16px}
p.note{color:#666;font-size:12.5px;margin:4px 0 0}
section{background:#fff;border:1px solid #e3e5e8;border-radius:8px;padding:16px 18px;margin:0 0 16px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:0 0 16px}
.card{background:#fff;border:1px solid #e3e5e8;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px}
.card span{color:#666;font-size:12px}
.row{display:flex;gap:16px;flex-wrap:wrap}
.row section{flex:1;min-width:320px}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{padding:4px 8px;text-align:right;border-bottom:1px solid #eee;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{color:#555;font-weight:600}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
.legend{display:flex;gap:14px;flex-wrap:wrap;font-size:12.5px;margin:6px 0 0}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px}
`

// WriteHTML writes one self-contained page (inline SVG, no script, nothing
// fetched): the whole model's figures, a heat map of conflict by layer and
// module, each model's norm across layers, the pairwise cosine and overlap
// matrices, trimmed mass against density, and the table's rows.
func (r *Report) WriteHTML(w io.Writer) error {
	var b strings.Builder
	esc := html.EscapeString
	fmt.Fprintf(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tiesmm inspect: %s</title><style>%s</style></head><body><main>\n",
		esc(strings.Join(r.Models, ", ")), pageCSS)
	fmt.Fprintf(&b, "<h1>Interference between %d fine-tunes</h1>\n", len(r.Models))
	fmt.Fprintf(&b, "<p class=\"sub\">base %s · %s elements in %d tensors · density %g</p>\n",
		esc(r.Base), units.FormatCount(r.Model.N), len(r.Tensors), r.Density)
	if r.Merge != nil {
		r.Merge.section(&b)
	}

	m := &r.Model
	b.WriteString("<div class=\"cards\">")
	card := func(v, label string) {
		fmt.Fprintf(&b, "<div class=\"card\"><b>%s</b><span>%s</span></div>", esc(v), esc(label))
	}
	card(pct(m.SignConflictFrac), "sign conflict (all elements)")
	card(pct(m.TopkConflictFrac), fmt.Sprintf("top-k conflict at density %g", r.Density))
	card(pct(overlapFrac(m, 0)), "kept by two or more")
	card(fixed(meanCos(m)), "mean pairwise cosine")
	var removed float64
	for _, v := range m.RemovedFrac {
		removed += float64(v)
	}
	card(pct(Num(removed/float64(len(m.RemovedFrac)))), "L1 mass trimmed (mean)")
	b.WriteString("</div>\n")

	b.WriteString("<div class=\"row\">")
	r.heatSection(&b, "Sign conflict by layer and module", "Elements where one model's τ is positive and another's negative, as a fraction of the elements.",
		func(f *Figures) Num { return f.SignConflictFrac })
	r.heatSection(&b, fmt.Sprintf("Top-k conflict at density %g", r.Density), "Elements that two or more trims keep with opposite signs: what TIES's sign election resolves.",
		func(f *Figures) Num { return f.TopkConflictFrac })
	b.WriteString("</div>\n")

	r.normSection(&b)

	b.WriteString("<div class=\"row\">")
	cos := func(i, j int) Num { return m.Cos[i][j] }
	r.matrixSection(&b, "Cosine similarity of task vectors", "Whole model: Σ τᵢτⱼ / (‖τᵢ‖·‖τⱼ‖).", cos, -1, 1)
	t0 := &m.Trims[0]
	jac := func(i, j int) Num {
		inter := float64(t0.PairOverlap[i][j])
		return frac(inter, float64(t0.Kept[i]+t0.Kept[j])-inter)
	}
	r.matrixSection(&b, fmt.Sprintf("Overlap of the kept sets at density %g", r.Density), "Jaccard index |Kᵢ ∩ Kⱼ| / |Kᵢ ∪ Kⱼ| of the elements each trim keeps.", jac, 0, 1)
	b.WriteString("</div>\n")

	r.trimSection(&b)
	r.rowsSection(&b)
	by := "tiesmm inspect"
	if r.Merge != nil {
		by = "tiesmm merge --report"
	}
	fmt.Fprintf(&b, "<p class=\"note\">Written by %s. Definitions: docs/inspect.md.</p>\n</main></body></html>\n", by)
	_, err := io.WriteString(w, b.String())
	return err
}

// legend lists the models with their colours.
func (r *Report) legend(b *strings.Builder) {
	b.WriteString("<div class=\"legend\">")
	for i, name := range r.Models {
		fmt.Fprintf(b, "<span><i style=\"background:%s\"></i>%s</span>", modelColor(i), html.EscapeString(name))
	}
	b.WriteString("</div>")
}

// heat is a sequential colour from pale yellow (0) to dark red (1).
func heat(v float64) string {
	stops := [][3]float64{{255, 250, 230}, {253, 204, 138}, {240, 120, 60}, {190, 30, 45}, {110, 10, 40}}
	v = math.Max(0, math.Min(1, v))
	x := v * float64(len(stops)-1)
	i := min(int(x), len(stops)-2)
	t := x - float64(i)
	c := [3]int{}
	for k := range 3 {
		c[k] = int(math.Round(stops[i][k] + t*(stops[i+1][k]-stops[i][k])))
	}
	return fmt.Sprintf("rgb(%d,%d,%d)", c[0], c[1], c[2])
}

// diverging is blue (−1), white (0), red (+1).
func diverging(v float64) string {
	v = math.Max(-1, math.Min(1, v))
	a, b := [3]float64{255, 255, 255}, [3]float64{178, 24, 43}
	if v < 0 {
		b = [3]float64{33, 102, 172}
		v = -v
	}
	return fmt.Sprintf("rgb(%d,%d,%d)", int(math.Round(a[0]+v*(b[0]-a[0]))), int(math.Round(a[1]+v*(b[1]-a[1]))), int(math.Round(a[2]+v*(b[2]-a[2]))))
}

// heatSection draws value(cell) for every layer (columns) and module kind
// (rows), coloured on a scale from 0 to the largest value.
func (r *Report) heatSection(b *strings.Builder, title, note string, value func(*Figures) Num) {
	var layers []int
	seen := map[int]bool{}
	var mods []string
	seenMod := map[string]bool{}
	cell := map[cellKey]*Figures{}
	var top float64
	for i := range r.Cells {
		c := &r.Cells[i]
		if c.Layer == nil {
			continue
		}
		if !seen[*c.Layer] {
			seen[*c.Layer] = true
			layers = append(layers, *c.Layer)
		}
		if !seenMod[c.Module] {
			seenMod[c.Module] = true
			mods = append(mods, c.Module)
		}
		cell[cellKey{*c.Layer, c.Module}] = &c.Figures
		if v := float64(value(&c.Figures)); !math.IsNaN(v) {
			top = math.Max(top, v)
		}
	}
	// Modules in their usual order (cells come sorted by layer first).
	ordered := mods[:0:0]
	for _, k := range moduleOrder {
		if seenMod[k] {
			ordered = append(ordered, k)
		}
	}
	for _, k := range mods {
		if moduleRank(k) == len(moduleOrder) {
			ordered = append(ordered, k)
		}
	}
	mods = ordered
	fmt.Fprintf(b, "<section><h2>%s</h2><p class=\"note\">%s</p>", html.EscapeString(title), html.EscapeString(note))
	if len(layers) == 0 {
		b.WriteString("<p class=\"note\">No tensor names a layer (<code>.layers.N.</code>).</p></section>")
		return
	}
	if top == 0 {
		top = 1
	}
	const left, topPad, width = 84, 8, 470
	cw := math.Min(72, float64(width-left-8)/float64(len(layers)))
	ch := 20.0
	h := topPad + ch*float64(len(mods)) + 48
	fmt.Fprintf(b, "<svg class=\"heatmap\" width=\"%d\" height=\"%.0f\" viewBox=\"0 0 %d %.0f\" role=\"img\">", width, h, width, h)
	for y, mod := range mods {
		fmt.Fprintf(b, "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\" fill=\"#444\">%s</text>",
			left-6, topPad+ch*float64(y)+ch/2+4, html.EscapeString(mod))
		for x, l := range layers {
			f := cell[cellKey{l, mod}]
			fill, tip := "#f0f0f0", fmt.Sprintf("layer %d %s: no tensor", l, mod)
			if f != nil {
				v := float64(value(f))
				if !math.IsNaN(v) {
					fill = heat(v / top)
				}
				tip = fmt.Sprintf("layer %d %s: %s", l, mod, pct(Num(v)))
			}
			fmt.Fprintf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" stroke=\"#fff\" stroke-width=\"%.1f\"><title>%s</title></rect>",
				left+cw*float64(x), topPad+ch*float64(y), cw, ch, fill, math.Min(1, cw/8), html.EscapeString(tip))
		}
	}
	// Layer ticks: about ten.
	step := max(1, (len(layers)+9)/10)
	yAxis := topPad + ch*float64(len(mods))
	for x := 0; x < len(layers); x += step {
		fmt.Fprintf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"middle\" fill=\"#666\">%d</text>",
			left+cw*(float64(x)+0.5), yAxis+13, layers[x])
	}
	fmt.Fprintf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">layer</text>",
		left+cw*float64(len(layers))/2, yAxis+27)
	// Colour scale.
	lx := float64(width) - 190
	for k := range 30 {
		fmt.Fprintf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"4\" height=\"8\" fill=\"%s\"/>", lx+4*float64(k), yAxis+33, heat(float64(k)/29))
	}
	fmt.Fprintf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\" fill=\"#666\">0</text>", lx-3, yAxis+41)
	fmt.Fprintf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"#666\">%s</text>", lx+124, yAxis+41, pct(Num(top)))
	b.WriteString("</svg></section>")
}

// niceTicks are about n round values covering [lo, hi].
func niceTicks(lo, hi float64, n int) []float64 {
	if hi <= lo {
		hi = lo + 1
	}
	raw := (hi - lo) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, s := range []float64{1, 2, 2.5, 5, 10} {
		if s*mag >= raw {
			step = s * mag
			break
		}
	}
	var ticks []float64
	for v := math.Ceil(lo/step-1e-9) * step; v <= hi+step*1e-9; v += step {
		ticks = append(ticks, v)
	}
	return ticks
}

func tickLabel(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 1e4 || a < 1e-3:
		return strings.Replace(fmt.Sprintf("%.1e", v), "e-0", "e-", 1)
	}
	return fmt.Sprintf("%.4g", v)
}

// lineChart draws one polyline per series over x in [x0, x1], y from 0.
type series struct {
	color string
	label string
	x, y  []float64
	dash  bool
	width float64 // of the line; series drawn first are wider, so lines on top of each other all show
}

func lineChart(b *strings.Builder, class string, width, height int, x0, x1, ymax float64, xlabel, ylabel string, xfmt func(float64) string, xticks []float64, ss []series) {
	const left, right, top, bottom = 62, 14, 10, 38
	pw, ph := float64(width-left-right), float64(height-top-bottom)
	if ymax <= 0 {
		ymax = 1
	}
	yt := niceTicks(0, ymax, 5)
	ymax = math.Max(ymax, yt[len(yt)-1])
	px := func(x float64) float64 {
		if x1 == x0 {
			return left + pw/2
		}
		return left + pw*(x-x0)/(x1-x0)
	}
	py := func(y float64) float64 { return top + ph*(1-y/ymax) }
	fmt.Fprintf(b, "<svg class=\"%s\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">", class, width, height, width, height)
	for _, v := range yt {
		fmt.Fprintf(b, "<line x1=\"%d\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>", left, left+pw, py(v), py(v))
		fmt.Fprintf(b, "<text x=\"%d\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\" fill=\"#666\">%s</text>", left-5, py(v)+3, tickLabel(v))
	}
	for _, v := range xticks {
		fmt.Fprintf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ccc\"/>", px(v), px(v), top+ph, top+ph+4)
		fmt.Fprintf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"middle\" fill=\"#666\">%s</text>", px(v), top+ph+15, xfmt(v))
	}
	fmt.Fprintf(b, "<line x1=\"%d\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#999\"/>", left, left+pw, top+ph, top+ph)
	fmt.Fprintf(b, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">%s</text>", left+pw/2, height-4, html.EscapeString(xlabel))
	fmt.Fprintf(b, "<text transform=\"translate(13 %.1f) rotate(-90)\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">%s</text>", top+ph/2, html.EscapeString(ylabel))
	for _, s := range ss {
		var pts []string
		for i := range s.x {
			if !math.IsNaN(s.y[i]) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.x[i]), py(s.y[i])))
			}
		}
		dash := ""
		if s.dash {
			dash = " stroke-dasharray=\"5 4\""
		}
		if len(pts) > 1 {
			fmt.Fprintf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\" stroke-opacity=\"0.9\" stroke-linejoin=\"round\"%s points=\"%s\"/>",
				s.color, s.width, dash, strings.Join(pts, " "))
		}
		if len(pts) <= 40 {
			for i := range s.x {
				if !math.IsNaN(s.y[i]) {
					fmt.Fprintf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\"><title>%s: %s</title></circle>",
						px(s.x[i]), py(s.y[i]), s.width+1.5, s.color, html.EscapeString(s.label), tickLabel(s.y[i]))
				}
			}
		}
	}
	b.WriteString("</svg>")
}

// lineWidth makes the first models' lines wider, so that equal series
// still show every colour.
func lineWidth(i, n int) float64 { return 1.5 + 2.5*float64(n-1-i) }

// normSection plots each model's L2 norm per layer.
func (r *Report) normSection(b *strings.Builder) {
	b.WriteString("<section><h2>Task-vector norm by layer</h2><p class=\"note\">‖τ‖₂ of each model over the tensors of each layer.</p>")
	var xs []float64
	for _, l := range r.Layers {
		if l.Layer != nil {
			xs = append(xs, float64(*l.Layer))
		}
	}
	if len(xs) == 0 {
		b.WriteString("<p class=\"note\">No tensor names a layer.</p></section>")
		return
	}
	var ss []series
	var ymax float64
	for i, name := range r.Models {
		s := series{color: modelColor(i), label: name, x: xs, width: lineWidth(i, len(r.Models))}
		for _, l := range r.Layers {
			if l.Layer != nil {
				s.y = append(s.y, l.L2[i])
				ymax = math.Max(ymax, l.L2[i])
			}
		}
		ss = append(ss, s)
	}
	x0, x1 := xs[0], xs[len(xs)-1]
	var ticks []float64
	step := math.Max(1, math.Ceil((x1-x0)/12))
	for v := x0; v <= x1; v += step {
		ticks = append(ticks, v)
	}
	lineChart(b, "norms", 1060, 240, x0, x1, ymax*1.05, "layer", "‖τ‖₂", func(v float64) string { return fmt.Sprintf("%.0f", v) }, ticks, ss)
	r.legend(b)
	b.WriteString("</section>\n")
}

// matrixSection draws a models × models matrix coloured by value.
func (r *Report) matrixSection(b *strings.Builder, title, note string, value func(i, j int) Num, lo, hi float64) {
	n := len(r.Models)
	fmt.Fprintf(b, "<section><h2>%s</h2><p class=\"note\">%s</p>", html.EscapeString(title), html.EscapeString(note))
	const left, top = 96, 10
	c := math.Min(76, 380/float64(n))
	w, h := left+c*float64(n)+8, top+c*float64(n)+52
	fmt.Fprintf(b, "<svg class=\"matrix\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\">", w, h, w, h)
	for i := range n {
		fmt.Fprintf(b, "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\" fill=\"%s\">%s</text>", left-6, top+c*float64(i)+c/2+4, modelColor(i), html.EscapeString(short(r.Models[i], 14)))
		fmt.Fprintf(b, "<text transform=\"translate(%.1f %.1f) rotate(-30)\" font-size=\"11\" text-anchor=\"end\" fill=\"%s\">%s</text>",
			left+c*float64(i)+c/2+4, top+c*float64(n)+14, modelColor(i), html.EscapeString(short(r.Models[i], 14)))
		for j := range n {
			v := float64(value(i, j))
			fill, txt := "#f0f0f0", "–"
			if !math.IsNaN(v) {
				if lo < 0 {
					fill = diverging(v)
				} else {
					fill = heat((v - lo) / (hi - lo))
				}
				txt = fmt.Sprintf("%.2f", v)
			}
			fmt.Fprintf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" stroke=\"#fff\"><title>%s · %s: %s</title></rect>",
				left+c*float64(j), top+c*float64(i), c, c, fill, html.EscapeString(r.Models[i]), html.EscapeString(r.Models[j]), txt)
			if c >= 30 {
				color := "#222"
				if math.Abs(v) > 0.6 && !math.IsNaN(v) {
					color = "#fff"
				}
				fmt.Fprintf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\" fill=\"%s\">%s</text>", left+c*float64(j)+c/2, top+c*float64(i)+c/2+4, color, txt)
			}
		}
	}
	b.WriteString("</svg></section>")
}

func short(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// trimSection plots the fraction of L1 mass each trim removes, and the
// top-k conflict, against density.
func (r *Report) trimSection(b *strings.Builder) {
	b.WriteString("<section><h2>Trimmed mass against density</h2><p class=\"note\">Fraction of each task vector's L1 mass outside its top-k (solid, one per model), and top-k conflict as a fraction of the elements (dashed grey). ")
	if len(r.Densities) == 1 {
		b.WriteString("One density measured: run with <code>--densities 0.1,0.2,0.5</code> for a curve.")
	}
	b.WriteString("</p>")
	var ss []series
	ds := append([]float64(nil), r.Densities...)
	order := make([]int, len(ds))
	for i := range order {
		order[i] = i
	}
	// Sorted by density for the lines.
	for i := 1; i < len(order); i++ {
		for j := i; j > 0 && ds[order[j]] < ds[order[j-1]]; j-- {
			order[j], order[j-1] = order[j-1], order[j]
		}
	}
	var xs []float64
	for _, k := range order {
		xs = append(xs, ds[k])
	}
	for i, name := range r.Models {
		s := series{color: modelColor(i), label: name, x: xs, width: lineWidth(i, len(r.Models))}
		for _, k := range order {
			s.y = append(s.y, float64(r.Model.Trims[k].RemovedFrac[i]))
		}
		ss = append(ss, s)
	}
	c := series{color: "#777", label: "top-k conflict", x: xs, dash: true, width: 1.5}
	for _, k := range order {
		c.y = append(c.y, float64(r.Model.Trims[k].TopkConflictFrac))
	}
	ss = append(ss, c)
	lineChart(b, "trim", 1060, 240, 0, 1, 1, "density (fraction kept)", "fraction", func(v float64) string { return fmt.Sprintf("%g", v) },
		[]float64{0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1}, ss)
	r.legend(b)
	b.WriteString("</section>\n")
}

// rowsSection is the terminal table's rows.
func (r *Report) rowsSection(b *strings.Builder) {
	esc := html.EscapeString
	fmt.Fprintf(b, "<section><h2>Most conflict</h2><p class=\"note\">The %d layers or module kinds with the most top-k conflict at density %g.</p><table><tr><th></th><th>elements</th><th>sign conflict</th><th>top-k conflict</th><th>overlap</th><th>removed L1 (%s)</th><th>mean cos</th></tr>",
		TopRows, r.Density, esc(strings.Join(r.Models, " ")))
	row := func(label string, f *Figures) {
		fmt.Fprintf(b, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>", esc(label), units.FormatCount(f.N),
			pct(f.SignConflictFrac), pct(f.TopkConflictFrac), pct(overlapFrac(f, 0)), esc(removedList(&f.Trims[0])), fixed(meanCos(f)))
	}
	row("whole model", &r.Model)
	for i, nr := range r.ranked() {
		if i == TopRows {
			break
		}
		row(nr.label, nr.f)
	}
	b.WriteString("</table></section>\n")
}
