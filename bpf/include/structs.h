/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map keys and values shared with Go (bpf2go generates their twins). */
#ifndef IRONLB_STRUCTS_H
#define IRONLB_STRUCTS_H

#include <linux/types.h>

/* A VIP as the packet shows it: IPv4 addresses use addr[0] only, the rest
 * zero; port in network byte order. */
struct vip_key {
	__u32 addr[4];
	__u16 port;
	__u8 proto;
	__u8 family;
};

/* What a VIP maps to. */
struct vip_info {
	__u32 service_id;
	__u32 flags;
};

/* Per-Service counters, per CPU. */
struct service_stats {
	__u64 packets;
	__u64 bytes;
};

/* The parts of a packet the program decides on. */
struct flow {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
};

#endif
