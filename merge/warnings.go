package merge

import (
	"fmt"
	"io"
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
