package kernels

// One generator writes every kernel set's assembly and Go declarations, for
// all architectures, whatever the host.
//go:generate go run ./internal/asmgen
