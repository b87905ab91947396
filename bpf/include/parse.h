/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Header parsing with a bounds check before every read. Anything the data
 * plane does not handle (VLAN tags, fragments, IPv6 extension headers,
 * protocols other than TCP and UDP, truncated or inconsistent headers)
 * makes the parsers return PARSE_OTHER, and the packet goes to the kernel
 * untouched. */
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
#include <bpf/bpf_endian.h>
#include "consts.h"
#include "structs.h"

#define PARSE_OTHER -1
#define PARSE_L4 0    /* TCP or UDP: f is complete */
#define PARSE_ENCAP 1 /* IPv4-in-IPv4 or IPv6-in-IPv6 */
#define PARSE_ICMP 2  /* ICMP or ICMPv6: h->l4 is its header, no ports */

/* Where the headers of a parsed packet are. (The IP header is always
 * right after Ethernet; keeping its pointer would lose what the verifier
 * knows of it.) */
struct hdrs {
	void *l4;
};

/* parse_ports reads the TCP or UDP ports at l4; the header must end
 * before both the buffer (data_end) and the IP packet (ip_end). */
static __always_inline int parse_ports(void *l4, void *data_end, void *ip_end, struct flow *f)
{
	if (f->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end || (void *)(tcp + 1) > ip_end)
			return PARSE_OTHER;
		if (tcp->doff < 5)
			return PARSE_OTHER;
		f->sport = tcp->source;
		f->dport = tcp->dest;
		return PARSE_L4;
	}
	if (f->proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end || (void *)(udp + 1) > ip_end)
			return PARSE_OTHER;
		f->sport = udp->source;
		f->dport = udp->dest;
		return PARSE_L4;
	}
	return PARSE_OTHER;
}

/* parse_ip parses the IP header at l3 (eth_proto in network order) and
 * what follows it. whole says the buffer holds the whole packet (XDP), so
 * an IP length past its end, or past limit (the end of the packet that
 * encapsulates this one), means a malformed packet; a socket buffer (TC)
 * may hold only the headers in its linear part. */
static __always_inline int parse_ip(void *l3, void *data_end, __u16 eth_proto,
				    struct flow *f, struct hdrs *h, int whole, void *limit)
{
	if (eth_proto == ETH_P_IP_BE) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end)
			return PARSE_OTHER;
		if (ip->version != 4 || ip->ihl < 5)
			return PARSE_OTHER;
		if (ip->frag_off & IP_MF_OFFSET_BE)
			return PARSE_OTHER; /* fragments: the kernel reassembles */
		__u16 tot = bpf_ntohs(ip->tot_len);
		if (tot < ip->ihl * 4 || (whole && (l3 + tot > data_end || l3 + tot > limit)))
			return PARSE_OTHER; /* inconsistent or truncated */
		void *l4 = l3 + ip->ihl * 4;
		f->family = FAMILY_V4;
		f->proto = ip->protocol;
		f->src[0] = ip->saddr;
		f->dst[0] = ip->daddr;
		h->l4 = l4;
		if (f->proto == IPPROTO_IPIP)
			return PARSE_ENCAP;
		if (f->proto == IPPROTO_ICMP)
			return PARSE_ICMP;
		return parse_ports(l4, data_end, l3 + tot, f);
	}
	if (eth_proto == ETH_P_IPV6_BE) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > data_end)
			return PARSE_OTHER;
		if (ip6->version != 6)
			return PARSE_OTHER;
		void *end = (void *)(ip6 + 1) + bpf_ntohs(ip6->payload_len);
		if (whole && (end > data_end || end > limit))
			return PARSE_OTHER;
		f->family = FAMILY_V6;
		f->proto = ip6->nexthdr; /* extension headers: not TCP/UDP, passed */
		__builtin_memcpy(f->src, &ip6->saddr, 16);
		__builtin_memcpy(f->dst, &ip6->daddr, 16);
		h->l4 = ip6 + 1;
		if (f->proto == IPPROTO_IPV6)
			return PARSE_ENCAP;
		if (f->proto == IPPROTO_ICMPV6)
			return PARSE_ICMP;
		return parse_ports(ip6 + 1, data_end, (void *)(ip6 + 1) + bpf_ntohs(ip6->payload_len), f);
	}
	return PARSE_OTHER;
}

/* parse_flow fills f and h from an Ethernet frame. */
static __always_inline int parse_flow(void *data, void *data_end, struct flow *f,
				      struct hdrs *h, int whole)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return PARSE_OTHER;
	return parse_ip(eth + 1, data_end, eth->h_proto, f, h, whole, data_end);
}

#endif
