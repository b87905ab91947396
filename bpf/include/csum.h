/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Internet checksums, updated incrementally (RFC 1624) when one field of a
 * header changes. Values are read as memory, in network order; the
 * ones'-complement sum does not care about byte order as long as both
 * sides agree. */
#ifndef IRONLB_CSUM_H
#define IRONLB_CSUM_H

#include <linux/types.h>

static __always_inline __u16 csum_fold(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)~c;
}

static __always_inline __u32 csum_add32(__u32 c, __u32 v)
{
	return c + (v & 0xffff) + (v >> 16);
}

/* csum_replace4 updates *sum for a 32-bit word changing from `from` to `to`. */
static __always_inline void csum_replace4(__u16 *sum, __u32 from, __u32 to)
{
	__u32 c = (__u16)~*sum;
	c = csum_add32(c, ~from);
	c = csum_add32(c, to);
	*sum = csum_fold(c);
}

static __always_inline void csum_replace2(__u16 *sum, __u16 from, __u16 to)
{
	__u32 c = (__u16)~*sum;
	c += (__u16)~from;
	c += to;
	*sum = csum_fold(c);
}

/* csum_replace_addr updates *sum for an address of `words` 32-bit words. */
static __always_inline void csum_replace_addr(__u16 *sum, const __u32 *from,
					      const __u32 *to, int words)
{
	__u32 c = (__u16)~*sum;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		if (i < words) {
			c = csum_add32(c, ~from[i]);
			c = csum_add32(c, to[i]);
		}
	}
	*sum = csum_fold(c);
}

/* ipv4_csum computes the checksum of a 20-byte IPv4 header whose check
 * field is zero. */
static __always_inline __u16 ipv4_csum(const void *hdr)
{
	const __u16 *p = hdr;
	__u32 c = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		c += p[i];
	return csum_fold(c);
}

#endif
