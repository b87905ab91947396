/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Header parsing with a bounds check before every read. Anything the data
 * plane does not handle (VLAN tags, fragments, IPv6 extension headers,
 * protocols other than TCP and UDP, truncated headers) makes parse_flow
 * return -1, and the packet goes to the kernel untouched. */
#ifndef IRONLB_PARSE_H
#define IRONLB_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "structs.h"

/* parse_ports reads the TCP or UDP ports at l4. */
static __always_inline int parse_ports(void *l4, void *data_end, struct flow *f)
{
	if (f->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return -1;
		f->sport = tcp->source;
		f->dport = tcp->dest;
		return 0;
	}
	if (f->proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end)
			return -1;
		f->sport = udp->source;
		f->dport = udp->dest;
		return 0;
	}
	return -1;
}

/* parse_flow fills f from an Ethernet frame; -1 means "not for us". */
static __always_inline int parse_flow(void *data, void *data_end, struct flow *f)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1;

	if (eth->h_proto == ETH_P_IP_BE) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return -1;
		if (ip->version != 4 || ip->ihl < 5)
			return -1;
		if (ip->frag_off & IP_MF_OFFSET_BE)
			return -1; /* fragments: the kernel reassembles */
		void *l4 = (void *)ip + ip->ihl * 4;
		if (l4 > data_end)
			return -1;
		f->family = FAMILY_V4;
		f->proto = ip->protocol;
		f->src[0] = ip->saddr;
		f->dst[0] = ip->daddr;
		return parse_ports(l4, data_end, f);
	}
	if (eth->h_proto == ETH_P_IPV6_BE) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		if (ip6->version != 6)
			return -1;
		f->family = FAMILY_V6;
		f->proto = ip6->nexthdr; /* extension headers: not TCP/UDP, passed */
		__builtin_memcpy(f->src, &ip6->saddr, 16);
		__builtin_memcpy(f->dst, &ip6->daddr, 16);
		return parse_ports((void *)(ip6 + 1), data_end, f);
	}
	return -1;
}

#endif
