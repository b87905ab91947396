/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* "Fragmentation needed" and "packet too big": the answer to a packet
 * that no longer fits the link once encapsulated. The frame is rewritten
 * in place into the ICMP error, from the VIP to the client, quoting the
 * IP header and the first 8 bytes after it, and sent back (XDP_TX). */
#ifndef IRONLB_ICMP_TOO_BIG_H
#define IRONLB_ICMP_TOO_BIG_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "consts.h"
#include "csum.h"

/* linux/icmp.h pulls in libc headers: the little we need, here. */
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMPV6_PKT_TOOBIG 2

struct icmp4_frag {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u16 unused;
	__u16 mtu;
};

struct icmp6_too_big {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u32 mtu;
};

#define QUOTE4 (sizeof(struct iphdr) + 8)
#define QUOTE6 (sizeof(struct ipv6hdr) + 8)
#define ICMP_HDR 8

static __always_inline __u32 sum16(const void *p, int words)
{
	const __u16 *w = p;
	__u32 c = 0;
#pragma unroll
	for (int i = 0; i < words; i++)
		c += w[i];
	return c;
}

/* too_big4 turns an IPv4 frame (header without options) into an ICMP
 * fragmentation-needed error advertising mtu. */
static __always_inline int too_big4(struct xdp_md *ctx, __u16 mtu)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)ip + QUOTE4 > data_end || ip->ihl != 5)
		return -1;
	struct ethhdr e = *eth;
	__u32 client = ip->saddr, vip = ip->daddr;
	int len = data_end - data;
	if (bpf_xdp_adjust_tail(ctx, (int)(sizeof(struct ethhdr) + QUOTE4) - len))
		return -1;
	if (bpf_xdp_adjust_head(ctx, -(int)(sizeof(struct iphdr) + ICMP_HDR)))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	/* The quoted header and 8 bytes are already where they belong. */
	if (data + sizeof(struct ethhdr) + sizeof(struct iphdr) + ICMP_HDR + QUOTE4 > data_end)
		return -1;
	eth = data;
	__builtin_memcpy(eth->h_dest, e.h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, e.h_dest, ETH_ALEN);
	eth->h_proto = ETH_P_IP_BE;
	struct iphdr *out = (void *)(eth + 1);
	out->version = 4;
	out->ihl = 5;
	out->tos = 0;
	out->tot_len = bpf_htons(sizeof(struct iphdr) + ICMP_HDR + QUOTE4);
	out->id = 0;
	out->frag_off = 0;
	out->ttl = ICMP_ERROR_TTL;
	out->protocol = IPPROTO_ICMP;
	out->check = 0;
	out->saddr = vip;
	out->daddr = client;
	out->check = ipv4_csum(out);
	struct icmp4_frag *icmp = (void *)(out + 1);
	icmp->type = ICMP_DEST_UNREACH;
	icmp->code = ICMP_FRAG_NEEDED;
	icmp->checksum = 0;
	icmp->unused = 0;
	icmp->mtu = bpf_htons(mtu);
	icmp->checksum = csum_fold(sum16(icmp, (ICMP_HDR + QUOTE4) / 2));
	return 0;
}

/* too_big6 turns an IPv6 frame into an ICMPv6 packet-too-big error
 * advertising mtu. */
static __always_inline int too_big6(struct xdp_md *ctx, __u32 mtu)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	if ((void *)ip6 + QUOTE6 > data_end)
		return -1;
	struct ethhdr e = *eth;
	struct in6_addr client = ip6->saddr, vip = ip6->daddr;
	int len = data_end - data;
	if (bpf_xdp_adjust_tail(ctx, (int)(sizeof(struct ethhdr) + QUOTE6) - len))
		return -1;
	if (bpf_xdp_adjust_head(ctx, -(int)(sizeof(struct ipv6hdr) + ICMP_HDR)))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + ICMP_HDR + QUOTE6 > data_end)
		return -1;
	eth = data;
	__builtin_memcpy(eth->h_dest, e.h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, e.h_dest, ETH_ALEN);
	eth->h_proto = ETH_P_IPV6_BE;
	struct ipv6hdr *out = (void *)(eth + 1);
	out->version = 6;
	out->priority = 0;
	out->flow_lbl[0] = 0;
	out->flow_lbl[1] = 0;
	out->flow_lbl[2] = 0;
	out->payload_len = bpf_htons(ICMP_HDR + QUOTE6);
	out->nexthdr = IPPROTO_ICMPV6;
	out->hop_limit = ICMP_ERROR_TTL;
	out->saddr = vip;
	out->daddr = client;
	struct icmp6_too_big *icmp = (void *)(out + 1);
	icmp->type = ICMPV6_PKT_TOOBIG;
	icmp->code = 0;
	icmp->checksum = 0;
	icmp->mtu = bpf_htonl(mtu);
	/* Pseudo-header: addresses, upper-layer length, next header. */
	__u32 c = sum16(&out->saddr, 16) + bpf_htons(ICMP_HDR + QUOTE6) + bpf_htons(IPPROTO_ICMPV6);
	c += sum16(icmp, (ICMP_HDR + QUOTE6) / 2);
	icmp->checksum = csum_fold(c);
	return 0;
}

#endif
