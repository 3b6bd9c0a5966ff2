package config

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Explain prints, for each tensor, what the YAML sets each model's parameters to on that
// tensor ("-" where it sets nothing, so the engine's default applies), for
// `tiesmm merge --explain`. layers is the models' number of numbered layers. tiesmm's
// whole-merge switches (preset, trim_scope, ...) are printed once, first; parameters
// accepted and ignored (int8_mask) are left out.
func (c *Config) Explain(w io.Writer, tensors []string, layers int) error {
	var keys, switches []string
	used := map[string]bool{}
	for k := range c.Parameters {
		used[k] = true
	}
	for _, m := range c.Models {
		for k := range m.Parameters {
			used[k] = true
		}
	}
	for _, k := range append(append([]string(nil), paramOrder...), sortedUnknown(used)...) {
		if !used[k] {
			continue
		}
		if s, ok := specs[k]; ok && s.typ == typeAny {
			continue // accepted and ignored (int8_mask): nothing to explain
		} else if ok && s.scope == scopeTop {
			switches = append(switches, k)
		} else {
			keys = append(keys, k)
		}
	}
	head := "merge_method: " + c.Method
	if c.BaseModel != "" {
		head += "  base_model: " + c.BaseModel
	}
	for _, k := range switches {
		v, _ := c.Parameters[k].Eval("", 0)
		val := cell(v, true)
		if p := c.Parameters[k]; p.Kind == KindGradient {
			val = fmt.Sprint(p.Gradient) // a list setting (pcb's clip), not a gradient
		}
		head += "  " + k + ": " + val
	}
	if _, err := fmt.Fprintln(w, head); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(append([]string{"tensor", "layer", "model"}, keys...), "\t"))
	models := make([]string, len(c.Models))
	for i, m := range c.Models {
		models[i] = m.Path
	}
	idx := make([]int, len(c.Models))
	for i := range idx {
		idx[i] = i
	}
	if len(c.Models) == 0 {
		models, idx = []string{"(top level)"}, []int{-1}
	}
	for _, t := range tensors {
		layer, ok := LayerIndex(t)
		ls := "-"
		if ok {
			ls = strconv.Itoa(layer)
		} else {
			layer = -1
		}
		for r, i := range idx {
			name := ""
			if r == 0 {
				name = t
			}
			row := []string{name, ls, models[r]}
			for _, k := range keys {
				v, found := c.Resolve(i, k, t, layer, layers)
				row = append(row, cell(v, found))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
	}
	return tw.Flush()
}

func cell(v Param, found bool) string {
	if !found {
		return "-"
	}
	switch v.Kind {
	case KindNumber:
		return strconv.FormatFloat(v.Num, 'g', 6, 64)
	case KindString:
		return v.Str
	case KindBool:
		return strconv.FormatBool(v.Bool)
	}
	return "-"
}

func sortedUnknown(used map[string]bool) []string {
	var out []string
	for k := range used {
		if !contains(paramOrder, k) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
