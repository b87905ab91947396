/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map keys and values shared with Go (bpf2go generates their twins).
 * Addresses and ports are in network byte order, as raw memory; an IPv4
 * address uses the first word only, the rest zero. */
#ifndef IRONLB_STRUCTS_H
#define IRONLB_STRUCTS_H

#include <linux/types.h>
#include "consts.h"

/* A VIP as the packet shows it. */
/* if_macs value: an interface and its own MAC address. */
struct if_mac {
	__u32 ifindex;
	__u8 addr[6];
	__u16 pad;
};

struct vip_key {
	__u32 addr[4];
	__u16 port;
	__u8 proto;
	__u8 family;
};

/* What a VIP maps to: the id of its ring, local endpoints and counters;
 * the id of its source ranges (0: open to all; never reused, so that a
 * flow admitted under one list is checked again under a new one); the generation of its
 * ring and endpoints, which the loader bumps when either changes so that
 * conntrack entries check once that what they point to is still there;
 * and the sessionAffinity timeout. */
struct vip_info {
	__u32 service_id;
	__u32 flags;
	__u32 acl;
	__u32 gen;
	__u32 affinity_timeout; /* seconds */
	__u32 src_limit; /* new flows a second one client (/32, /64) may open; 0: any */
	__u32 pad;
	/* Until then (bpf_ktime_get_coarse_ns), rings_prev holds the ring
	 * before the last change: tier 2 passes a flow it does not know
	 * on to that ring's node. */
	__u64 prev_until;
};

/* A source-range prefix of a VIP's access list: the LPM trie's key.
 * prefixlen counts the acl's 32 bits before the address's. */
struct range_key {
	__u32 prefixlen;
	__u32 acl;
	__u8 addr[16];
};

/* A node address, for the tunnel peers allowed to send to us. */
struct peer_key {
	__u32 addr[4];
	__u8 family;
	__u8 pad[3];
};

/* A (Service port, node index) pair of ring_members. */
struct member_key {
	__u32 service_id;
	__u32 node;
};

/* Per-Service-port counters, per CPU. */
struct service_stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
	__u64 denied; /* dropped by loadBalancerSourceRanges */
	__u64 unstored; /* new flows sent by the ring, unrecorded: flood guard */
	__u64 limited;  /* new flows dropped by the per-source limit */
	__u64 cookies_sent; /* SYNs answered with a SYN cookie */
	__u64 cookies_ok;   /* cookie ACKs checked good: connections proxied */
	__u64 cookies_bad;  /* ACKs checked while cookies were on that held none */
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

/* This node, as the speaker configured it. The speaker refreshes
 * heartbeat (bpf_ktime_get_coarse_ns' clock) on every sync; once it is
 * older than stale_after, VIP traffic goes to the kernel untouched rather
 * than by rings and endpoints nobody keeps up to date. */
struct config_entry {
	__u32 self4;
	__u32 self6[4];
	__u32 ring_size; /* slots of every ring */
	__u32 mtu;       /* of the node links: TCP MSS is clamped to fit IPIP */
	__u32 flags;
	__u32 layout;    /* MAPS_LAYOUT of the program that wrote it */
	__u32 new_flow_rate; /* flood guard: new flows a second per CPU; 0: none */
	__u32 syn_cookie_rate; /* SYNs a second per CPU and VIP port above which
				* it answers with cookies; 0: never */
	__u64 heartbeat;
	__u64 stale_after; /* 0: never stale */
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
	__u32 gen;    /* vip_info.gen when the node was last known a member */
	__u32 acl_ok; /* the access list (vip_info.acl) that last admitted it */
	__u32 born;   /* the jiffy (low 32 bits) it was recorded */
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
	__u16 flags;  /* CT2_PROXIED */
	__u64 expires;
	__u32 gen;    /* vip_info.gen when the endpoint was last known serving */
	__u32 acl_ok; /* the access list (vip_info.acl) that last admitted it */
	/* The jiffy its reverse-NAT entry was last checked; in ct2_new, the
	 * jiffy it was recorded (the unverified are never checked). */
	__u64 revnat_at;
};

/* Reverse NAT of an unverified flow: the VIP, and the initial sequence
 * number of the endpoint's SYN-ACK once TC egress has seen it, which the
 * client's ACK must acknowledge for the flow to count as established. */
struct revnat_new_entry {
	struct vip_key vip;
	__u32 isn;
	__u32 synack; /* 1: isn is the SYN-ACK's */
};

/* A VIP port's SYN cookies: answered with them until on_until, and ACKs
 * checked for one until check_until (bpf_ktime_get_coarse_ns). */
struct cookie_state {
	__u64 on_until;
	__u64 check_until;
};

/* How tier 2 proxies a flow whose handshake a cookie made: the client
 * acknowledges cookie+1 where the endpoint sent isn+1; delta is isn -
 * cookie once TC egress has seen the endpoint's SYN-ACK (ready). win is
 * the client's window, for the ACK that completes the endpoint's
 * handshake. */
struct seq_shift {
	__u32 cookie;
	__u32 delta;
	__u16 win;
	__u8 ready;
	__u8 pad;
};

/* Room for the cookie helpers' headers, and a flow key off the stack. */
struct cookie_scratch {
	__u8 ip[40];
	__u8 tcp[60];
	__u32 pad;
	struct flow rk;
};

/* The flood guard's count of new flows on one CPU in one second. */
struct guard {
	__u64 second;
	__u64 count;
};

/* A client of a VIP for the per-source limit: its /32 or /64. */
struct src_key {
	__u32 addr[4];
	__u32 service_id;
	__u8 family;
	__u8 pad[3];
};

/* New flows a client opened in one second. */
struct src_count {
	__u64 second;
	__u64 count;
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

/* A Service port's serving endpoints on this node: the first ready ones
 * take new flows; the rest (serving but terminating) only keep the flows
 * they have. */
struct backend_set {
	__u32 count;
	__u32 ready;
	struct backend be[MAX_LOCAL_BACKENDS];
};

/* The coarse clock as one CPU last read it, and the jiffy it read it in. */
struct clock {
	__u64 jiffies;
	__u64 ns;
};

/* sessionAffinity ClientIP: a client of a Service port, on one tier. */
struct affinity_key {
	__u32 addr[4];
	__u32 service_id;
	__u8 family;
	__u8 tier; /* 1: the node was chosen; AFFINITY_TIER2: the endpoint */
	__u16 pad;
};

/* Where an affine client's flows go, and when it last opened one. */
struct affinity_entry {
	struct backend be; /* tier 2 */
	__u32 node[4];     /* tier 1 */
	__u32 idx;
	__u32 pad;
	__u64 seen;
};

#endif
