//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* A harness for measuring ironlb's XDP program with BPF_PROG_TEST_RUN and
 * repeat. The kernel reuses the packet the program wrote for the next
 * repetition, so a program that rewrites (DNAT) or encapsulates would be
 * measured on the wrong path after the first one. bench_xdp runs the
 * program, then undoes what it did: it moves the head back and restores
 * the first bytes. With new_flows set, it also gives each repetition its
 * own source port and the low half of its source address from a 32-bit
 * counter, so every packet of a run is a flow never seen before (a
 * conntrack miss and insert; the benchmark counts the misses). With new_flows 2 it runs nothing between save and restore:
 * the harness's own cost. With new_flows 4, as with 1, and the SYN
 * cookie program (bench_cookie, below) restores the frame. With new_flows 3 (a flood) every (mix+1)th
 * repetition is the frame's own flow, timed (est_ns, est_count: from
 * before the program to after the restore, the same for every figure),
 * and the others are flows never seen before, as with 1: the cost of an
 * established flow's packets while a flood arrives. floor_xdp is the least a load balancer does
 * for a packet it does not serve: parse Ethernet, IPv4 and TCP, and one
 * hash lookup (in vips). Never loaded by the speaker. */
#include "../lb.c"

#define SAVE 64
/* new_flows 4: the whole SYN bench_cookie puts back (an IPv4 SYN with
 * Linux's 20 bytes of options). */
#define SYN_LEN 74

struct bench_cfg {
	__u32 new_flows;
	__u32 counter;
	__u8 saved[SAVE]; /* not on the stack: the program needs it */
	__u32 mix;        /* new_flows 3: never-seen flows per established packet */
	__u32 pad;
	__u64 est_ns;     /* new_flows 3: time of the established packets */
	__u64 est_count;
	__u64 t0;         /* when the timed packet went in (the stack is full) */
	__u8 syn[88];     /* new_flows 4: the frame as it came (SYN_LEN bytes) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_cfg);
} bench SEC(".maps");

SEC("xdp")
int bench_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;

	struct bench_cfg *bc = bpf_map_lookup_elem(&bench, &zero);
	if (!bc || data + SAVE > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(bc->saved, data, SAVE);
	/* Nothing more on the stack than before: with ironlb_xdp's frame
	 * it is at the verifier's limit (TestBenchHarnessLoads). */
	if (bc->new_flows == 3) {
		bc->counter++;
		if (bc->counter % (bc->mix + 1) == 0)
			bc->t0 = bpf_ktime_get_ns();
	}
	if (bc->new_flows == 4) {
		if (data + SYN_LEN > data_end)
			return XDP_ABORTED;
		__builtin_memcpy(bc->syn, data, SYN_LEN);
	}
	if (bc->new_flows == 1 || bc->new_flows == 4 || (bc->new_flows == 3 && bc->counter % (bc->mix + 1) != 0)) {
		/* The TCP source port of an IPv4 packet without options,
		 * and the last two bytes of its source address. */
		if (bc->new_flows != 3)
			bc->counter++;
		__u16 port = bc->counter;
		__u16 host = bc->counter >> 16;
		__builtin_memcpy(data + 14 + 20, &port, 2);
		__builtin_memcpy(data + 14 + 14, &host, 2);
	}
	__u32 before = data_end - data;

	int verdict = bc->new_flows == 2 ? XDP_PASS : ironlb_xdp(ctx);

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	int delta = (int)(data_end - data) - (int)before;
	if (delta != 0 && bpf_xdp_adjust_head(ctx, delta))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + SAVE > data_end)
		return XDP_ABORTED;
	bc = bpf_map_lookup_elem(&bench, &zero);
	if (!bc)
		return XDP_ABORTED;
	__builtin_memcpy(data, bc->saved, SAVE);
	if (bc->new_flows == 3 && bc->counter % (bc->mix + 1) == 0) {
		bc->est_ns += bpf_ktime_get_ns() - bc->t0;
		bc->est_count++;
	}
	return verdict;
}

/* bench_cookie stands in for the SYN-cookie program in the harness's
 * progs array: ironlb_xdp tail-calls it for a SYN while cookies are on,
 * and a tail call does not come back to bench_xdp. It runs ironlb_cookie,
 * which answers with a SYN-ACK (XDP_TX), then puts back the SYN that
 * bench_xdp saved (new_flows 4: a SYN_LEN frame, each repetition a flow
 * never seen before). */
SEC("xdp")
int bench_cookie(struct xdp_md *ctx)
{
	__u32 zero = 0;
	int verdict = ironlb_cookie(ctx);
	struct bench_cfg *bc = bpf_map_lookup_elem(&bench, &zero);
	if (!bc || bc->new_flows != 4)
		return XDP_ABORTED;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int delta = SYN_LEN - (int)(data_end - data);
	if (delta != 0 && bpf_xdp_adjust_tail(ctx, delta))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + SYN_LEN > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, bc->syn, SYN_LEN);
	return verdict;
}

SEC("xdp")
int floor_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end || eth->h_proto != ETH_P_IP_BE)
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_TCP)
		return XDP_PASS;
	struct tcphdr *tcp = (void *)ip + ip->ihl * 4;
	if ((void *)(tcp + 1) > data_end)
		return XDP_PASS;
	struct vip_key k = {.port = tcp->dest, .proto = IPPROTO_TCP, .family = FAMILY_V4};
	k.addr[0] = ip->daddr;
	if (bpf_map_lookup_elem(&vips, &k))
		return XDP_PASS;
	return XDP_PASS;
}
