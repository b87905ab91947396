/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ICMP errors about a VIP's flow: a router on the client's path answers a
 * reply (sent from the VIP, by direct server return) with "fragmentation
 * needed", "unreachable" or "time exceeded", addressed to the VIP. It must
 * reach the endpoint that sent the reply, so it is steered with the flow
 * it quotes, and on the endpoint's node rewritten as if the endpoint had
 * been the sender. */
#ifndef IRONLB_ICMP_STEER_H
#define IRONLB_ICMP_STEER_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "consts.h"
#include "structs.h"
#include "csum.h"

#define ICMP_HDR_LEN 8

/* icmp_flow fills cf with the client flow the ICMP error whose IP header
 * is at l3 quotes, when it is an error about a TCP or UDP packet the VIP
 * (outer->dst) sent. IPv4 headers with options are left to the kernel:
 * constant offsets keep every access provable to the verifier. */
static __always_inline int icmp_flow(void *l3, void *data_end, const struct flow *outer,
				     struct flow *cf)
{
	__u8 *icmp;
	if (outer->family == FAMILY_V4) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end || ip->ihl != 5)
			return -1;
		icmp = l3 + sizeof(struct iphdr);
		/* The quote must lie within the packet, not just the frame. */
		void *end = l3 + bpf_ntohs(ip->tot_len);
		if ((void *)(icmp + ICMP_HDR_LEN + sizeof(struct iphdr) + 4) > data_end ||
		    (void *)(icmp + ICMP_HDR_LEN + sizeof(struct iphdr) + 4) > end)
			return -1;
		if (icmp[0] != 3 && icmp[0] != 11) /* unreachable, time exceeded */
			return -1;
		struct iphdr *q = (void *)(icmp + ICMP_HDR_LEN);
		if (q->version != 4 || q->ihl != 5 || q->saddr != outer->dst[0])
			return -1;
		if (q->protocol != IPPROTO_TCP && q->protocol != IPPROTO_UDP)
			return -1;
		__u16 *ports = (void *)(q + 1);
		if ((void *)(ports + 2) > data_end)
			return -1;
		cf->family = FAMILY_V4;
		cf->proto = q->protocol;
		cf->src[0] = q->daddr;
		cf->dst[0] = q->saddr;
		cf->sport = ports[1];
		cf->dport = ports[0];
		return 0;
	}
	struct ipv6hdr *ip6 = l3;
	if ((void *)(ip6 + 1) > data_end)
		return -1;
	icmp = l3 + sizeof(struct ipv6hdr);
	void *end6 = (void *)(ip6 + 1) + bpf_ntohs(ip6->payload_len);
	if ((void *)(icmp + ICMP_HDR_LEN + sizeof(struct ipv6hdr) + 4) > data_end ||
	    (void *)(icmp + ICMP_HDR_LEN + sizeof(struct ipv6hdr) + 4) > end6)
		return -1;
	if (icmp[0] < 1 || icmp[0] > 4) /* unreachable, too big, time, parameter */
		return -1;
	struct ipv6hdr *q6 = (void *)(icmp + ICMP_HDR_LEN);
	if (q6->nexthdr != IPPROTO_TCP && q6->nexthdr != IPPROTO_UDP)
		return -1;
	__builtin_memcpy(cf->src, &q6->daddr, 16);
	__builtin_memcpy(cf->dst, &q6->saddr, 16);
	if (cf->dst[0] != outer->dst[0] || cf->dst[1] != outer->dst[1] ||
	    cf->dst[2] != outer->dst[2] || cf->dst[3] != outer->dst[3])
		return -1;
	__u16 *ports = (void *)(q6 + 1);
	if ((void *)(ports + 2) > data_end)
		return -1;
	cf->family = FAMILY_V6;
	cf->proto = q6->nexthdr;
	cf->sport = ports[1];
	cf->dport = ports[0];
	return 0;
}

/* icmp_to_backend rewrites an ICMP error about cf for the endpoint be:
 * outer destination, quoted source address and port, and the checksums. */
static __always_inline int icmp_to_backend(void *data, void *data_end,
					   const struct flow *cf, const struct backend *be)
{
	__u8 *icmp;
	if (cf->family == FAMILY_V4) {
		struct iphdr *ip = data + sizeof(struct ethhdr);
		if ((void *)(ip + 1) > data_end || ip->ihl != 5)
			return -1;
		icmp = data + sizeof(struct ethhdr) + sizeof(struct iphdr);
		if ((void *)(icmp + ICMP_HDR_LEN + sizeof(struct iphdr) + 4) > data_end)
			return -1;
		__u16 *icsum = (void *)(icmp + 2);
		if ((void *)(icsum + 1) > data_end)
			return -1;
		struct iphdr *q = (void *)(icmp + ICMP_HDR_LEN);
		__u16 *qports = (void *)(q + 1);
		if ((void *)(q + 1) > data_end || (void *)(qports + 2) > data_end)
			return -1;
		__u32 vip = q->saddr;
		csum_replace4(&ip->check, ip->daddr, be->addr[0]);
		ip->daddr = be->addr[0];
		__u16 old_qcheck = q->check;
		csum_replace4(&q->check, vip, be->addr[0]);
		q->saddr = be->addr[0];
		csum_replace4(icsum, vip, be->addr[0]);
		csum_replace2(icsum, old_qcheck, q->check);
		csum_replace2(icsum, qports[0], be->port);
		qports[0] = be->port;
		return 0;
	}
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	if ((void *)(ip6 + 1) > data_end)
		return -1;
	icmp = data + sizeof(struct ethhdr) + sizeof(struct ipv6hdr);
	if ((void *)(icmp + ICMP_HDR_LEN + sizeof(struct ipv6hdr) + 4) > data_end)
		return -1;
	__u16 *icsum = (void *)(icmp + 2);
	if ((void *)(icsum + 1) > data_end)
		return -1;
	struct ipv6hdr *q6 = (void *)(icmp + ICMP_HDR_LEN);
	__u16 *qports = (void *)(q6 + 1);
	if ((void *)(q6 + 1) > data_end || (void *)(qports + 2) > data_end)
		return -1;
	/* The VIP is in the pseudo-header (outer destination) and in the
	 * quoted source: both change. */
	csum_replace_addr(icsum, cf->dst, be->addr, 4);
	csum_replace_addr(icsum, cf->dst, be->addr, 4);
	__builtin_memcpy(&ip6->daddr, be->addr, 16);
	__builtin_memcpy(&q6->saddr, be->addr, 16);
	csum_replace2(icsum, qports[0], be->port);
	qports[0] = be->port;
	return 0;
}

#endif
