package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/tiesmm/tiesmm/config"
)

type completionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"bash, zsh or fish."`
}

// Run prints the script, made from the commands and flags kong knows, so it
// never falls behind them. Install: bash: source <(tiesmm completion bash);
// zsh: source <(tiesmm completion zsh); fish: tiesmm completion fish | source.
func (c *completionCmd) Run(k *kong.Context) error {
	cmds := completionModel(k.Model.Node)
	switch c.Shell {
	case "bash":
		writeBash(os.Stdout, cmds)
	case "zsh":
		fmt.Fprintln(os.Stdout, "autoload -U +X bashcompinit && bashcompinit")
		writeBash(os.Stdout, cmds)
	case "fish":
		writeFish(os.Stdout, cmds)
	}
	return nil
}

type compFlag struct {
	name, help string
	enum       []string
	takesValue bool
	paths      bool // the value names a file or directory
}

type compCmd struct {
	name, help string
	flags      []compFlag
}

// pathFlags take a file or directory.
var pathFlags = map[string]bool{"base": true, "model": true, "cpu-profile": true, "html": true}

func completionModel(app *kong.Node) []compCmd {
	var cmds []compCmd
	for _, n := range app.Children {
		if n.Hidden {
			continue
		}
		c := compCmd{name: n.Name, help: n.Help}
		for _, f := range n.Flags {
			if f.Hidden {
				continue
			}
			cf := compFlag{name: f.Name, help: f.Help, takesValue: !f.IsBool(), paths: pathFlags[f.Name]}
			for _, e := range strings.Split(f.Enum, ",") {
				if e != "" {
					cf.enum = append(cf.enum, e)
				}
			}
			if f.Name == "method" {
				cf.enum = config.KnownMethods()
			}
			c.flags = append(c.flags, cf)
		}
		sort.Slice(c.flags, func(i, j int) bool { return c.flags[i].name < c.flags[j].name })
		cmds = append(cmds, c)
	}
	return cmds
}

func writeBash(w io.Writer, cmds []compCmd) {
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = c.name
	}
	fmt.Fprintf(w, `_tiesmm() {
	local cur prev flags
	cur="${COMP_WORDS[COMP_CWORD]}"
	prev="${COMP_WORDS[COMP_CWORD-1]}"
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W "%s --help --version" -- "$cur"))
		return
	fi
	case "${COMP_WORDS[1]}" in
`, strings.Join(names, " "))
	for _, c := range cmds {
		var flags []string
		for _, f := range c.flags {
			flags = append(flags, "--"+f.name)
		}
		fmt.Fprintf(w, "\t%s)\n\t\tflags=%q\n\t\tcase \"$prev\" in\n", c.name, strings.Join(append(flags, "--help"), " "))
		for _, f := range c.flags {
			switch {
			case len(f.enum) > 0:
				fmt.Fprintf(w, "\t\t--%s) COMPREPLY=($(compgen -W %q -- \"$cur\")); return ;;\n", f.name, strings.Join(f.enum, " "))
			case f.paths:
				fmt.Fprintf(w, "\t\t--%s) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n", f.name)
			case f.takesValue:
				fmt.Fprintf(w, "\t\t--%s) return ;;\n", f.name)
			}
		}
		fmt.Fprintf(w, "\t\tesac ;;\n")
	}
	fmt.Fprint(w, `	esac
	if [[ "$cur" == -* ]]; then
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
	else
		COMPREPLY=($(compgen -f -- "$cur"))
	fi
}
complete -o filenames -F _tiesmm tiesmm
`)
}

func writeFish(w io.Writer, cmds []compCmd) {
	fmt.Fprintln(w, "complete -c tiesmm -f")
	fmt.Fprintln(w, "complete -c tiesmm -l help -d 'Show help'")
	fmt.Fprintln(w, "complete -c tiesmm -n __fish_use_subcommand -l version -d 'Print the version'")
	for _, c := range cmds {
		fmt.Fprintf(w, "complete -c tiesmm -n __fish_use_subcommand -a %s -d %s\n", c.name, fishQuote(c.help))
		for _, f := range c.flags {
			line := fmt.Sprintf("complete -c tiesmm -n '__fish_seen_subcommand_from %s' -l %s", c.name, f.name)
			switch {
			case len(f.enum) > 0:
				line += " -x -a " + fishQuote(strings.Join(f.enum, " "))
			case f.paths:
				line += " -r -F"
			case f.takesValue:
				line += " -x"
			}
			fmt.Fprintf(w, "%s -d %s\n", line, fishQuote(f.help))
		}
	}
}

func fishQuote(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
}
