// Package bench holds a BPF harness that measures bpf's XDP program with
// BPF_PROG_TEST_RUN and repeat, restoring each packet (see bench.c). Only
// the benchmarks import it.
package bench

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/$BPF_MULTIARCH" -target bpfel Bench bench.c
