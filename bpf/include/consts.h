/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Limits and constants of the ironlb data plane; every limit can be
 * overridden at compile time. */
#ifndef IRONLB_CONSTS_H
#define IRONLB_CONSTS_H

/* Most VIP:port:protocol entries one node serves. */
#ifndef MAX_VIPS
#define MAX_VIPS 65536
#endif

/* Most Services (statistics are indexed by service id). */
#ifndef MAX_SERVICES
#define MAX_SERVICES 16384
#endif

#define ETH_P_IP_BE 0x0008   /* htons(ETH_P_IP) */
#define ETH_P_IPV6_BE 0xDD86 /* htons(ETH_P_IPV6) */
#define IP_MF_OFFSET_BE 0xFF3F /* htons(IP_MF | IP_OFFSET) */

#define FAMILY_V4 4
#define FAMILY_V6 6

#endif
