/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Limits and constants of the ironlb data plane; every limit can be
 * overridden at compile time, and the map sizes also at load time. */
#ifndef IRONLB_CONSTS_H
#define IRONLB_CONSTS_H

/* Most VIP:port:protocol entries one node serves. */
#ifndef MAX_VIPS
#define MAX_VIPS 65536
#endif

/* Most Service ports (a VIP:port:protocol each); rings, local endpoint
 * sets and statistics are indexed by their id. */
#ifndef MAX_SERVICES
#define MAX_SERVICES 16384
#endif

/* Most nodes a ring can point to. */
#ifndef MAX_NODES
#define MAX_NODES 4096
#endif

/* Most ready endpoints of one Service port on one node. */
#ifndef MAX_LOCAL_BACKENDS
#define MAX_LOCAL_BACKENDS 64
#endif

/* Most links in front of local endpoints (pods' veths). */
#ifndef MAX_IF_MACS
#define MAX_IF_MACS 256
#endif
#ifndef MAX_ENDPOINT_LINKS
#define MAX_ENDPOINT_LINKS 4096
#endif

/* Flows each conntrack table keeps (LRU). */
#ifndef MAX_FLOWS
#define MAX_FLOWS 131072
#endif

/* Flows each table of unverified flows keeps (LRU): flows that opened
 * with a lone SYN, UDP flows seen for less than PROMOTE_JIFFIES, and
 * flows placed while the flood guard was tripped. A flood churns these
 * tables, never the established ones. */
#ifndef MAX_NEW_FLOWS
#define MAX_NEW_FLOWS 16384
#endif

/* Clients remembered per VIP for the per-source new-flow limit (LRU). */
#ifndef MAX_SOURCES
#define MAX_SOURCES 65536
#endif

/* How long, in jiffies, a flow that cannot prove a handshake (UDP, or a
 * TCP flow picked up mid-way) must keep sending before it moves from the
 * unverified tables to the established ones: about two seconds at HZ=250,
 * half a second at 1000. */
#ifndef PROMOTE_JIFFIES
#define PROMOTE_JIFFIES 512
#endif

#define NS_PER_SEC 1000000000ULL

/* Ring history (daisy chaining): a packet a node passes on to the node of
 * the previous ring carries this mark in its outer header (the IPv4 ID;
 * the low bits of the IPv6 flow label), and a marked packet is never
 * passed on again. */
#define SECOND_HOP_ID 0x1b2d
#define SECOND_HOP_FLOW 0x01

/* SYN cookies: a SYN a director turned out of a client's cookie ACK (the
 * client's handshake, proven) carries this mark in its outer header, as
 * SECOND_HOP_* marks a second hop: tier 2 then proxies the flow's
 * sequence numbers (see cookie.h). */
#define PROXIED_ID 0x1b2e
#define PROXIED_FLOW 0x02

/* tier2's and encap's hop flags: the packet was passed on by ring
 * history (never again), or is a SYN a cookie proved. */
#define HOP_SECOND 1
#define HOP_PROXIED 2

/* ct2_entry.flags: tier 2 proxies the flow (seq_shift has its shift). */
#define CT2_PROXIED 1

/* vip_key.family bit of a reverse-NAT entry (revnat, revnat_new) whose
 * flow tier 2 proxies: TC egress shifts its sequence numbers. */
#define REVNAT_PROXIED 0x80

/* How long a VIP keeps answering SYNs with cookies after its last second
 * over the rate, and how long after that cookie ACKs are still checked
 * (the kernel's cookies are good for two minutes). */
#define COOKIE_HOLD_NS (5 * NS_PER_SEC)
#define COOKIE_CHECK_NS (130 * NS_PER_SEC)

/* Slots of the progs array: the SYN-cookie program, and ironlb_xdp,
 * which it hands packets back to. */
#define PROG_COOKIE 0
#define PROG_MAIN 1

/* What the cookie program tells ironlb_xdp of a packet it hands back
 * (cookie_meta; 0: a packet of its own). */
#define COOKIE_PASS_CHECKED 1 /* not a cookie: go on as without cookies */
#define COOKIE_PASS_OK 2      /* a SYN made out of a valid cookie ACK */

/* The TCP window of a cookie SYN-ACK (no scaling: the cookie keeps no
 * options), and of its IP header's TTL. */
#define COOKIE_WINDOW 65535
#define COOKIE_TTL 64

/* backend.family of a tier-2 entry that sends its flow on to another
 * node (the previous ring's) instead of to an endpoint; the node's index
 * is in ct2_entry.ifindex. */
#define BACKEND_CHAIN 0x80

/* What tier2 returns when the packet must go on to the node in its hop
 * argument; never an XDP verdict. */
#define CHAIN_VERDICT 100

/* Most source-range prefixes (loadBalancerSourceRanges) over all
 * Services; the LPM trie allocates on use. */
#ifndef MAX_SOURCE_RANGES
#define MAX_SOURCE_RANGES 65536
#endif

/* Most (Service port, node) pairs that may keep flows: the nodes holding
 * serving endpoints of each port. Allocated on use. */
#ifndef MAX_RING_MEMBERS
#define MAX_RING_MEMBERS 1048576
#endif

/* Most node addresses allowed to send encapsulated packets here. */
#ifndef MAX_TUNNEL_PEERS
#define MAX_TUNNEL_PEERS 8192
#endif

/* Clients remembered for sessionAffinity ClientIP (LRU). */
#ifndef MAX_AFFINITY
#define MAX_AFFINITY 131072
#endif

/* How often a tier-2 flow re-checks that its reverse-NAT entry is there,
 * in jiffies: about a second at HZ=250 (Debian's and Ubuntu's), a quarter
 * at 1000, two and a half at 100. */
#ifndef REVNAT_CHECK_JIFFIES
#define REVNAT_CHECK_JIFFIES 256
#endif

/* The layout and meaning of the pinned maps. The loader compares it with
 * what the pinned config map holds and replaces maps of another version,
 * even when their sizes happen to agree. Bump it with any change to a map
 * key or value, or to what a field means. */
#define MAPS_LAYOUT 4

/* Slots of a Maglev ring; the loader sets the real size (a prime). */
#ifndef RING_SIZE
#define RING_SIZE 16381
#endif

/* How long a cached next hop is used before the FIB is asked again. */
#ifndef NEXTHOP_TTL_NS
#define NEXTHOP_TTL_NS 1000000000ULL
#endif

#define ETH_P_IP_BE 0x0008   /* htons(ETH_P_IP) */
#define ETH_P_IPV6_BE 0xDD86 /* htons(ETH_P_IPV6) */
#define IP_MF_OFFSET_BE 0xFF3F /* htons(IP_MF | IP_OFFSET) */
#define IP_DF_BE 0x0040       /* htons(IP_DF) */

#define FAMILY_V4 4
#define FAMILY_V6 6

/* vip_info.flags */
#define VIP_AFFINITY 1 /* sessionAffinity ClientIP: hash the client only */
#define VIP_LOCAL 2    /* externalTrafficPolicy Local: this node's endpoints */

/* config_entry.flags (the value of the config map) */
#define CONFIG_REDIRECT 1 /* redirect to endpoint_links links in XDP */
#define CONFIG_HISTORY 2  /* ring history: pass unknown flows on (prev_node) */

/* The key of a tier-2 affinity entry, as opposed to a tier-1 one. */
#define AFFINITY_TIER2 2

/* Header sizes: an IPv4 header without options and with the most (15
 * words), an IPv6 header, a TCP header without options and with the most,
 * an Ethernet header. */
#define IPV4_HDR_LEN 20
#define IPV4_MAX_HDR_LEN 60
#define IPV6_HDR_LEN 40
#define TCP_HDR_LEN 20
#define TCP_MAX_HDR_LEN 60
#define ETH_HDR_LEN 14

/* Headers the encapsulation adds: one IPv4 header without options, or one
 * IPv6 header (IPIP, IPv6-in-IPv6). */
#define IPIP4_OVERHEAD IPV4_HDR_LEN
#define IPIP6_OVERHEAD IPV6_HDR_LEN

/* The hop limit of the headers the data plane writes: the outer one when
 * it encapsulates, and the ICMP "too big" errors it sends. */
#define ENCAP_TTL 64
#define ICMP_ERROR_TTL 64

/* Address bits by family, and the bits of a source_ranges key before the
 * address (the access list's id). */
#define ADDR_BITS_V4 32
#define ADDR_BITS_V6 128
#define RANGE_KEY_ACL_BITS 32

/* The TC program clamps the MSS of a SYN only when the L4 header starts
 * within this many bytes of the packet (Ethernet, and IPv6 with a few
 * extension headers); the bound is also what the verifier needs. */
#define MSS_CLAMP_MAX_L4_OFFSET 128

/* An MTU below this in the config map is taken as unset: no MSS clamping
 * (the loader writes the real one; IPv6 needs 1280 anyway). */
#define MSS_CLAMP_MIN_MTU 200

/* TCP option kinds. */
#define TCPOPT_MSS_KIND 2
#define TCPOLEN_MSS_LEN 4

/* Why a VIP packet was dropped or left to the kernel (drops map index). */
enum drop_reason {
	DROP_NO_CONFIG = 0,   /* the speaker has not configured this node */
	DROP_NO_RING = 1,     /* a VIP without a ring (being set up) */
	DROP_NO_NODE = 2,     /* the ring points to an unknown node */
	DROP_NO_BACKEND = 3,  /* no local endpoint on the chosen node */
	DROP_FIB = 4,         /* no route or neighbour to the chosen node */
	DROP_ENCAP = 5,       /* no room to add the outer header */
	DROP_DECAP = 6,       /* an encapsulated packet we could not open */
	DROP_MALFORMED = 7,   /* a VIP packet with a bad header */
	DROP_TOO_BIG = 8,     /* too big once encapsulated (ICMP sent if DF) */
	DROP_SOURCE_RANGE = 9, /* client outside loadBalancerSourceRanges */
	DROP_UNTRUSTED_TUNNEL = 10, /* encapsulated by a host that is no node */
	PASS_STALE = 11,      /* passed to the kernel: no speaker for too long */
	DROP_SOURCE_LIMIT = 12, /* a client over the VIP's new flows per second */
	DROP_PROXY_PENDING = 13, /* a proxied flow's packet before its endpoint's SYN-ACK */
	DROP_COOKIE_UNSUPPORTED = 14, /* the driver gives XDP no metadata room: cookies off */
	DROP_REASONS = 15,
};

#endif
