/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The maps of the ironlb data plane. The speaker pins them all, so a
 * restarted speaker finds the conntrack tables where it left them. */
#ifndef IRONLB_MAPS_H
#define IRONLB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "structs.h"

/* This node's addresses and the ring size (one entry). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config_entry);
} config SEC(".maps");

/* VIP:port:protocol -> Service port. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, struct vip_info);
} vips SEC(".maps");

/* One Maglev ring per Service port: slot -> index in nodes. The speaker
 * fills a new inner map (through a memory mapping: one copy, not one
 * update per slot) and then swaps it in, so a packet never sees a
 * half-written ring; ports with the same ring share one inner map. */
struct ring {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, RING_SIZE);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_SERVICES);
	__type(key, __u32);
	__array(values, struct ring);
} rings SEC(".maps");

/* The ring of each Service port before its last change, kept while
 * vip_info.prev_until says (ring history). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_SERVICES);
	__type(key, __u32);
	__array(values, struct ring);
} rings_prev SEC(".maps");

/* Node index -> address (index 0 is never a node): every live node (a dead one is cleared), so a
 * TCP flow pinned to a node stays while the node lives. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_NODES);
	__type(key, __u32);
	__type(value, struct node_info);
} nodes SEC(".maps");

/* Service port -> its ready endpoints on this node. A hash map, so each
 * update replaces the whole set at once. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct backend_set);
} backends SEC(".maps");

/* Tier-1 conntrack: client flow -> node. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow);
	__type(value, struct ct1_entry);
} ct1 SEC(".maps");

/* Tier-2 conntrack: client flow -> endpoint (and the way to it). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow);
	__type(value, struct ct2_entry);
} ct2 SEC(".maps");

/* The unverified twins of ct1, ct2 and revnat (see MAX_NEW_FLOWS): a
 * flow starts here unless it is an established TCP flow picked up
 * mid-way, and moves to the tables above once it proves itself (tier 1:
 * any packet after the SYN; tier 2: the ACK of the endpoint's SYN-ACK,
 * or PROMOTE_JIFFIES of life). What floods churn is these. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_NEW_FLOWS);
	__type(key, struct flow);
	__type(value, struct ct1_entry);
} ct1_new SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_NEW_FLOWS);
	__type(key, struct flow);
	__type(value, struct ct2_entry);
} ct2_new SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_NEW_FLOWS);
	__type(key, struct flow);
	__type(value, struct revnat_new_entry);
} revnat_new SEC(".maps");

/* The flood guard's count, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard);
} guard SEC(".maps");

/* SYN cookies (cookie.h): the cookie program, tail-called by ironlb_xdp;
 * SYNs per VIP port this second, per CPU; each VIP port's cookie state;
 * the sequence shift of each proxied flow (by its reply, as revnat);
 * scratch space (per CPU). */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} progs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct guard);
} syn_meter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct cookie_state);
} cookies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow);
	__type(value, struct seq_shift);
} shifts SEC(".maps");

/* Set (1) once the cookie program met an interface whose driver gives
 * XDP no metadata room: it cannot hand packets back, and cookies stay
 * off on this node. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cookies_unusable SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cookie_scratch);
} scratch SEC(".maps");

/* New flows per client and VIP this second, for VIPs with a limit. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_SOURCES);
	__type(key, struct src_key);
	__type(value, struct src_count);
} sources SEC(".maps");

/* Reverse NAT: endpoint -> client flow (as the reply shows it) -> the VIP
 * the client spoke to. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow);
	__type(value, struct vip_key);
} revnat SEC(".maps");

/* Next hops towards nodes, by node index, per CPU, refreshed by a FIB
 * lookup every NEXTHOP_TTL_NS: a lookup costs more than the rest of the
 * path. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_NODES);
	__type(key, __u32);
	__type(value, struct nexthop);
} nexthops SEC(".maps");

/* Packets, bytes and new flows per Service port, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct service_stats);
} stats SEC(".maps");

/* The MAC address of every interface the program is attached to
 * (ifindex -> address); the speaker fills it when it attaches. A unicast
 * frame for another host's MAC is not this node's to forward: a switch
 * floods such frames while it does not know that host's port (a dead
 * node, an aged-out entry: with direct server return the announcing node
 * rarely sends from its MAC), and the kernel drops them as
 * PACKET_OTHERHOST. Forwarding them would duplicate every packet on
 * every node the switch floods to. An array indexed by the ifindex
 * modulo its size (a power of two), cheaper per packet than a hash. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_IF_MACS);
	__type(key, __u32);
	__type(value, struct if_mac);
} if_macs SEC(".maps");

/* Links in front of local endpoints that DNAT-ed packets may be
 * redirected to (ifindex -> ifindex); the speaker fills it. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, MAX_ENDPOINT_LINKS);
	__type(key, __u32);
	__type(value, __u32);
} endpoint_links SEC(".maps");

/* loadBalancerSourceRanges: (acl, client prefix) -> allowed. A VIP with
 * a non-zero acl admits only clients that match one of its prefixes. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_SOURCE_RANGES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct range_key);
	__type(value, __u32);
} source_ranges SEC(".maps");

/* The nodes' addresses: the only outer sources whose encapsulated
 * packets are opened. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_TUNNEL_PEERS);
	__type(key, struct peer_key);
	__type(value, __u32);
} tunnel_peers SEC(".maps");

/* (Service port, node index) -> present when the node holds serving
 * endpoints of the port: where tier-1 flows may stay pinned. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_RING_MEMBERS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct member_key);
	__type(value, __u32);
} ring_members SEC(".maps");

/* sessionAffinity ClientIP: client -> its node (tier 1) or endpoint
 * (tier 2), kept for the Service's timeout after its last new flow. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_AFFINITY);
	__type(key, struct affinity_key);
	__type(value, struct affinity_entry);
} affinity SEC(".maps");

/* The coarse clock per CPU, read again when jiffies move: a clock read
 * costs more than the rest of an established flow's path here. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct clock);
} clock_cache SEC(".maps");

/* Drops by reason, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

#endif
