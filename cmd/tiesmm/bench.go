package main

import (
	"context"
	"errors"
)

type benchCmd struct{}

func (b *benchCmd) Run(context.Context) error { return errors.New("not yet") }
