package handover

// The generated files are committed, so that building needs no clang; .ci/run
// regenerates them when clang is present and fails if they differ.
//go:generate go tool bpf2go -tags linux -type client_key -type client_value handoverBPF handover.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu
