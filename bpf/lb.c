//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ironlb's data plane: an XDP program on each node's external interfaces
 * and a TC egress program beside it. See docs/architecture.md.
 *
 * Tier 1 (the node that receives VIP traffic) keeps each flow on one node:
 * its own conntrack, else a Maglev ring over the nodes that hold ready
 * endpoints. A flow for another node is encapsulated (IPv4-in-IPv4 or
 * IPv6-in-IPv6) and sent there; a flow for this node goes to tier 2.
 * Tier 2 (the node with the endpoints) opens the encapsulation, keeps each
 * flow on one local endpoint (its own conntrack, else a hash over the
 * ready endpoints), rewrites the destination to the endpoint and hands
 * the packet to the kernel, which routes it to the pod.
 * Replies go straight to the client: TC egress rewrites their source back
 * to the VIP (direct server return). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "include/consts.h"
#include "include/structs.h"
#include "include/maps.h"
#include "include/parse.h"
#include "include/csum.h"
#include "include/hash.h"
#include "include/icmp_too_big.h"
#include "include/icmp_steer.h"

/* Enough for Ethernet, IPv4 with options or IPv6, and TCP with options. */
#define PULL_LEN (ETH_HDR_LEN + IPV4_MAX_HDR_LEN + TCP_MAX_HDR_LEN)

#define AF_INET 2
#define AF_INET6 10

/* Not inlined: drops are rare, and its signature puts enum drop_reason in
 * the object's BTF, from which bpf2go generates bpf.LbDropReason. */
static __attribute__((noinline)) void count_drop(enum drop_reason r)
{
	__u32 reason = r;
	__u64 *n = bpf_map_lookup_elem(&drops, &reason);
	if (n)
		(*n)++;
}

static __always_inline int drop(enum drop_reason reason)
{
	count_drop(reason);
	return XDP_DROP;
}

/* coarse_now returns bpf_ktime_get_coarse_ns() as this CPU read it within
 * the current jiffy: at most one read a jiffy (1 to 10 ms) instead of one
 * a packet. */
static __always_inline __u64 coarse_now(void)
{
	__u32 zero = 0;
	struct clock *c = bpf_map_lookup_elem(&clock_cache, &zero);
	if (!c)
		return bpf_ktime_get_coarse_ns();
	__u64 j = bpf_jiffies64();
	if (c->jiffies != j) {
		c->jiffies = j;
		c->ns = bpf_ktime_get_coarse_ns();
	}
	return c->ns;
}

static __always_inline int addr_eq(const __u32 *a, const __u32 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/* is_self reports whether addr (of the flow's family) is this node's. */
static __always_inline int is_self(const struct config_entry *cfg, const __u32 *addr, __u8 family)
{
	if (family == FAMILY_V4)
		return cfg->self4 != 0 && addr[0] == cfg->self4;
	return (cfg->self6[0] | cfg->self6[1] | cfg->self6[2] | cfg->self6[3]) != 0 &&
	       addr_eq(addr, cfg->self6);
}

/* admitted reports whether the client of f may reach the VIP: a VIP whose
 * Service lists loadBalancerSourceRanges admits only clients inside one of
 * them, on every packet, so an edit applies to established flows too. */
static __always_inline int admitted(const struct vip_info *vip, const struct flow *f)
{
	if (vip->acl == 0)
		return 1;
	struct range_key k = {
		.prefixlen = RANGE_KEY_ACL_BITS + (f->family == FAMILY_V4 ? ADDR_BITS_V4 : ADDR_BITS_V6),
		.acl = vip->acl,
	};
	__builtin_memcpy(k.addr, f->src, sizeof(k.addr));
	return bpf_map_lookup_elem(&source_ranges, &k) != NULL;
}

/* admitted_flow is admitted for a packet of a flow whose conntrack entry
 * (ct1 or ct2; may be NULL) is ce: a flow the VIP's current list admitted
 * once skips the trie; a new list (an edit) has a new id, and checks it
 * again. (A macro: the field is touched only once ce is known non-NULL.) */
#define admitted_flow(vip, f, ce)                                          \
	({                                                                 \
		int ok_ = 1;                                               \
		if ((vip)->acl != 0 && !((ce) && (ce)->acl_ok == (vip)->acl)) { \
			ok_ = admitted(vip, f);                            \
			if (ok_ && (ce))                                   \
				(ce)->acl_ok = (vip)->acl;                 \
		}                                                          \
		ok_;                                                       \
	})

/* stale reports whether the speaker has not refreshed the data plane for
 * longer than it allowed: its rings and endpoints may be wrong, and VIP
 * traffic goes to the kernel (kube-proxy, if it runs) untouched. */
static __always_inline int stale(const struct config_entry *cfg)
{
	return cfg->stale_after != 0 && coarse_now() > cfg->heartbeat + cfg->stale_after;
}

static __always_inline int pass_stale(void)
{
	count_drop(PASS_STALE);
	return XDP_PASS;
}

/* guard_tripped counts a new flow on this CPU and reports whether this
 * second's count is past the flood guard's rate: then tier 1 records no
 * more new flows (the ring sends them, as Katran does) and tier 2 keeps
 * them with the unverified ones only. */
static __always_inline int guard_tripped(const struct config_entry *cfg)
{
	if (cfg->new_flow_rate == 0)
		return 0;
	__u32 zero = 0;
	struct guard *g = bpf_map_lookup_elem(&guard, &zero);
	if (!g)
		return 0;
	__u64 second = coarse_now() / NS_PER_SEC;
	if (g->second != second) {
		g->second = second;
		g->count = 0;
	}
	return ++g->count > cfg->new_flow_rate;
}

/* source_limited counts a new flow of the client (its /32, or /64 for
 * IPv6) against the VIP's limit, and reports whether it is over. */
static __always_inline int source_limited(const struct vip_info *vip, const struct flow *f)
{
	if (vip->src_limit == 0)
		return 0;
	struct src_key k = {.service_id = vip->service_id, .family = f->family};
	k.addr[0] = f->src[0];
	if (f->family == FAMILY_V6)
		k.addr[1] = f->src[1];
	__u64 second = coarse_now() / NS_PER_SEC;
	struct src_count *c = bpf_map_lookup_elem(&sources, &k);
	if (!c) {
		struct src_count fresh = {.second = second, .count = 1};
		bpf_map_update_elem(&sources, &k, &fresh, BPF_ANY);
		return vip->src_limit < 1;
	}
	if (c->second != second) {
		c->second = second;
		c->count = 1;
		return 0;
	}
	return __sync_fetch_and_add(&c->count, 1) + 1 > vip->src_limit;
}

static __always_inline int backend_eq(const struct backend *a, const struct backend *b)
{
	return a->port == b->port && a->family == b->family && addr_eq(a->addr, b->addr);
}

/* in_set reports whether be is one of the first n endpoints of set. */
static __always_inline int in_set(const struct backend_set *set, __u32 n, const struct backend *be)
{
	if (n > MAX_LOCAL_BACKENDS)
		n = MAX_LOCAL_BACKENDS;
	for (__u32 i = 0; i < MAX_LOCAL_BACKENDS; i++) {
		if (i >= n)
			break;
		if (backend_eq(&set->be[i], be))
			return 1;
	}
	return 0;
}

/* affine returns the affinity entry of the flow's client for the VIP on
 * a tier, when it is younger than the Service's timeout. */
static __always_inline struct affinity_entry *affine(const struct vip_info *vip, const struct flow *f,
						     __u8 tier, struct affinity_key *k, __u64 now)
{
	__builtin_memcpy(k->addr, f->src, sizeof(k->addr));
	k->service_id = vip->service_id;
	k->family = f->family;
	k->tier = tier;
	struct affinity_entry *e = bpf_map_lookup_elem(&affinity, k);
	if (!e || now - e->seen > (__u64)vip->affinity_timeout * 1000000000ULL)
		return NULL;
	return e;
}

/* dnat rewrites the destination of the packet to the endpoint, with its
 * checksums. */
static __always_inline int dnat(const struct flow *f, struct hdrs *h, void *data,
				void *data_end, const struct backend *be)
{
	__u16 *l4sum;
	int udp_nocsum = 0;

	if (f->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = h->l4;
		if ((void *)(tcp + 1) > data_end)
			return -1;
		l4sum = &tcp->check;
		csum_replace2(l4sum, tcp->dest, be->port);
		tcp->dest = be->port;
	} else {
		struct udphdr *udp = h->l4;
		if ((void *)(udp + 1) > data_end)
			return -1;
		l4sum = &udp->check;
		/* IPv4 UDP may go without a checksum; it stays without. */
		udp_nocsum = f->family == FAMILY_V4 && udp->check == 0;
		if (!udp_nocsum)
			csum_replace2(l4sum, udp->dest, be->port);
		udp->dest = be->port;
	}
	if (f->family == FAMILY_V4) {
		struct iphdr *ip = data + sizeof(struct ethhdr);
		if ((void *)(ip + 1) > data_end)
			return -1;
		csum_replace4(&ip->check, ip->daddr, be->addr[0]);
		if (!udp_nocsum)
			csum_replace4(l4sum, ip->daddr, be->addr[0]);
		ip->daddr = be->addr[0];
	} else {
		struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		csum_replace_addr(l4sum, f->dst, be->addr, 4);
		__builtin_memcpy(&ip6->daddr, be->addr, 16);
	}
	if (f->proto == IPPROTO_UDP && !udp_nocsum && *l4sum == 0)
		*l4sum = 0xffff;
	return 0;
}

/* ip_decrease_ttl lowers the TTL of a forwarded IPv4 packet, with its
 * checksum, as the kernel's forwarding does. */
static __always_inline void ip_decrease_ttl(struct iphdr *ip)
{
	__u32 check = ip->check;
	check += bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

/* deliver sends a packet DNAT made for a local endpoint. When the speaker
 * allows it (CONFIG_REDIRECT) and the route to the endpoint leaves by a
 * link it listed in endpoint_links (a veth that takes XDP frames), the
 * packet goes there directly, as the kernel would forward it: same next
 * hop, TTL one lower. Everything else, including a TTL about to expire, a
 * packet over the link's MTU and an unresolved neighbour, goes to the
 * kernel, which routes it (and answers with ICMP when it must). The way
 * is kept in the flow's conntrack entry (ce) for NEXTHOP_TTL_NS. */
static __always_inline int deliver(struct xdp_md *ctx, const struct config_entry *cfg,
				   const struct flow *f, struct ct2_entry *ce)
{
	if (!(cfg->flags & CONFIG_REDIRECT))
		return XDP_PASS;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u16 len;

	if (f->family == FAMILY_V4) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end || ip->ttl <= 1)
			return XDP_PASS;
		len = bpf_ntohs(ip->tot_len);
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1)
			return XDP_PASS;
		len = bpf_ntohs(ip6->payload_len) + sizeof(struct ipv6hdr);
	}
	__u64 now = coarse_now();
	if (ce->ifindex == 0 || ce->expires <= now || len > ce->max_len) {
		struct bpf_fib_lookup fib = {};
		fib.ifindex = ctx->ingress_ifindex;
		fib.tot_len = len;
		if (f->family == FAMILY_V4) {
			struct iphdr *ip = (void *)(eth + 1);
			if ((void *)(ip + 1) > data_end)
				return XDP_PASS;
			fib.family = AF_INET;
			fib.tos = ip->tos;
			fib.ipv4_src = ip->saddr;
			fib.ipv4_dst = ip->daddr;
		} else {
			struct ipv6hdr *ip6 = (void *)(eth + 1);
			if ((void *)(ip6 + 1) > data_end)
				return XDP_PASS;
			fib.family = AF_INET6;
			__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
			__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
		}
		if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS ||
		    fib.ifindex == ctx->ingress_ifindex) {
			ce->ifindex = 0;
			return XDP_PASS;
		}
		__u16 max = len;
		if (ce->ifindex == fib.ifindex && ce->expires > now && ce->max_len > max)
			max = ce->max_len;
		ce->ifindex = fib.ifindex;
		ce->max_len = max;
		__builtin_memcpy(ce->dmac, fib.dmac, ETH_ALEN);
		__builtin_memcpy(ce->smac, fib.smac, ETH_ALEN);
		ce->expires = now + NEXTHOP_TTL_NS;
	}
	__u32 ifindex = ce->ifindex;
	if (!bpf_map_lookup_elem(&endpoint_links, &ifindex))
		return XDP_PASS;
	if (f->family == FAMILY_V4) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return XDP_PASS;
		ip_decrease_ttl(ip);
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		ip6->hop_limit--;
	}
	__builtin_memcpy(eth->h_dest, ce->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, ce->smac, ETH_ALEN);
	return bpf_redirect_map(&endpoint_links, ifindex, XDP_PASS);
}

/* opening reports whether a TCP packet opens a connection (SYN without
 * ACK): it has no connection to keep yet, so it keeps its node or endpoint
 * only while that still serves the VIP. */
static __always_inline int opening(const struct flow *f, const struct hdrs *h, void *data_end)
{
	if (f->proto != IPPROTO_TCP)
		return 0;
	struct tcphdr *tcp = h->l4;
	if ((void *)(tcp + 1) > data_end)
		return 0;
	return tcp->syn && !tcp->ack;
}

/* reply_of fills rk with the flow's replies as they leave the endpoint
 * be: the key of reverse NAT. */
static __always_inline void reply_of(const struct flow *f, const struct backend *be, struct flow *rk)
{
	rk->sport = be->port;
	rk->dport = f->sport;
	rk->proto = f->proto;
	rk->family = f->family;
	__builtin_memcpy(rk->src, be->addr, 16);
	__builtin_memcpy(rk->dst, f->src, 16);
}

static __always_inline void vip_of(const struct flow *f, struct vip_key *vk)
{
	vk->port = f->dport;
	vk->proto = f->proto;
	vk->family = f->family;
	__builtin_memcpy(vk->addr, f->dst, 16);
}

/* put_revnat_new records reverse NAT for an unverified flow. An
 * established entry of the same reply (the endpoint and the client's
 * address and port) belongs to an earlier connection on that tuple, which
 * the endpoint cannot tell from this one: it is gone, and its entry would
 * give this flow's replies the earlier one's VIP. */
static __always_inline void put_revnat_new(const struct flow *f, const struct backend *be)
{
	struct flow rk = {};
	struct revnat_new_entry e = {};
	reply_of(f, be, &rk);
	vip_of(f, &e.vip);
	bpf_map_update_elem(&revnat_new, &rk, &e, BPF_ANY);
	bpf_map_delete_elem(&revnat, &rk);
}

/* put_revnat records how the flow's replies get the VIP back as their
 * source: the reply as it leaves the endpoint -> the VIP (with
 * REVNAT_PROXIED when tier 2 proxies the flow: proxied). */
static __always_inline void put_revnat(const struct flow *f, const struct backend *be, int check, int proxied)
{
	struct flow rk = {};
	struct vip_key vk = {};
	reply_of(f, be, &rk);
	vip_of(f, &vk);
	if (proxied)
		vk.family |= REVNAT_PROXIED;
	if (check) {
		struct vip_key *have = bpf_map_lookup_elem(&revnat, &rk);
		if (have && have->port == vk.port && have->proto == vk.proto &&
		    have->family == vk.family && addr_eq(have->addr, vk.addr))
			return;
	}
	bpf_map_update_elem(&revnat, &rk, &vk, BPF_ANY);
}

#include "include/cookie.h"

/* pick_backend chooses a ready endpoint for a new flow: with affinity the
 * client's endpoint while it is ready and the affinity young, else a hash
 * over the ready endpoints (of the client alone, with affinity). */
static __always_inline int pick_backend(const struct vip_info *vip, const struct flow *f,
					const struct backend_set *set, struct backend *out, __u64 now)
{
	__u32 n = set->ready;
	if (n > MAX_LOCAL_BACKENDS)
		n = MAX_LOCAL_BACKENDS;
	if (n == 0)
		return -1;
	int aff = vip->flags & VIP_AFFINITY;
	struct affinity_key ak = {};
	if (aff) {
		struct affinity_entry *e = affine(vip, f, AFFINITY_TIER2, &ak, now);
		if (e && in_set(set, n, &e->be)) {
			e->seen = now;
			*out = e->be;
			return 0;
		}
	}
	__u32 i = hash_flow(f, aff) % n;
	/* The compiler knows i < n; the verifier must be told. */
	asm volatile("" : "+r"(i));
	if (i >= MAX_LOCAL_BACKENDS)
		return -1;
	*out = set->be[i];
	if (aff) {
		struct affinity_entry e = {.be = *out, .seen = now};
		bpf_map_update_elem(&affinity, &ak, &e, BPF_ANY);
	}
	return 0;
}

/* ct2_find returns the flow's tier-2 entry: an established one, else an
 * unverified one (then *fresh is set), else NULL. */
static __always_inline struct ct2_entry *ct2_find(const struct flow *f, int *fresh)
{
	*fresh = 0;
	struct ct2_entry *ce = bpf_map_lookup_elem(&ct2, f);
	if (ce)
		return ce;
	ce = bpf_map_lookup_elem(&ct2_new, f);
	*fresh = ce != NULL;
	return ce;
}

/* ct1_find is ct2_find for tier 1. */
static __always_inline struct ct1_entry *ct1_find(const struct flow *f, int *fresh)
{
	*fresh = 0;
	struct ct1_entry *ce = bpf_map_lookup_elem(&ct1, f);
	if (ce)
		return ce;
	ce = bpf_map_lookup_elem(&ct1_new, f);
	*fresh = ce != NULL;
	return ce;
}

/* proven reports whether a packet of an unverified tier-2 flow makes it
 * established: a TCP packet that acknowledges the endpoint's SYN-ACK (its
 * sequence number, which only who received the SYN-ACK knows), or, for a
 * flow whose SYN-ACK was never seen here (UDP, or TCP picked up mid-way),
 * any packet once the flow has lived PROMOTE_JIFFIES. */
static __always_inline int proven(const struct flow *f, const struct hdrs *h, void *data_end,
				  const struct ct2_entry *ce)
{
	if (f->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = h->l4;
		if ((void *)(tcp + 1) > data_end || tcp->syn || !tcp->ack)
			return 0;
		struct flow rk = {};
		reply_of(f, &ce->be, &rk);
		struct revnat_new_entry *re = bpf_map_lookup_elem(&revnat_new, &rk);
		if (re && re->synack)
			return bpf_ntohl(tcp->ack_seq) == re->isn + 1;
	}
	return bpf_jiffies64() - ce->revnat_at >= PROMOTE_JIFFIES; /* recorded then */
}

/* ring_node fills hop with the node of slot in ring, when it is another
 * node of the flow's family than this one. */
static __always_inline int ring_node(const struct config_entry *cfg, void *ring, __u32 slot,
				     const struct flow *f, struct ct1_entry *hop)
{
	__u32 *idx = bpf_map_lookup_elem(ring, &slot);
	if (!idx || *idx == 0)
		return 0;
	struct node_info *ni = bpf_map_lookup_elem(&nodes, idx);
	if (!ni || ni->family != f->family || is_self(cfg, ni->addr, f->family))
		return 0;
	__builtin_memcpy(hop->node, ni->addr, 16);
	hop->idx = *idx;
	return 1;
}

/* prev_node finds the node a flow this node does not know may be on: the
 * one this node's own ring gives its slot, when that is another (this
 * node's ring is older than the director's: its speaker lags or is
 * down), else the one the port's previous ring gave it, while it is kept.
 * Only with ring history on (CONFIG_HISTORY). */
static __always_inline int prev_node(const struct config_entry *cfg, const struct vip_info *vip,
				     const struct flow *f, struct ct1_entry *hop)
{
	if (!(cfg->flags & CONFIG_HISTORY))
		return 0;
	__u32 id = vip->service_id;
	__u32 slot = hash_flow(f, vip->flags & VIP_AFFINITY) % cfg->ring_size;
	void *ring = bpf_map_lookup_elem(&rings, &id);
	if (ring && ring_node(cfg, ring, slot, f, hop))
		return 1;
	if (vip->prev_until == 0 || coarse_now() >= vip->prev_until)
		return 0;
	ring = bpf_map_lookup_elem(&rings_prev, &id);
	return ring && ring_node(cfg, ring, slot, f, hop);
}

static __always_inline int node_live(const __u32 *node, __u32 idx);

/* record_chain records that this node passes the flow on to hop's node
 * (unless the flood guard is tripped): it keeps going there after the
 * history ends. */
static __always_inline void record_chain(const struct config_entry *cfg, const struct vip_info *vip,
					 const struct flow *f, const struct ct1_entry *hop)
{
	if (guard_tripped(cfg))
		return;
	struct ct2_entry e = {.gen = vip->gen, .acl_ok = vip->acl, .ifindex = hop->idx};
	__builtin_memcpy(e.be.addr, hop->node, 16);
	e.be.family = f->family | BACKEND_CHAIN;
	bpf_map_update_elem(&ct2, f, &e, BPF_ANY);
}

/* forget_ct2 drops an established tier-2 entry the flow no longer keeps
 * (fresh: it is an unverified one, which the new one replaces anyway),
 * so that a new connection on a reused tuple, recorded as unverified,
 * is not shadowed by it; it returns NULL. */
static __always_inline struct ct2_entry *forget_ct2(const struct flow *f, int fresh)
{
	if (!fresh)
		bpf_map_delete_elem(&ct2, f);
	return NULL;
}

/* tier2 sends a VIP packet to one of this node's endpoints: the flow's
 * own while it still serves, else a new one. fresh: ce is unverified.
 *
 * Ring history: a TCP packet of a flow no table here knows, which did not
 * come from another node's ring history already (second), may belong to
 * the node the previous ring gave its slot (a ring change, then a new
 * receiving node without the flow's tier-1 entry). tier2 then records the
 * flow as passed on, fills hop and returns CHAIN_VERDICT: the caller sends
 * the packet there, marked. A marked packet is served here whatever
 * happens, so a packet makes at most two tunnel hops.
 *
 * second holds HOP_SECOND for such a packet. A SYN a director made out of
 * a client's cookie ACK (HOP_PROXIED) goes through tier2 like any SYN,
 * and proxy_mark then makes its flow proxied (cookie.h): one path for
 * the verifier, not two. */
static __always_inline int tier2(struct xdp_md *ctx, const struct config_entry *cfg,
				 struct flow *f, struct hdrs *h, void *data,
				 void *data_end, const struct vip_info *vip,
				 struct ct2_entry *ce, int fresh, int second, struct ct1_entry *hop)
{
	__u32 id = vip->service_id;
	struct backend_set *set = NULL;

	if (ce && (ce->be.family & BACKEND_CHAIN)) {
		/* A flow passed on before: on again while its node lives;
		 * but a SYN opens a new connection on a reused tuple. */
		if (!(second & HOP_SECOND) && !opening(f, h, data_end) && node_live(ce->be.addr, ce->ifindex)) {
			__builtin_memcpy(hop->node, ce->be.addr, 16);
			hop->idx = ce->ifindex;
			return CHAIN_VERDICT;
		}
		ce = forget_ct2(f, fresh);
	}

	if (ce && !fresh && opening(f, h, data_end)) {
		/* A SYN on the tuple of an established entry: a new
		 * connection (the client reused its port), placed anew. */
		ce = forget_ct2(f, fresh);
	}
	if (ce && ce->gen != vip->gen) {
		/* The endpoints changed since the flow last looked: it keeps
		 * its endpoint while that one serves (ready or terminating),
		 * else it is placed again like a new flow. A TCP connection
		 * keeps it in any case, as kube-proxy's conntrack does: its
		 * pod may still run, and if it does not, it resets the flow;
		 * a connection not yet made (a SYN) does not. */
		set = bpf_map_lookup_elem(&backends, &id);
		if ((set && in_set(set, set->count, &ce->be)) ||
		    (f->proto == IPPROTO_TCP && !opening(f, h, data_end))) {
			ce->gen = vip->gen;
			if (!fresh) /* an unverified entry's is its birth */
				ce->revnat_at = 0;
		} else {
			ce = forget_ct2(f, fresh);
		}
	}
	if (ce && (ce->flags & CT2_PROXIED) && !opening(f, h, data_end) &&
	    proxy_ack(f, &ce->be, h->l4, data_end) < 0)
		return drop(DROP_PROXY_PENDING);
	if (!ce && !(second & HOP_SECOND) && f->proto == IPPROTO_TCP && !opening(f, h, data_end) &&
	    prev_node(cfg, vip, f, hop)) {
		record_chain(cfg, vip, f, hop);
		return CHAIN_VERDICT;
	}
	if (!ce) {
		if (!set)
			set = bpf_map_lookup_elem(&backends, &id);
		if (!set)
			return drop(DROP_NO_BACKEND);
		/* The caller admitted this packet under the VIP's list. */
		__u64 j = bpf_jiffies64();
		struct ct2_entry e = {.gen = vip->gen, .acl_ok = vip->acl, .revnat_at = j};
		if (pick_backend(vip, f, set, &e.be, coarse_now()) < 0)
			return drop(DROP_NO_BACKEND);
		/* An established TCP flow picked up mid-way (its entry
		 * evicted, or the endpoints changed) is recorded as
		 * established, unless the flood guard is tripped; anything
		 * else starts unverified. */
		int tripped = guard_tripped(cfg);
		if (f->proto == IPPROTO_TCP && !opening(f, h, data_end) && !tripped) {
			bpf_map_update_elem(&ct2, f, &e, BPF_ANY);
			put_revnat(f, &e.be, 0, 0);
			ce = bpf_map_lookup_elem(&ct2, f);
		} else {
			bpf_map_update_elem(&ct2_new, f, &e, BPF_ANY);
			put_revnat_new(f, &e.be);
			ce = bpf_map_lookup_elem(&ct2_new, f);
		}
		if (!ce) {
			/* Evicted at once (a full LRU under attack): this
			 * packet still goes where the flow was sent. */
			if (dnat(f, h, data, data_end, &e.be) < 0)
				return drop(DROP_MALFORMED);
			return XDP_PASS;
		}
	} else if (fresh) {
		/* Unverified: established once it proves itself, and then
		 * recorded where floods do not reach. */
		if (proven(f, h, data_end, ce)) {
			/* Straight from the map value: the stack is full. */
			ce->revnat_at = bpf_jiffies64();
			bpf_map_update_elem(&ct2, f, ce, BPF_ANY);
			put_revnat(f, &ce->be, 0, ce->flags & CT2_PROXIED);
			struct ct2_entry *m = bpf_map_lookup_elem(&ct2, f);
			if (m)
				ce = m;
		}
	} else {
		/* Replies need the reverse-NAT entry as long as the flow
		 * lives: put it back if the LRU dropped it. Counted in
		 * jiffies, the cheapest clock. */
		__u64 j = bpf_jiffies64();
		if (j - ce->revnat_at > REVNAT_CHECK_JIFFIES) {
			put_revnat(f, &ce->be, 1, ce->flags & CT2_PROXIED);
			ce->revnat_at = j;
		}
	}
	struct backend chosen = ce->be;
	if (dnat(f, h, data, data_end, &chosen) < 0)
		return drop(DROP_MALFORMED);
	return deliver(ctx, cfg, f, ce);
}

/* tier2_icmp hands an ICMP error about a flow to the flow's endpoint. */
static __always_inline int tier2_icmp(const struct flow *cf, void *data, void *data_end)
{
	int fresh;
	struct ct2_entry *ce = ct2_find(cf, &fresh);
	if (!ce || (ce->be.family & BACKEND_CHAIN))
		return XDP_PASS; /* no such flow here: the kernel drops it */
	struct backend b = ce->be;
	if (icmp_to_backend(data, data_end, cf, &b) < 0)
		return drop(DROP_MALFORMED);
	if (ce->flags & CT2_PROXIED)
		proxy_icmp(data, data_end, cf, &b);
	return XDP_PASS;
}

#include "include/encap.h"

static __always_inline struct vip_info *lookup_vip(const struct flow *f)
{
	struct vip_key key = {
		.port = f->dport,
		.proto = f->proto,
		.family = f->family,
	};
	__builtin_memcpy(key.addr, f->dst, sizeof(key.addr));
	return bpf_map_lookup_elem(&vips, &key);
}

/* decap opens a packet another node's tier 1 sent here, when it is ours:
 * addressed to this node, and carrying a VIP packet. */
static __always_inline int decap(struct xdp_md *ctx, const struct config_entry *cfg,
				 const struct flow *outer, struct hdrs *oh, struct ct1_entry *hop)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct flow f = {};
	struct hdrs h = {};
	int olen, second;
	__u16 proto;

	if (!is_self(cfg, outer->dst, outer->family))
		return XDP_PASS;
	void *l3 = (void *)(long)ctx->data + sizeof(struct ethhdr);
	void *outer_end;
	if (outer->family == FAMILY_V4) {
		struct iphdr *o = l3;
		if ((void *)(o + 1) > data_end)
			return XDP_PASS;
		olen = (void *)oh->l4 - l3;
		outer_end = l3 + bpf_ntohs(o->tot_len);
		proto = ETH_P_IP_BE;
		second = o->id == bpf_htons(SECOND_HOP_ID) ? HOP_SECOND :
			 o->id == bpf_htons(PROXIED_ID) ? HOP_PROXIED : 0;
	} else {
		struct ipv6hdr *o = l3;
		if ((void *)(o + 1) > data_end)
			return XDP_PASS;
		olen = sizeof(struct ipv6hdr);
		outer_end = (void *)(o + 1) + bpf_ntohs(o->payload_len);
		proto = ETH_P_IPV6_BE;
		second = (o->flow_lbl[2] & SECOND_HOP_FLOW ? HOP_SECOND : 0) |
			 (o->flow_lbl[2] & PROXIED_FLOW ? HOP_PROXIED : 0);
	}
	/* The inner packet must lie within the outer one. */
	int inner = parse_ip(oh->l4, data_end, proto, &f, &h, 1, outer_end);
	struct flow cf = {};
	if (inner == PARSE_ICMP) {
		/* Only our own encapsulation (no IPv4 options): a constant
		 * offset for the verifier. */
		if (olen != (outer->family == FAMILY_V4 ? IPIP4_OVERHEAD : IPIP6_OVERHEAD))
			return XDP_PASS;
		void *il3 = (void *)(long)ctx->data + sizeof(struct ethhdr) +
			    (outer->family == FAMILY_V4 ? IPIP4_OVERHEAD : IPIP6_OVERHEAD);
		if (icmp_flow(il3, data_end, &f, &cf) < 0)
			return XDP_PASS;
	} else if (inner == PARSE_L4) {
		cf = f;
	} else {
		return XDP_PASS;
	}
	struct vip_info *vip = lookup_vip(&cf);
	if (!vip)
		return XDP_PASS;
	/* Only nodes encapsulate for us: anyone else could hand a pod a
	 * packet with any source it likes. */
	struct peer_key pk = {.family = outer->family};
	__builtin_memcpy(pk.addr, outer->src, sizeof(pk.addr));
	if (!bpf_map_lookup_elem(&tunnel_peers, &pk))
		return drop(DROP_UNTRUSTED_TUNNEL);
	if (stale(cfg))
		return pass_stale();
	/* The ranges again where the flow lands: the director's copy of
	 * them may be older. */
	struct ct2_entry *ce2 = NULL;
	int fresh2 = 0;
	if (inner != PARSE_ICMP) {
		ce2 = ct2_find(&cf, &fresh2);
		if (!admitted_flow(vip, &cf, ce2))
			return drop(DROP_SOURCE_RANGE);
	} else if (!admitted(vip, &cf)) {
		return drop(DROP_SOURCE_RANGE);
	}
	/* Ring history: a TCP flow this node does not know, sent by a
	 * director, goes on (still encapsulated) to the node the previous
	 * ring gave it, and so does one passed on before; never a second
	 * hop's. */
	if (inner == PARSE_L4 && !(second & HOP_SECOND) && cf.proto == IPPROTO_TCP && !opening(&cf, &h, data_end) &&
	    (outer->family == FAMILY_V6 || olen == IPIP4_OVERHEAD)) {
		int go = 0;
		if (ce2 && (ce2->be.family & BACKEND_CHAIN)) {
			if (node_live(ce2->be.addr, ce2->ifindex)) {
				__builtin_memcpy(hop->node, ce2->be.addr, 16);
				hop->idx = ce2->ifindex;
				go = 1;
			}
		} else if (!ce2 && prev_node(cfg, vip, &cf, hop)) {
			record_chain(cfg, vip, &cf, hop);
			go = 1;
		}
		if (go)
			return retunnel(ctx, cfg, outer->family, hop);
	}

	void *data = (void *)(long)ctx->data;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (olen < (int)sizeof(struct iphdr) || olen > IPV4_MAX_HDR_LEN)
		return drop(DROP_DECAP);
	/* The Ethernet header moves to just before the inner packet, over
	 * the outer header (olen is at least 20, so they do not overlap),
	 * and the head moves past the outer header: no copy on the stack,
	 * which has no room left. */
	__u32 off = (__u32)olen & 0x7f; /* the same, bounded for the verifier */
	struct ethhdr *inner_eth = data + off;
	if ((void *)(inner_eth + 1) > data_end)
		return drop(DROP_DECAP);
	__builtin_memcpy(inner_eth, eth, sizeof(*eth));
	if (bpf_xdp_adjust_head(ctx, olen))
		return drop(DROP_DECAP);
	/* A SYN a cookie proved: tier 2 proxies its flow (proxy_mark). */
	if ((second & HOP_PROXIED) && set_cookie_meta(ctx, COOKIE_PASS_OK) < 0)
		return drop(DROP_DECAP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return drop(DROP_DECAP);
	__builtin_memset(&f, 0, sizeof(f));
	__builtin_memset(&h, 0, sizeof(h));
	int r = parse_flow(data, data_end, &f, &h, 1);
	if (r != inner)
		return drop(DROP_DECAP);
	if (r == PARSE_ICMP)
		return tier2_icmp(&cf, data, data_end);
	/* Decided above: tier 2 does not pass it on (HOP_SECOND). */
	int v = tier2(ctx, cfg, &f, &h, data, data_end, vip, ce2, fresh2, HOP_SECOND, hop);
	return cookie_meta(ctx) == COOKIE_PASS_OK ? proxy_mark(ctx, &f, v) : v;
}

/* node_live reports whether a node index still names a live node at the
 * same address (the speaker lists every live node, and clears dead ones). */
static __always_inline int node_live(const __u32 *node, __u32 idx)
{
	struct node_info *ni = bpf_map_lookup_elem(&nodes, &idx);
	return ni && ni->family != 0 && addr_eq(ni->addr, node);
}

/* still_member reports whether the node of a conntrack or affinity entry
 * still holds serving endpoints of the VIP, at the same address. */
static __always_inline int still_member(const struct vip_info *vip, const __u32 *node, __u32 idx)
{
	struct member_key mk = {.service_id = vip->service_id, .node = idx};
	if (!bpf_map_lookup_elem(&ring_members, &mk))
		return 0;
	return node_live(node, idx);
}

/* ct1_keeps reports whether a tier-1 flow stays on its node after the
 * VIP's nodes changed. As kube-proxy keeps a TCP connection's conntrack
 * when its endpoint goes and flushes UDP's, a TCP connection stays while
 * its node lives (the node's tier 2 still knows its endpoint), and a UDP
 * flow, or a TCP connection not yet made (syn), only while its node
 * serves the VIP. */
static __always_inline int ct1_keeps(const struct vip_info *vip, const struct flow *f,
				     const struct ct1_entry *ce, int syn)
{
	if (f->proto == IPPROTO_TCP && !syn)
		return node_live(ce->node, ce->idx);
	return still_member(vip, ce->node, ce->idx);
}

/* record_ct1 records a flow tier 1 just placed: nowhere while the flood
 * guard is tripped (the ring keeps sending it the same way while the ring
 * stays), as established for a TCP flow picked up mid-way, else as
 * unverified. */
static __always_inline void record_ct1(const struct config_entry *cfg, const struct flow *f,
				       struct ct1_entry *node, int syn, struct service_stats *st)
{
	st->new_flows++;
	if (guard_tripped(cfg)) {
		st->unstored++;
		return;
	}
	node->born = (__u32)bpf_jiffies64();
	if (f->proto == IPPROTO_TCP && !syn)
		bpf_map_update_elem(&ct1, f, node, BPF_ANY);
	else
		bpf_map_update_elem(&ct1_new, f, node, BPF_ANY);
}

/* promote_ct1 moves an unverified tier-1 flow to the established table:
 * a TCP flow on its first packet after the SYN, a UDP flow once it has
 * lived PROMOTE_JIFFIES. */
static __always_inline void promote_ct1(const struct flow *f, struct ct1_entry *ce, int syn)
{
	if (f->proto == IPPROTO_TCP ? syn : (__u32)bpf_jiffies64() - ce->born < PROMOTE_JIFFIES)
		return;
	bpf_map_update_elem(&ct1, f, ce, BPF_ANY);
}

/* choose_node finds the tier-1 node of a flow: its conntrack entry while
 * that node still serves the VIP, else (with affinity) the client's node,
 * else its ring slot. st (when given: a real packet of the flow, not an
 * ICMP error) records it as a new flow, or promotes an unverified entry
 * (fresh). It returns -1, or the reason to drop the packet. */
static __always_inline int choose_node(const struct config_entry *cfg, const struct vip_info *vip,
				       struct flow *f, struct ct1_entry *ce, int fresh, int syn,
				       struct ct1_entry *node, struct service_stats *st)
{
	/* A SYN on the tuple of an established entry is a new connection
	 * (the client reused its port): placed by the ring, not by where an
	 * earlier connection went. */
	if (ce && syn && !fresh) {
		if (st)
			bpf_map_delete_elem(&ct1, f);
		ce = NULL;
	}
	if (ce) {
		int keep = ce->gen == vip->gen;
		/* The nodes changed since the flow last looked: it stays
		 * while its node serves the VIP, else it is placed again. */
		if (!keep && ct1_keeps(vip, f, ce, syn)) {
			keep = 1;
			if (st)
				ce->gen = vip->gen;
		}
		if (keep) {
			*node = *ce;
			if (st && fresh)
				promote_ct1(f, ce, syn);
			return -1;
		}
		/* Placed again below (and recorded as unverified if it is
		 * a SYN): the established entry must not shadow that. */
		if (st && !fresh)
			bpf_map_delete_elem(&ct1, f);
	}
	__u64 now = 0;
	struct affinity_key ak = {};
	int aff = vip->flags & VIP_AFFINITY;
	if (aff) {
		now = coarse_now();
		struct affinity_entry *e = affine(vip, f, 1, &ak, now);
		if (e && still_member(vip, e->node, e->idx)) {
			__builtin_memcpy(node->node, e->node, 16);
			node->idx = e->idx;
			node->gen = vip->gen;
			node->acl_ok = vip->acl; /* the caller admitted it */
			if (st) {
				e->seen = now;
				record_ct1(cfg, f, node, syn, st);
			}
			return -1;
		}
	}
	__u32 id = vip->service_id;
	void *ring = bpf_map_lookup_elem(&rings, &id);
	if (!ring)
		return DROP_NO_RING;
	__u32 slot = hash_flow(f, aff) % cfg->ring_size;
	__u32 *idx = bpf_map_lookup_elem(ring, &slot);
	if (!idx || *idx == 0)
		return DROP_NO_RING; /* index 0: the empty ring of a port that has none */
	struct node_info *ni = bpf_map_lookup_elem(&nodes, idx);
	if (!ni || ni->family != f->family)
		return DROP_NO_NODE;
	__builtin_memcpy(node->node, ni->addr, 16);
	node->idx = *idx;
	node->gen = vip->gen;
	node->acl_ok = vip->acl; /* the caller admitted it */
	if (st) {
		/* Only real packets of the flow pin it, never ICMP errors. */
		record_ct1(cfg, f, node, syn, st);
		if (aff) {
			struct affinity_entry e = {.idx = *idx, .seen = now};
			__builtin_memcpy(e.node, ni->addr, 16);
			bpf_map_update_elem(&affinity, &ak, &e, BPF_ANY);
		}
	}
	return -1;
}

/* icmp_error steers an ICMP error addressed to a VIP with the flow it
 * quotes: to the flow's tier-1 node, then to its endpoint. */
static __always_inline int icmp_error(struct xdp_md *ctx, const struct flow *outer,
				      void *data, void *data_end)
{
	struct flow cf = {};
	__u32 zero = 0;
	if (icmp_flow(data + sizeof(struct ethhdr), data_end, outer, &cf) < 0)
		return XDP_PASS;
	struct vip_info *vip = lookup_vip(&cf);
	if (!vip)
		return XDP_PASS;
	struct config_entry *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || cfg->ring_size == 0)
		return XDP_PASS;
	if (!admitted(vip, &cf))
		return drop(DROP_SOURCE_RANGE);
	if (stale(cfg))
		return pass_stale();
	if (vip->flags & VIP_LOCAL)
		return tier2_icmp(&cf, data, data_end);
	struct ct1_entry node;
	int fresh;
	struct ct1_entry *c1 = ct1_find(&cf, &fresh);
	int reason = choose_node(cfg, vip, &cf, c1, fresh, 0, &node, NULL);
	if (reason >= 0)
		return drop(reason);
	if (is_self(cfg, node.node, cf.family))
		return tier2_icmp(&cf, data, data_end);
	return encap(ctx, cfg, outer, node.node, node.idx, 0);
}

/* for_this_host tells whether a frame is addressed to the receiving
 * interface's own MAC. Frames for another host's MAC, and multicast or
 * broadcast frames, go to the kernel, which applies its own rules: the
 * data plane forwards only what was sent to this node. An interface the
 * speaker has not recorded (a test run, or one whose slot another
 * interface took: slots are the ifindex modulo MAX_IF_MACS) takes every
 * frame. */
static __always_inline int for_this_host(struct xdp_md *ctx, void *data, void *data_end)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return 1; /* parse_flow sends it on */
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 slot = ifindex & (MAX_IF_MACS - 1);
	struct if_mac *m = bpf_map_lookup_elem(&if_macs, &slot);
	if (!m || m->ifindex != ifindex)
		return 1;
	if (eth->h_dest[0] & 1)
		return 0;
	return *(__u32 *)&eth->h_dest[0] == *(__u32 *)&m->addr[0] &&
	       *(__u16 *)&eth->h_dest[4] == *(__u16 *)&m->addr[4];
}

SEC("xdp")
int ironlb_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct flow f = {};
	struct hdrs h = {};
	__u32 zero = 0;

	struct config_entry *cfg;
	/* Where the packet goes when it leaves by a tunnel: the flow's
	 * tier-1 node, or (second) the node ring history passes it on to. */
	struct ct1_entry node;
	int v, second = 0;

	int r = parse_flow(data, data_end, &f, &h, 1);
	if (r == PARSE_OTHER)
		return XDP_PASS;
	/* Only what this data plane would act on pays the check that the
	 * frame was sent to this host. */
	if (r == PARSE_ENCAP) {
		if (!for_this_host(ctx, data, data_end))
			return XDP_PASS;
		cfg = bpf_map_lookup_elem(&config, &zero);
		if (!cfg)
			return XDP_PASS;
		return decap(ctx, cfg, &f, &h, &node);
	}
	if (r == PARSE_ICMP) {
		if (!for_this_host(ctx, data, data_end))
			return XDP_PASS;
		return icmp_error(ctx, &f, data, data_end);
	}
	/* The common case, traffic for the node itself, costs one lookup. */
	struct vip_info *vip = lookup_vip(&f);
	if (!vip)
		return XDP_PASS;
	if (!for_this_host(ctx, data, data_end))
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_PASS;

	/* A packet the cookie program hands back: a cookie ACK turned
	 * into a SYN (COOKIE_PASS_OK), or an ACK that held no cookie. */
	int pass = 0;
	if (f.proto == IPPROTO_TCP && cfg->syn_cookie_rate)
		pass = cookie_meta(ctx);
	__u32 id = vip->service_id;
	struct service_stats *st = bpf_map_lookup_elem(&stats, &id);
	if (st && !pass) {
		st->packets++;
		st->bytes += data_end - data;
	}
	/* The flow's conntrack entry: the ranges skip the trie for a flow
	 * the VIP's current list admitted once. */
	int local = vip->flags & VIP_LOCAL;
	struct ct1_entry *c1 = NULL;
	struct ct2_entry *c2 = NULL;
	int in, fresh = 0;
	if (local) {
		c2 = ct2_find(&f, &fresh);
		in = admitted_flow(vip, &f, c2);
	} else {
		c1 = ct1_find(&f, &fresh);
		in = admitted_flow(vip, &f, c1);
	}
	if (!in) {
		if (st)
			st->denied++;
		return drop(DROP_SOURCE_RANGE);
	}
	if (cfg->ring_size == 0)
		return drop(DROP_NO_CONFIG);
	if (stale(cfg))
		return pass_stale();
	/* A packet no table knows opens a flow: the client may open only
	 * so many a second when the VIP says so (an ACK a cookie proved
	 * counted as its SYN). Under a SYN flood the VIP answers SYNs with
	 * cookies, and checks ACKs for them. */
	if (!c1 && !c2) {
		int cookies = f.proto == IPPROTO_TCP && cfg->syn_cookie_rate && !pass;
		if (cookies)
			cookie_gate(ctx, cfg, vip, &h, data_end, 0);
		if (pass != COOKIE_PASS_OK && source_limited(vip, &f)) {
			if (st)
				st->limited++;
			return drop(DROP_SOURCE_LIMIT);
		}
		if (cookies)
			cookie_gate(ctx, cfg, vip, &h, data_end, 1);
	}
	if (!local) {
		int reason = choose_node(cfg, vip, &f, c1, fresh, opening(&f, &h, data_end), &node, st);
		if (reason >= 0)
			return drop(reason);
		if (!is_self(cfg, node.node, f.family)) {
			/* A SYN a cookie proved: marked for tier 2. */
			if (cookie_meta(ctx) == COOKIE_PASS_OK)
				second = HOP_PROXIED;
			goto send;
		}
		c2 = ct2_find(&f, &fresh);
	}
	/* One call for both ways to this node's endpoints, and one to the
	 * tunnel: each inlined copy costs the verifier as much as the rest. */
	v = tier2(ctx, cfg, &f, &h, data, data_end, vip, c2, fresh, 0, &node);
	if (v != CHAIN_VERDICT) /* a SYN, as a cookie's is, is never passed on */
		return cookie_meta(ctx) == COOKIE_PASS_OK ? proxy_mark(ctx, &f, v) : v;
	second = HOP_SECOND;
send:
	/* After a decapsulation f is the outer flow: of the same family as
	 * the inner one, which is all encap reads of it. */
	return encap(ctx, cfg, &f, node.node, node.idx, second);
}

/* clamp_mss lowers the MSS option of a SYN-ACK so that the client's
 * segments still fit once a director encapsulates them. Linux puts MSS
 * first; other layouts are left alone. */
static __always_inline void clamp_mss(struct __sk_buff *skb, __u32 l4off, __u16 max)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (l4off > MSS_CLAMP_MAX_L4_OFFSET)
		return; /* bounds the offset for the verifier */
	struct tcphdr *tcp = data + l4off;
	if ((void *)(tcp + 1) > data_end)
		return;
	if (!tcp->syn || tcp->doff < 6)
		return;
	__u8 *opt = (void *)(tcp + 1);
	if ((void *)(opt + 4) > data_end)
		return;
	if (opt[0] != TCPOPT_MSS_KIND || opt[1] != TCPOLEN_MSS_LEN)
		return;
	__u16 old = *(__u16 *)(opt + 2);
	if (bpf_ntohs(old) <= max)
		return;
	__u16 new = bpf_htons(max);
	bpf_l4_csum_replace(skb, l4off + offsetof(struct tcphdr, check), old, new, 2);
	bpf_skb_store_bytes(skb, l4off + sizeof(struct tcphdr) + 2, &new, 2, 0);
}

SEC("tc")
int ironlb_tc_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct flow f = {};
	struct hdrs h = {};

	if (parse_flow(data, data_end, &f, &h, 0) != PARSE_L4) {
		/* Headers split between the linear part and pages: pull
		 * them in once and look again. */
		__u32 linear = data_end - data;
		if (linear >= PULL_LEN || skb->len <= linear)
			return TC_ACT_OK;
		if (bpf_skb_pull_data(skb, skb->len < PULL_LEN ? skb->len : PULL_LEN))
			return TC_ACT_OK;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		__builtin_memset(&f, 0, sizeof(f));
		if (parse_flow(data, data_end, &f, &h, 0) != PARSE_L4)
			return TC_ACT_OK;
	}
	struct vip_key v;
	int rst = 0;
	if (f.proto == IPPROTO_TCP) {
		struct tcphdr *tcp = h.l4;
		if ((void *)(tcp + 1) > data_end)
			return TC_ACT_OK;
		rst = tcp->rst;
	}
	struct vip_key *vk = bpf_map_lookup_elem(&revnat, &f);
	if (vk) {
		v = *vk;
	} else {
		/* An unverified flow: the endpoint's SYN-ACK tells the
		 * sequence number the client's ACK must acknowledge. */
		struct revnat_new_entry *ne = bpf_map_lookup_elem(&revnat_new, &f);
		if (!ne)
			return TC_ACT_OK;
		if (f.proto == IPPROTO_TCP) {
			struct tcphdr *tcp = h.l4;
			if ((void *)(tcp + 1) > data_end)
				return TC_ACT_OK;
			if (tcp->syn && tcp->ack) {
				ne->isn = bpf_ntohl(tcp->seq);
				ne->synack = 1;
			}
		}
		v = ne->vip;
	}
	__u32 l3off = sizeof(struct ethhdr);
	__u32 l4off = (void *)h.l4 - data;
	if (f.proto == IPPROTO_TCP && (v.family & REVNAT_PROXIED)) {
		/* Tier 2 proxies the flow (SYN cookies): the endpoint's
		 * sequence numbers become the client's. */
		int r = proxy_reply(skb, &f, l4off);
		if (r != TC_ACT_OK)
			return r;
	}
	__u32 csum_off = l4off + (f.proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
						      : offsetof(struct udphdr, check));
	__u64 l4flags = f.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (f.family == FAMILY_V4) {
		bpf_l4_csum_replace(skb, csum_off, f.src[0], v.addr[0],
				    l4flags | BPF_F_PSEUDO_HDR | sizeof(__u32));
		bpf_l3_csum_replace(skb, l3off + offsetof(struct iphdr, check), f.src[0],
				    v.addr[0], sizeof(__u32));
		bpf_skb_store_bytes(skb, l3off + offsetof(struct iphdr, saddr), &v.addr[0],
				    sizeof(__u32), 0);
	} else {
		__s64 diff = bpf_csum_diff(f.src, 16, v.addr, 16, 0);
		bpf_l4_csum_replace(skb, csum_off, 0, diff, l4flags | BPF_F_PSEUDO_HDR);
		bpf_skb_store_bytes(skb, l3off + offsetof(struct ipv6hdr, saddr), v.addr, 16, 0);
	}
	bpf_l4_csum_replace(skb, csum_off, f.sport, v.port, l4flags | sizeof(__u16));
	bpf_skb_store_bytes(skb, l4off, &v.port, sizeof(__u16), 0);

	if (rst) {
		/* The endpoint reset the connection: its entries here go,
		 * as the kernel's conntrack drops a reset connection's. A
		 * flow placed here by mistake (no socket behind it) must not
		 * stay to catch a later connection on the same tuple. */
		struct flow fk = {.sport = f.dport, .dport = v.port, .proto = f.proto, .family = f.family};
		__builtin_memcpy(fk.src, f.dst, sizeof(fk.src));
		__builtin_memcpy(fk.dst, v.addr, sizeof(fk.dst));
		bpf_map_delete_elem(&ct2, &fk);
		bpf_map_delete_elem(&ct2_new, &fk);
		bpf_map_delete_elem(&revnat, &f);
		bpf_map_delete_elem(&revnat_new, &f);
		if (v.family & REVNAT_PROXIED)
			bpf_map_delete_elem(&shifts, &f);
		return TC_ACT_OK;
	}
	if (f.proto == IPPROTO_TCP) {
		__u32 zero = 0;
		struct config_entry *cfg = bpf_map_lookup_elem(&config, &zero);
		if (cfg && cfg->mtu > MSS_CLAMP_MIN_MTU) {
			__u32 over = f.family == FAMILY_V4 ? IPV4_HDR_LEN + TCP_HDR_LEN + IPIP4_OVERHEAD
							   : IPV6_HDR_LEN + TCP_HDR_LEN + IPIP6_OVERHEAD;
			clamp_mss(skb, l4off, cfg->mtu - over);
		}
	}
	return TC_ACT_OK;
}

/* cookie_headers copies a TCP packet's IP header (without IPv4 options:
 * the cookie helpers read the addresses) and TCP header (the first 20
 * bytes only, unless whole) to scratch, and returns the TCP header's
 * length, or -1. */
static __always_inline int cookie_headers(struct xdp_md *ctx, struct cookie_scratch *sc, int v4, int whole)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 iplen = IPV6_HDR_LEN;

	if ((void *)(eth + 1) > data_end)
		return -1;
	if (v4) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return -1;
		iplen = ip->ihl * 4;
		if (iplen < IPV4_HDR_LEN || iplen > IPV4_MAX_HDR_LEN)
			return -1;
		__builtin_memcpy(sc->ip, ip, IPV4_HDR_LEN);
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__builtin_memcpy(sc->ip, ip6, IPV6_HDR_LEN);
	}
	if (bpf_xdp_load_bytes(ctx, ETH_HDR_LEN + iplen, sc->tcp, sizeof(struct tcphdr)))
		return -1;
	__u32 len = ((struct tcphdr *)sc->tcp)->doff * 4;
	if (len < sizeof(struct tcphdr) || len > TCP_MAX_HDR_LEN)
		return -1;
	if (whole && len > sizeof(struct tcphdr) &&
	    bpf_xdp_load_bytes(ctx, ETH_HDR_LEN + iplen + sizeof(struct tcphdr), sc->tcp + sizeof(struct tcphdr),
			       len - sizeof(struct tcphdr)))
		return -1;
	return len;
}

/* cookie_rebuild makes the packet Ethernet, the IP header in scratch
 * (without options, its length fields set for a 24-byte TCP header) and
 * room for that TCP header, which it returns (NULL when it cannot). */
static __always_inline struct tcphdr *cookie_rebuild(struct xdp_md *ctx, struct cookie_scratch *sc, int v4)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 iplen = v4 ? IPV4_HDR_LEN : IPV6_HDR_LEN;
	int grow = (int)(ETH_HDR_LEN + iplen + COOKIE_TCP_LEN) - (int)(data_end - data);
	if (bpf_xdp_adjust_tail(ctx, grow))
		return NULL;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return NULL;
	if (v4) {
		struct iphdr *ip = (void *)(eth + 1);
		struct tcphdr *tcp = (void *)(ip + 1);
		if ((void *)tcp + COOKIE_TCP_LEN > data_end)
			return NULL;
		__builtin_memcpy(ip, sc->ip, IPV4_HDR_LEN);
		ip->ihl = 5;
		ip->tot_len = bpf_htons(IPV4_HDR_LEN + COOKIE_TCP_LEN);
		ip->check = 0;
		ip->check = ipv4_csum(ip);
		return tcp;
	}
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	struct tcphdr *tcp = (void *)(ip6 + 1);
	if ((void *)tcp + COOKIE_TCP_LEN > data_end)
		return NULL;
	__builtin_memcpy(ip6, sc->ip, IPV6_HDR_LEN);
	ip6->payload_len = bpf_htons(COOKIE_TCP_LEN);
	return tcp;
}

/* cookie_finish fills a 24-byte TCP header's MSS option and checksum. */
static __always_inline void cookie_finish(struct tcphdr *tcp, const struct cookie_scratch *sc, int v4, __u16 mss)
{
	__u8 *opt = (void *)(tcp + 1);
	opt[0] = TCPOPT_MSS_KIND;
	opt[1] = TCPOLEN_MSS_LEN;
	*(__u16 *)(opt + 2) = bpf_htons(mss);
	tcp->check = 0;
	tcp->urg_ptr = 0;
	/* A SYN-ACK's addresses are the SYN's swapped: the same sum. */
	tcp->check = tcp_csum24(addr_sum(sc->ip, v4), v4, tcp);
}

/* cookie_synack turns a SYN into its SYN-ACK, whose sequence number is a
 * cookie; it returns -1 (the packet untouched) when it cannot. */
static __always_inline int cookie_synack(struct xdp_md *ctx, const struct config_entry *cfg,
					 struct cookie_scratch *sc, int v4)
{
	__s64 gen;
	__u16 max = 0;
	int len = cookie_headers(ctx, sc, v4, 1);
	if (len < 0)
		return -1;
	if (v4) {
		gen = bpf_tcp_raw_gen_syncookie_ipv4((void *)sc->ip, (void *)sc->tcp, len & 0x3f);
		if (cfg->mtu > MSS_CLAMP_MIN_MTU)
			max = cfg->mtu - (IPV4_HDR_LEN + TCP_HDR_LEN + IPIP4_OVERHEAD);
	} else {
		gen = bpf_tcp_raw_gen_syncookie_ipv6((void *)sc->ip, (void *)sc->tcp, len & 0x3f);
		if (cfg->mtu > MSS_CLAMP_MIN_MTU)
			max = cfg->mtu - (IPV6_HDR_LEN + TCP_HDR_LEN + IPIP6_OVERHEAD);
	}
	if (gen < 0)
		return -1;
	__u32 cookie = (__u32)gen;
	__u16 mss = (__u16)(gen >> 32);
	if (max && mss > max)
		mss = max; /* the client's segments still fit once encapsulated */

	/* The reply's IP header: the SYN's addresses swapped, fresh fields. */
	if (v4) {
		struct iphdr *ip = (void *)sc->ip;
		__u32 a = ip->saddr;
		ip->saddr = ip->daddr;
		ip->daddr = a;
		ip->tos = 0;
		ip->id = 0;
		ip->frag_off = IP_DF_BE;
		ip->ttl = COOKIE_TTL;
	} else {
		struct ipv6hdr *ip6 = (void *)sc->ip;
		__u32 a[4];
		__builtin_memcpy(a, &ip6->saddr, 16);
		__builtin_memcpy(&ip6->saddr, &ip6->daddr, 16);
		__builtin_memcpy(&ip6->daddr, a, 16);
		*(__u32 *)ip6 = bpf_htonl(0x60000000); /* version 6, no class or label */
		ip6->hop_limit = COOKIE_TTL;
	}
	const struct tcphdr *in = (const void *)sc->tcp;
	__u16 sport = in->source, dport = in->dest;
	__u32 ack = bpf_htonl(bpf_ntohl(in->seq) + 1);
	struct tcphdr *tcp = cookie_rebuild(ctx, sc, v4);
	if (!tcp)
		return -1;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1;
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	tcp->source = dport;
	tcp->dest = sport;
	tcp->seq = bpf_htonl(cookie);
	tcp->ack_seq = ack;
	*(__u16 *)((__u8 *)tcp + TCP_FLAG_WORD_OFF) = bpf_htons(TCP_WORD_SYNACK_24);
	tcp->window = bpf_htons(COOKIE_WINDOW);
	cookie_finish(tcp, sc, v4, mss);
	return XDP_TX;
}

/* cookie_mss finds the MSS a cookie encodes: the one for which the
 * kernel makes the same cookie for this ACK's SYN (sc holds the ACK's
 * headers; its TCP header becomes that SYN's, but for ack_seq). A cookie
 * made in the previous minute matches none, and gets the smallest. */
static __always_inline __u16 cookie_mss(struct cookie_scratch *sc, int v4)
{
	struct tcphdr *t = (void *)sc->tcp;
	__u32 ack = t->ack_seq;
	__u32 cookie = bpf_ntohl(ack) - 1;
	__u16 mss = v4 ? COOKIE_MSS4_0 : COOKIE_MSS6_0;
	t->seq = bpf_htonl(bpf_ntohl(t->seq) - 1);
	t->ack_seq = 0;
	*(__u16 *)((__u8 *)t + TCP_FLAG_WORD_OFF) = bpf_htons(TCP_WORD_SYN_24);
	__u8 *opt = sc->tcp + sizeof(struct tcphdr);
	opt[0] = TCPOPT_MSS_KIND;
	opt[1] = TCPOLEN_MSS_LEN;
	__u16 table[4];
	if (v4) {
		table[0] = COOKIE_MSS4_0, table[1] = COOKIE_MSS4_1, table[2] = COOKIE_MSS4_2, table[3] = COOKIE_MSS4_3;
	} else {
		table[0] = COOKIE_MSS6_0, table[1] = COOKIE_MSS6_1, table[2] = COOKIE_MSS6_2, table[3] = COOKIE_MSS6_3;
	}
#pragma unroll
	for (int i = 3; i > 0; i--) {
		*(__u16 *)(opt + 2) = bpf_htons(table[i]);
		__s64 gen = v4 ? bpf_tcp_raw_gen_syncookie_ipv4((void *)sc->ip, (void *)sc->tcp, COOKIE_TCP_LEN)
			       : bpf_tcp_raw_gen_syncookie_ipv6((void *)sc->ip, (void *)sc->tcp, COOKIE_TCP_LEN);
		if (gen >= 0 && (__u32)gen == cookie) {
			mss = table[i];
			break;
		}
	}
	t->ack_seq = ack;
	return mss;
}

/* cookie_ack checks an ACK for a cookie. With one, it turns the packet
 * into the SYN the endpoint must see (the client's sequence number, the
 * cookie's MSS, and ack_seq still acknowledging the cookie, for tier 2;
 * data and IPv4 options dropped: the client sends the data again) and
 * returns 1; it returns 0 for an ACK without one, and -1 when it cannot
 * tell. */
static __always_inline int cookie_ack(struct xdp_md *ctx, struct cookie_scratch *sc, int v4)
{
	long ok;
	if (cookie_headers(ctx, sc, v4, 0) < 0)
		return -1;
	if (v4)
		ok = bpf_tcp_raw_check_syncookie_ipv4((void *)sc->ip, (void *)sc->tcp);
	else
		ok = bpf_tcp_raw_check_syncookie_ipv6((void *)sc->ip, (void *)sc->tcp);
	if (ok != 0)
		return 0;
	__u16 mss = cookie_mss(sc, v4);
	struct tcphdr *tcp = cookie_rebuild(ctx, sc, v4);
	if (!tcp)
		return -1;
	__builtin_memcpy(tcp, sc->tcp, sizeof(struct tcphdr));
	cookie_finish(tcp, sc, v4, mss);
	return 1;
}

/* ironlb_cookie is the SYN-cookie program ironlb_xdp tail-calls (see
 * cookie.h): it answers a SYN with a cookie, or checks an ACK for one and
 * hands the packet back, a SYN if it held one (cookie_pass). */
SEC("xdp")
int ironlb_cookie(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct flow f = {};
	struct hdrs h = {};
	__u32 zero = 0;

	struct cookie_scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
	struct config_entry *cfg = bpf_map_lookup_elem(&config, &zero);
	__u32 pass;
	if (!sc || !cfg)
		return drop(DROP_NO_CONFIG);
	/* Without metadata room (the driver's choice) nothing can be
	 * handed back: cookies go off on this node for good, and this
	 * packet is dropped (its client sends it again, and it then goes
	 * the usual way). */
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(__u32)) || bpf_xdp_adjust_meta(ctx, sizeof(__u32))) {
		__u32 *unusable = bpf_map_lookup_elem(&cookies_unusable, &zero);
		if (unusable)
			*unusable = 1;
		return drop(DROP_COOKIE_UNSUPPORTED);
	}
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (parse_flow(data, data_end, &f, &h, 1) != PARSE_L4 || f.proto != IPPROTO_TCP)
		return drop(DROP_MALFORMED);
	struct vip_info *vip = lookup_vip(&f);
	if (!vip)
		return XDP_PASS;
	__u32 id = vip->service_id;
	struct service_stats *st = bpf_map_lookup_elem(&stats, &id);
	struct tcphdr *tcp = h.l4;
	if ((void *)(tcp + 1) > data_end)
		return drop(DROP_MALFORMED);
	int v4 = f.family == FAMILY_V4;
	if (tcp->syn && !tcp->ack) {
		if (cookie_synack(ctx, cfg, sc, v4) == XDP_TX) {
			if (st)
				st->cookies_sent++;
			return XDP_TX;
		}
		pass = COOKIE_PASS_CHECKED; /* no cookie: the SYN goes on */
	} else {
		int r = cookie_ack(ctx, sc, v4);
		if (st && r >= 0) {
			if (r)
				st->cookies_ok++;
			else
				st->cookies_bad++;
		}
		pass = r > 0 ? COOKIE_PASS_OK : COOKIE_PASS_CHECKED;
	}
	/* Without room for the metadata (a driver without it) an ACK still
	 * goes on, checked again each time until the tail calls run out;
	 * the SYN made of it cannot. */
	if (set_cookie_meta(ctx, pass) < 0 && pass == COOKIE_PASS_OK)
		return drop(DROP_NO_CONFIG);
	bpf_tail_call(ctx, &progs, PROG_MAIN);
	return drop(DROP_NO_CONFIG);
}

char __license[] SEC("license") = "Dual BSD/GPL";
