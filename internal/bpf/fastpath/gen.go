package fastpath

// The generated files are committed, so that building needs no clang.
// fastpath.c.sha256 records the source they were made from: a test fails
// when fastpath.c changed without them, and .ci/run regenerates them and
// fails if they differ when clang is installed.
//go:generate go tool bpf2go -tags linux -type decision_key -type decision6_key -type decision -type seen_value -type iface_state fastpathBPF fastpath.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu
//go:generate sh -c "sha256sum fastpath.c > fastpath.c.sha256"
