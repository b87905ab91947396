/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Encapsulation: the receiving node hands a flow to the node the ring
 * chose by wrapping the packet in an outer IPv4 or IPv6 header (IPIP,
 * IPv6-in-IPv6) from this node to that one, and sending it by the FIB's
 * next hop, cached per node. A packet that no longer fits the link is
 * answered with "fragmentation needed" / "packet too big"
 * (icmp_too_big.h) when it may not be fragmented. Included by lb.c, after
 * the helpers it uses (drop, coarse_now, addr_eq). */
#ifndef IRONLB_ENCAP_H
#define IRONLB_ENCAP_H

/* next_hop finds the next hop towards node (index idx): from the cache
 * while it is fresh, else by a FIB lookup with fib's parameters (an
 * output lookup: this node originates the outer packet), which refreshes
 * it. It returns -1, or the reason to drop the packet. */
static __always_inline int next_hop(struct xdp_md *ctx, struct bpf_fib_lookup *fib, const __u32 *node,
				    __u32 idx, struct nexthop *out)
{
	__u32 in_if = ctx->ingress_ifindex;
	__u64 now = coarse_now();
	struct nexthop *nh = bpf_map_lookup_elem(&nexthops, &idx);
	if (!nh)
		return DROP_NO_NODE;
	if (nh->expires <= now || nh->in_ifindex != in_if || !addr_eq(nh->node, node)) {
		int rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), BPF_FIB_LOOKUP_OUTPUT);
		if (rc != BPF_FIB_LKUP_RET_SUCCESS)
			return DROP_FIB;
		__builtin_memcpy(nh->node, node, 16);
		__builtin_memcpy(nh->dmac, fib->dmac, ETH_ALEN);
		__builtin_memcpy(nh->smac, fib->smac, ETH_ALEN);
		nh->ifindex = fib->ifindex;
		nh->in_ifindex = in_if;
		nh->expires = now + NEXTHOP_TTL_NS;
	}
	*out = *nh;
	return -1;
}

/* retunnel passes an encapsulated packet (our own: an outer header
 * without options) on to another node, marked as a second hop: the outer
 * header's addresses, mark and hop limit are rewritten in place. */
static __always_inline int retunnel(struct xdp_md *ctx, const struct config_entry *cfg, __u8 family,
				    const struct ct1_entry *to)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct bpf_fib_lookup fib = {};
	struct nexthop hop;

	if ((void *)(eth + 1) > data_end)
		return drop(DROP_ENCAP);
	fib.ifindex = ctx->ingress_ifindex;
	if (family == FAMILY_V4) {
		struct iphdr *o = (void *)(eth + 1);
		if ((void *)(o + 1) > data_end)
			return drop(DROP_ENCAP);
		fib.family = AF_INET;
		fib.ipv4_src = cfg->self4;
		fib.ipv4_dst = to->node[0];
		fib.tot_len = bpf_ntohs(o->tot_len);
	} else {
		struct ipv6hdr *o = (void *)(eth + 1);
		if ((void *)(o + 1) > data_end)
			return drop(DROP_ENCAP);
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, cfg->self6, 16);
		__builtin_memcpy(fib.ipv6_dst, to->node, 16);
		fib.tot_len = bpf_ntohs(o->payload_len) + sizeof(struct ipv6hdr);
	}
	int reason = next_hop(ctx, &fib, to->node, to->idx, &hop);
	if (reason >= 0)
		return drop(reason);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return drop(DROP_ENCAP);
	if (family == FAMILY_V4) {
		struct iphdr *o = (void *)(eth + 1);
		if ((void *)(o + 1) > data_end)
			return drop(DROP_ENCAP);
		o->saddr = cfg->self4;
		o->daddr = to->node[0];
		o->id = bpf_htons(SECOND_HOP_ID);
		o->ttl = ENCAP_TTL;
		o->check = 0;
		o->check = ipv4_csum(o);
	} else {
		struct ipv6hdr *o = (void *)(eth + 1);
		if ((void *)(o + 1) > data_end)
			return drop(DROP_ENCAP);
		__builtin_memcpy(&o->saddr, cfg->self6, 16);
		__builtin_memcpy(&o->daddr, to->node, 16);
		o->flow_lbl[2] |= SECOND_HOP_FLOW;
		o->hop_limit = ENCAP_TTL;
	}
	__builtin_memcpy(eth->h_dest, hop.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, hop.smac, ETH_ALEN);
	if (hop.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(hop.ifindex, 0);
}

/* encap wraps the packet in an outer IP header from this node to node and
 * sends it towards it; second (HOP_*) marks a packet passed on by ring
 * history, or a SYN a cookie proved. */
static __always_inline int encap(struct xdp_md *ctx, const struct config_entry *cfg,
				 const struct flow *f, const __u32 *node, __u32 idx, int second)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup fib = {};
	__u16 inner_len;
	__u8 tos;
	int overhead;

	__u32 in_if = ctx->ingress_ifindex;
	fib.ifindex = in_if;
	if (f->family == FAMILY_V4) {
		struct iphdr *inner = data + sizeof(struct ethhdr);
		if ((void *)(inner + 1) > data_end)
			return drop(DROP_MALFORMED);
		inner_len = bpf_ntohs(inner->tot_len);
		tos = inner->tos;
		if (inner_len + IPIP4_OVERHEAD > cfg->mtu) {
			/* A router would fragment a packet without DF; we
			 * cannot, and drop it. */
			count_drop(DROP_TOO_BIG);
			if (!(inner->frag_off & IP_DF_BE) ||
			    too_big4(ctx, cfg->mtu - IPIP4_OVERHEAD) < 0)
				return XDP_DROP;
			return XDP_TX;
		}
		fib.family = AF_INET;
		fib.ipv4_src = cfg->self4;
		fib.ipv4_dst = node[0];
		fib.tot_len = inner_len + IPIP4_OVERHEAD;
		overhead = IPIP4_OVERHEAD;
	} else {
		struct ipv6hdr *inner = data + sizeof(struct ethhdr);
		if ((void *)(inner + 1) > data_end)
			return drop(DROP_MALFORMED);
		inner_len = bpf_ntohs(inner->payload_len) + sizeof(struct ipv6hdr);
		tos = (inner->priority << 4) | (inner->flow_lbl[0] >> 4);
		if (inner_len + IPIP6_OVERHEAD > cfg->mtu) {
			count_drop(DROP_TOO_BIG);
			if (too_big6(ctx, cfg->mtu - IPIP6_OVERHEAD) < 0)
				return XDP_DROP;
			return XDP_TX;
		}
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, cfg->self6, 16);
		__builtin_memcpy(fib.ipv6_dst, node, 16);
		fib.tot_len = inner_len + IPIP6_OVERHEAD;
		overhead = IPIP6_OVERHEAD;
	}
	struct nexthop hop;
	int reason = next_hop(ctx, &fib, node, idx, &hop);
	if (reason >= 0)
		return drop(reason);

	if (bpf_xdp_adjust_head(ctx, -overhead))
		return drop(DROP_ENCAP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return drop(DROP_ENCAP);
	__builtin_memcpy(eth->h_dest, hop.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, hop.smac, ETH_ALEN);

	if (f->family == FAMILY_V4) {
		struct iphdr *outer = (void *)(eth + 1);
		if ((void *)(outer + 1) > data_end)
			return drop(DROP_ENCAP);
		eth->h_proto = ETH_P_IP_BE;
		outer->version = 4;
		outer->ihl = 5;
		outer->tos = tos;
		outer->tot_len = bpf_htons(inner_len + IPIP4_OVERHEAD);
		outer->id = second & HOP_SECOND ? bpf_htons(SECOND_HOP_ID) :
			    second & HOP_PROXIED ? bpf_htons(PROXIED_ID) : 0;
		outer->frag_off = IP_DF_BE;
		outer->ttl = ENCAP_TTL;
		outer->protocol = IPPROTO_IPIP;
		outer->check = 0;
		outer->saddr = cfg->self4;
		outer->daddr = node[0];
		outer->check = ipv4_csum(outer);
	} else {
		struct ipv6hdr *outer = (void *)(eth + 1);
		if ((void *)(outer + 1) > data_end)
			return drop(DROP_ENCAP);
		eth->h_proto = ETH_P_IPV6_BE;
		outer->version = 6;
		outer->priority = tos >> 4;
		outer->flow_lbl[0] = (tos & 0xf) << 4;
		outer->flow_lbl[1] = 0;
		outer->flow_lbl[2] = (second & HOP_SECOND ? SECOND_HOP_FLOW : 0) |
				     (second & HOP_PROXIED ? PROXIED_FLOW : 0);
		outer->payload_len = bpf_htons(inner_len);
		outer->nexthdr = IPPROTO_IPV6;
		outer->hop_limit = ENCAP_TTL;
		__builtin_memcpy(&outer->saddr, cfg->self6, 16);
		__builtin_memcpy(&outer->daddr, node, 16);
	}
	if (hop.ifindex == in_if)
		return XDP_TX;
	return bpf_redirect(hop.ifindex, 0);
}

#endif
