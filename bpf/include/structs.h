/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map keys and values shared with Go (bpf2go generates their twins).
 * Addresses and ports are in network byte order, as raw memory; an IPv4
 * address uses the first word only, the rest zero. */
#ifndef IRONLB_STRUCTS_H
#define IRONLB_STRUCTS_H

#include <linux/types.h>
#include "consts.h"

/* A VIP as the packet shows it. */
struct vip_key {
	__u32 addr[4];
	__u16 port;
	__u8 proto;
	__u8 family;
};

/* What a VIP maps to: the id of its ring, local endpoints and counters. */
struct vip_info {
	__u32 service_id;
	__u32 flags;
};

/* Per-Service-port counters, per CPU. */
struct service_stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
};

/* A flow's addresses, ports and protocol: the key of both conntrack tables
 * and of reverse NAT. */
struct flow {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u16 pad;
};

/* This node, as the speaker configured it. */
struct settings {
	__u32 self4;
	__u32 self6[4];
	__u32 ring_size; /* slots of every ring */
	__u32 mtu;       /* of the node links: TCP MSS is clamped to fit IPIP */
	__u32 flags;
};

/* A node a ring slot points to. */
struct node_info {
	__u32 addr[4];
	__u8 family;
	__u8 pad[3];
};

/* Tier-1 conntrack: the node a flow was sent to (its index in nodes, to
 * find the cached next hop). */
struct ct1_entry {
	__u32 node[4];
	__u32 idx;
};

/* An endpoint: address and target port. */
struct backend {
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 pad;
};

/* Tier-2 conntrack: the endpoint of a flow, and the link and MACs that
 * reach it when packets are redirected to it in XDP (ifindex 0: none
 * known), as a FIB lookup found them; trusted until expires, and for
 * packets up to max_len bytes (the FIB checked the link's MTU for it). */
struct ct2_entry {
	struct backend be;
	__u32 ifindex;
	__u16 max_len;
	__u8 dmac[6];
	__u8 smac[6];
	__u16 pad;
	__u64 expires;
};

/* The next hop towards a node, as a FIB lookup found it. */
struct nexthop {
	__u32 node[4];    /* the node it leads to */
	__u8 dmac[6];
	__u8 smac[6];
	__u32 ifindex;    /* where to send */
	__u32 in_ifindex; /* the interface the lookup was made for */
	__u64 expires;    /* bpf_ktime_get_coarse_ns() deadline */
};

/* A Service port's ready endpoints on this node. */
struct backend_set {
	__u32 count;
	__u32 pad;
	struct backend be[MAX_LOCAL_BACKENDS];
};

#endif
