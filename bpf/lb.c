//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ironlb's XDP program. This first stage parses every packet, recognises
 * the VIPs the speaker wrote into the vips map and counts their traffic;
 * forwarding (Maglev, conntrack, IPIP, DNAT) builds on it. Every packet
 * still goes to the kernel (XDP_PASS): nothing is modified yet. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "include/consts.h"
#include "include/structs.h"
#include "include/maps.h"
#include "include/parse.h"

SEC("xdp")
int ironlb_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct flow f = {};

	if (parse_flow(data, data_end, &f) < 0)
		return XDP_PASS;

	struct vip_key key = {
		.port = f.dport,
		.proto = f.proto,
		.family = f.family,
	};
	__builtin_memcpy(key.addr, f.dst, sizeof(key.addr));
	struct vip_info *vip = bpf_map_lookup_elem(&vips, &key);
	if (!vip)
		return XDP_PASS;

	__u32 id = vip->service_id;
	struct service_stats *st = bpf_map_lookup_elem(&stats, &id);
	if (st) {
		st->packets++;
		st->bytes += data_end - data;
	}
	return XDP_PASS;
}

char __license[] SEC("license") = "Dual BSD/GPL";
