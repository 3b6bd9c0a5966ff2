package inspect

import (
	"fmt"
	"html"
	"io"
	"strings"

	"github.com/tiesmm/tiesmm/internal/units"
	"github.com/tiesmm/tiesmm/kernels"
)

// MergeFacts are what a merge decided, shown above the statistics on the
// page `tiesmm merge --report` writes.
type MergeFacts struct {
	Method string // with its preset, if any
	Output string
	Models []string // paths, in order
	Values int64    // float elements merged, per model
	// Kept and Asked are per model; nil when the method does not trim.
	Kept, Asked []uint64
	Votes       *kernels.VoteStats // nil when the method does not vote
	Warnings    []string
	// Note says how the statistics below were measured, or why there are
	// none.
	Note string
}

// section writes the merge's decisions.
func (f *MergeFacts) section(b *strings.Builder) {
	esc := html.EscapeString
	values := ""
	if f.Values > 0 {
		values = " · " + units.FormatCount(f.Values) + " values per model"
	}
	fmt.Fprintf(b, "<section class=\"merge\"><h2>The merge</h2><p class=\"note\">%s of %s into %s%s.</p>\n",
		esc(f.Method), esc(strings.Join(f.Models, ", ")), esc(f.Output), values)
	if f.Kept != nil && f.Asked != nil {
		b.WriteString("<table class=\"kept\"><tr><th>model</th><th>kept</th><th>asked for</th><th>kept / values</th></tr>")
		for i, m := range f.Models {
			if i >= len(f.Kept) || i >= len(f.Asked) {
				break
			}
			fmt.Fprintf(b, "<tr><td><i style=\"display:inline-block;width:10px;height:10px;margin-right:6px;background:%s\"></i>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>",
				modelColor(i), esc(m), units.FormatCount(int64(f.Kept[i])), units.FormatCount(int64(f.Asked[i])), pct(frac(float64(f.Kept[i]), float64(f.Values))))
		}
		b.WriteString("</table>\n")
	}
	if v := f.Votes; v != nil {
		elected := v.Positive + v.Negative
		b.WriteString("<table class=\"votes\"><tr><th>sign election</th><th>elements</th><th>of elected</th></tr>")
		row := func(label string, n int) {
			fmt.Fprintf(b, "<tr><td>%s</td><td>%s</td><td>%s</td></tr>", esc(label), units.FormatCount(int64(n)), pct(frac(float64(n), float64(elected))))
		}
		row("elected positive", v.Positive)
		row("elected negative", v.Negative)
		row("sign conflicts resolved", v.Conflicts)
		row("zero sums (sign +1, or the majority's)", v.ZeroSum)
		b.WriteString("</table>\n")
	}
	if len(f.Warnings) > 0 {
		b.WriteString("<p class=\"note\">Warnings:</p><ul>")
		for _, w := range f.Warnings {
			fmt.Fprintf(b, "<li>%s</li>", esc(w))
		}
		b.WriteString("</ul>\n")
	}
	if f.Note != "" {
		fmt.Fprintf(b, "<p class=\"note\">%s</p>\n", esc(f.Note))
	}
	b.WriteString("</section>\n")
}

// WriteMergeHTML writes the page of a merge without statistics: its
// decisions, and the note that says why there are none.
func WriteMergeHTML(w io.Writer, f *MergeFacts) error {
	var b strings.Builder
	fmt.Fprintf(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tiesmm merge: %s</title><style>%s</style></head><body><main>\n",
		html.EscapeString(f.Output), pageCSS)
	fmt.Fprintf(&b, "<h1>Merge of %d models</h1>\n", len(f.Models))
	f.section(&b)
	b.WriteString("<p class=\"note\">Written by tiesmm merge --report. Definitions: docs/inspect.md.</p>\n</main></body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
