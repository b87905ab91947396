/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The flow hash that picks a Maglev slot. Every node must pick the same
 * slot for the same flow, so the hash has a fixed seed and reads the
 * packet's fields as memory: never change it without changing every
 * node. (murmur3's mixing steps.) */
#ifndef IRONLB_HASH_H
#define IRONLB_HASH_H

#include <linux/types.h>
#include "structs.h"

#define FLOW_HASH_SEED 0x1ab4e5f7

static __always_inline __u32 rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 hash_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rotl32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 hash_final(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* hash_flow hashes a client flow: the whole 5-tuple, or with affinity the
 * client and the VIP only, so every connection of a client lands on the
 * same node and endpoint. */
static __always_inline __u32 hash_flow(const struct flow *f, int affinity)
{
	__u32 h = FLOW_HASH_SEED;
#pragma unroll
	for (int i = 0; i < 4; i++)
		h = hash_mix(h, f->src[i]);
#pragma unroll
	for (int i = 0; i < 4; i++)
		h = hash_mix(h, f->dst[i]);
	if (!affinity) {
		h = hash_mix(h, ((__u32)f->sport << 16) | f->dport);
		h = hash_mix(h, f->proto);
	} else {
		h = hash_mix(h, f->dport);
	}
	return hash_final(h);
}

#endif
