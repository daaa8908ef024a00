package spread

// The generated files are committed, so that building needs no clang.
// spread.c.sha256 records the source they were made from: a test fails
// when spread.c changed without them, and .ci/run regenerates them and
// fails if they differ when clang is installed.
//go:generate go tool bpf2go -tags linux -type vip_value -type router_key -type slot -type peer_key spreadBPF spread.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu
//go:generate sh -c "sha256sum spread.c > spread.c.sha256"
