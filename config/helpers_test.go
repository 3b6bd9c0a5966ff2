package config

import (
	"errors"
	"strings"
	"testing"
)

func asError(err error, target **Error) bool { return errors.As(err, target) }

// located flattens a (joined) error into its *Error parts.
func located(t *testing.T, err error) []*Error {
	t.Helper()
	if err == nil {
		return nil
	}
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("error without a location: %v", err)
			return
		}
		out = append(out, e)
	}
	walk(err)
	return out
}

// wantErrors checks that err holds exactly the given (line, substring) problems, in order.
func wantErrors(t *testing.T, err error, want ...any) {
	t.Helper()
	got := located(t, err)
	if len(got) != len(want)/2 {
		t.Fatalf("got %d errors, want %d:\n%v", len(got), len(want)/2, err)
	}
	for i := range got {
		line, sub := want[2*i].(int), want[2*i+1].(string)
		if got[i].Line != line || !strings.Contains(got[i].Msg, sub) {
			t.Errorf("error %d = line %d %q; want line %d containing %q", i, got[i].Line, got[i].Msg, line, sub)
		}
	}
}
