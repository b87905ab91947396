// Package bpf holds ironlb's eBPF programs: the C sources, and the Go
// bindings and objects bpf2go generates from them (committed, so building
// ironlb needs no clang). `make generate` rebuilds them with the pinned
// clang and flags, and sets BPF_MULTIARCH to the host's multiarch include
// folder (x86_64-linux-gnu, ...); `make verify` fails when they are stale.
package bpf

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/$BPF_MULTIARCH" -target bpfel -type vip_key -type vip_info -type service_stats -type flow -type config_entry -type drop_reason -type node_info -type ct1_entry -type backend -type backend_set -type range_key -type peer_key -type member_key -type affinity_key -type affinity_entry -type seq_shift -type cookie_state Lb lb.c
