// Package loader loads ironlb's XDP and TC programs (bpf/), attaches them
// to the node's interfaces, pins their maps so that a restarted speaker
// takes them over without dropping a flow, and writes the entries that
// pkg/dataplane plans. Only the speaker links it: cilium/ebpf, netlink and
// the BPF object stay out of ironlbctl.
package loader
