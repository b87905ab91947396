/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* SYN cookies for VIPs under a SYN flood, with direct server return.
 *
 * Above --syn-cookie-rate SYNs a second (per CPU and VIP port) the
 * director answers a SYN itself, with a SYN-ACK whose sequence number is
 * a cookie (the kernel's, bpf_tcp_raw_gen_syncookie_*), and forgets it: a
 * spoofed SYN costs no memory and never reaches an endpoint. A client
 * that completes the handshake sends an ACK of cookie+1, which the
 * director checks (bpf_tcp_raw_check_syncookie_*) and turns into a SYN
 * for the endpoint, sent like any SYN and marked (PROXIED_ID). Tier 2
 * keeps the cookie, and when the endpoint's SYN-ACK leaves (TC egress)
 * it learns the shift between the endpoint's sequence numbers and the
 * cookie, answers the endpoint with the ACK that completes its
 * handshake, and from then on shifts the endpoint's sequence numbers
 * (TC egress) and the client's acknowledgements (tier 2) by it.
 *
 * The cookie holds the MSS only (recovered by making the cookie again
 * for each MSS the kernel's table has): such a connection goes without
 * window scaling, SACK and timestamps, as the kernel's own cookies do
 * without timestamps. Data the client sends before the endpoint's
 * SYN-ACK has left is dropped (DROP_PROXY_PENDING) and sent again. */
#ifndef IRONLB_COOKIE_H
#define IRONLB_COOKIE_H

#include <linux/tcp.h>

/* The MSS values the kernel's cookies encode (net/ipv4/syncookies.c,
 * net/ipv6/syncookies.c), smallest first. */
#define COOKIE_MSS4_0 536
#define COOKIE_MSS4_1 1300
#define COOKIE_MSS4_2 1440
#define COOKIE_MSS4_3 1460
#define COOKIE_MSS6_0 1220
#define COOKIE_MSS6_1 1420
#define COOKIE_MSS6_2 1440
#define COOKIE_MSS6_3 8940

/* TCP's flag word (data offset and flags) as it sits in the header. */
#define TCP_WORD_SYN_24 0x6002    /* 24-byte header, SYN */
#define TCP_WORD_SYNACK_24 0x6012 /* 24-byte header, SYN and ACK */
#define TCP_FLAG_WORD_OFF 12
#define COOKIE_TCP_LEN 24 /* a TCP header with one MSS option */

/* The cookie program tells ironlb_xdp what it hands back (a COOKIE_PASS_*)
 * in the packet's XDP metadata: it belongs to that packet alone. Decap
 * says the same of a SYN a director marked. */
#define COOKIE_META_MAGIC 0x1b2c0000
#define COOKIE_META_MASK 0xffff0000

static __always_inline int cookie_meta(struct xdp_md *ctx)
{
	void *meta = (void *)(long)ctx->data_meta;
	void *data = (void *)(long)ctx->data;
	if (meta + sizeof(__u32) > data)
		return 0;
	__u32 m = *(__u32 *)meta;
	return (m & COOKIE_META_MASK) == COOKIE_META_MAGIC ? (int)(m & ~COOKIE_META_MASK) : 0;
}

static __always_inline int set_cookie_meta(struct xdp_md *ctx, __u32 pass)
{
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(__u32)))
		return -1;
	void *meta = (void *)(long)ctx->data_meta;
	void *data = (void *)(long)ctx->data;
	if (meta + sizeof(__u32) > data)
		return -1;
	*(__u32 *)meta = COOKIE_META_MAGIC | pass;
	return 0;
}

/* cookie_gate counts a never-seen SYN of the VIP port (syn) and, when the
 * port is over the rate on this CPU, turns its cookies on; a SYN while
 * they are on, or an ACK while cookie ACKs are checked, goes to the
 * cookie program, which ends the packet or hands it back (cookie_pass).
 * Otherwise it returns, and the packet goes on as usual. */
static __always_inline void cookie_gate(struct xdp_md *ctx, const struct config_entry *cfg,
					const struct vip_info *vip, const struct hdrs *h, void *data_end,
					int syn)
{
	struct tcphdr *tcp = h->l4;
	if ((void *)(tcp + 1) > data_end)
		return;
	if (syn ? !(tcp->syn && !tcp->ack) : (!tcp->ack || tcp->syn || tcp->rst))
		return;
	__u32 id = vip->service_id, zero = 0;
	struct cookie_state *cs = bpf_map_lookup_elem(&cookies, &id);
	__u32 *unusable = bpf_map_lookup_elem(&cookies_unusable, &zero);
	if (!cs || !unusable || *unusable)
		return;
	__u64 now = coarse_now();
	if (syn) {
		struct guard *m = bpf_map_lookup_elem(&syn_meter, &id);
		if (m) {
			__u64 second = now / NS_PER_SEC;
			if (m->second != second) {
				m->second = second;
				m->count = 0;
			}
			/* The state is shared by every CPU: written at most
			 * once a tenth of a second by each. */
			if (++m->count > cfg->syn_cookie_rate &&
			    cs->on_until < now + COOKIE_HOLD_NS - NS_PER_SEC / 10) {
				cs->on_until = now + COOKIE_HOLD_NS;
				cs->check_until = now + COOKIE_HOLD_NS + COOKIE_CHECK_NS;
			}
		}
		if (cs->on_until > now)
			bpf_tail_call(ctx, &progs, PROG_COOKIE);
		return;
	}
	if (cs->check_until > now)
		bpf_tail_call(ctx, &progs, PROG_COOKIE);
}

/* proxy_mark makes the flow of a SYN a cookie proved proxied, once tier2
 * has placed it (v, its verdict): its tier-2 entry says so, and so does
 * its reverse NAT; the shift waits for the endpoint's SYN-ACK, with the
 * cookie, which the SYN carries in ack_seq (a field a SYN does not use,
 * cleared here: the endpoint gets a plain SYN). The packet's headers are
 * as cookie_ack made them (a 20-byte IPv4 header). Not inlined, and
 * calling nothing that is not: the main program's stack is full. */
static __attribute__((noinline)) int proxy_mark(struct xdp_md *ctx, const struct flow *f, int v)
{
	if (v != XDP_PASS && v != XDP_REDIRECT)
		return v;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct cookie_scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
	struct ct2_entry *ce = bpf_map_lookup_elem(&ct2_new, f);
	if (!ce)
		ce = bpf_map_lookup_elem(&ct2, f);
	struct tcphdr *tcp = data + ETH_HDR_LEN + (f->family == FAMILY_V4 ? IPV4_HDR_LEN : IPV6_HDR_LEN);
	if (!sc || !ce || (void *)(tcp + 1) > data_end || !tcp->syn || tcp->ack)
		return XDP_DROP; /* evicted at once, or no SYN: not to be proxied */
	ce->flags |= CT2_PROXIED;
	reply_of(f, &ce->be, &sc->rk);
	struct seq_shift s = {.cookie = bpf_ntohl(tcp->ack_seq) - 1, .win = bpf_ntohs(tcp->window)};
	bpf_map_update_elem(&shifts, &sc->rk, &s, BPF_ANY);
	struct revnat_new_entry *ne = bpf_map_lookup_elem(&revnat_new, &sc->rk);
	if (ne)
		ne->vip.family |= REVNAT_PROXIED;
	struct vip_key *vk = bpf_map_lookup_elem(&revnat, &sc->rk);
	if (vk)
		vk->family |= REVNAT_PROXIED;
	csum_replace4(&tcp->check, tcp->ack_seq, 0);
	tcp->ack_seq = 0;
	return v;
}

/* proxy_ack shifts the acknowledgement of a client's packet of a proxied
 * flow into the endpoint's sequence numbers; it fails until the
 * endpoint's SYN-ACK has shown the shift. */
static __attribute__((noinline)) int proxy_ack(const struct flow *f, const struct backend *be,
					       struct tcphdr *tcp, void *data_end)
{
	__u32 zero = 0;
	struct cookie_scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
	if (!sc || (void *)(tcp + 1) > data_end)
		return -1;
	reply_of(f, be, &sc->rk);
	struct seq_shift *s = bpf_map_lookup_elem(&shifts, &sc->rk);
	if (!s || !s->ready)
		return -1;
	if (tcp->ack) {
		__u32 old = tcp->ack_seq;
		__u32 new = bpf_htonl(bpf_ntohl(old) + s->delta);
		csum_replace4(&tcp->check, old, new);
		tcp->ack_seq = new;
	}
	return 0;
}

/* proxy_icmp shifts the sequence number an ICMP error about a proxied
 * flow quotes (the reply as it left, in the client's view) into the
 * endpoint's, once icmp_to_backend has rewritten the rest: the endpoint's
 * kernel ignores an error whose sequence number it never sent, and path
 * MTU discovery would not work. cf is the client's flow, be its
 * endpoint. Not inlined, and calling nothing that is not. */
static __attribute__((noinline)) int proxy_icmp(void *data, void *data_end, const struct flow *cf,
						const struct backend *be)
{
	__u32 zero = 0;
	struct cookie_scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
	if (!sc)
		return 0;
	reply_of(cf, be, &sc->rk);
	struct seq_shift *s = bpf_map_lookup_elem(&shifts, &sc->rk);
	if (!s || !s->ready)
		return 0;
	__u8 *icmp = data + ETH_HDR_LEN + (cf->family == FAMILY_V4 ? IPV4_HDR_LEN : IPV6_HDR_LEN);
	__u32 *qseq = (void *)(icmp + ICMP_HDR_LEN + (cf->family == FAMILY_V4 ? IPV4_HDR_LEN : IPV6_HDR_LEN) + 4);
	__u16 *icsum = (void *)(icmp + 2);
	if ((void *)(qseq + 1) > data_end || (void *)(icsum + 1) > data_end)
		return 0; /* no sequence number quoted */
	__u32 old = *qseq;
	__u32 new = bpf_htonl(bpf_ntohl(old) + s->delta);
	csum_replace4(icsum, old, new);
	*qseq = new;
	return 0;
}

/* skb_replace4 rewrites a 32-bit TCP field at off, with the checksum at
 * csum_off. */
static __always_inline void skb_replace4(struct __sk_buff *skb, __u32 csum_off, __u32 off, __u32 old, __u32 new)
{
	bpf_l4_csum_replace(skb, csum_off, old, new, sizeof(__u32));
	bpf_skb_store_bytes(skb, off, &new, sizeof(new), 0);
}

/* proxy_reply handles, in TC egress, a reply of a proxied flow f (as it
 * leaves the endpoint) whose TCP header is at l4off. The endpoint's
 * SYN-ACK gives the shift and becomes the ACK that completes the
 * endpoint's handshake, sent back in (TC_ACT_REDIRECT): the client has
 * its SYN-ACK already, the cookie. Any other reply gets its sequence
 * number shifted to the client's view (TC_ACT_OK); so does the RST of an
 * endpoint that refuses the SYN. Another reply before the shift is known,
 * or one of a flow whose shift is gone, is dropped. */
static __always_inline int proxy_reply(struct __sk_buff *skb, const struct flow *f, __u32 l4off)
{
	struct seq_shift *s = bpf_map_lookup_elem(&shifts, f);
	if (!s)
		return TC_ACT_SHOT;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (l4off > MSS_CLAMP_MAX_L4_OFFSET)
		return TC_ACT_SHOT; /* bounds the offset for the verifier */
	struct tcphdr *tcp = data + l4off;
	if ((void *)(tcp + 1) > data_end)
		return TC_ACT_SHOT;
	__u32 csum_off = l4off + offsetof(struct tcphdr, check);
	__u32 seq = tcp->seq;
	if (!(tcp->syn && tcp->ack)) {
		/* The endpoint refused the SYN (RST): the client hears it at
		 * the sequence number it waits for, cookie + 1. */
		__u32 to = s->ready ? bpf_ntohl(seq) - s->delta : s->cookie + 1;
		if (!s->ready && !tcp->rst)
			return TC_ACT_SHOT;
		skb_replace4(skb, csum_off, l4off + offsetof(struct tcphdr, seq), seq, bpf_htonl(to));
		return TC_ACT_OK;
	}
	/* The SYN-ACK: endpoint ISN - cookie is the shift (again for a
	 * SYN-ACK sent again: the same ISN). */
	s->delta = bpf_ntohl(seq) - s->cookie;
	s->ready = 1;
	__u32 ack = tcp->ack_seq;
	__u16 win = bpf_htons(s->win);
	__u16 oldword = *(__u16 *)((__u8 *)tcp + TCP_FLAG_WORD_OFF);
	__u16 oldwin = tcp->window;
	__u32 optlen = tcp->doff * 4;
	if (optlen < sizeof(struct tcphdr) || optlen > TCP_MAX_HDR_LEN)
		return TC_ACT_SHOT;
	optlen -= sizeof(struct tcphdr);

	/* The ACK: from the client to the endpoint (the swaps leave every
	 * checksum as it is), acknowledging the endpoint's ISN, with the
	 * options made NOPs (an ACK takes none of a SYN-ACK's). */
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT;
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	__u32 a[4];
	if (f->family == FAMILY_V4) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return TC_ACT_SHOT;
		a[0] = ip->saddr;
		ip->saddr = ip->daddr;
		ip->daddr = a[0];
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return TC_ACT_SHOT;
		__builtin_memcpy(a, &ip6->saddr, 16);
		__builtin_memcpy(&ip6->saddr, &ip6->daddr, 16);
		__builtin_memcpy(&ip6->daddr, a, 16);
	}
	__u16 port = tcp->source;
	tcp->source = tcp->dest;
	tcp->dest = port;
	__u16 word = bpf_htons((bpf_ntohs(oldword) & 0xf000) | 0x10); /* ACK */
	skb_replace4(skb, csum_off, l4off + offsetof(struct tcphdr, seq), seq, ack);
	skb_replace4(skb, csum_off, l4off + offsetof(struct tcphdr, ack_seq), ack,
		     bpf_htonl(bpf_ntohl(seq) + 1));
	bpf_l4_csum_replace(skb, csum_off, oldword, word, sizeof(__u16));
	bpf_skb_store_bytes(skb, l4off + TCP_FLAG_WORD_OFF, &word, sizeof(word), 0);
	bpf_l4_csum_replace(skb, csum_off, oldwin, win, sizeof(__u16));
	bpf_skb_store_bytes(skb, l4off + offsetof(struct tcphdr, window), &win, sizeof(win), 0);
	__u32 nops = 0x01010101;
	for (__u32 i = 0; i < (TCP_MAX_HDR_LEN - sizeof(struct tcphdr)) / 4; i++) {
		if (i * 4 >= optlen)
			break;
		__u32 off = l4off + sizeof(struct tcphdr) + i * 4;
		__u32 old;
		if (bpf_skb_load_bytes(skb, off, &old, sizeof(old)))
			return TC_ACT_SHOT;
		skb_replace4(skb, csum_off, off, old, nops);
	}
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

/* tcp_csum24 computes the checksum of a 24-byte TCP header (no payload)
 * from the pseudo-header's sum of addresses and its own bytes. */
static __always_inline __u16 tcp_csum24(__u32 addrsum, int v4, void *tcp)
{
	__u32 c = addrsum;
	if (v4) {
		c += bpf_htons(IPPROTO_TCP);
		c += bpf_htons(COOKIE_TCP_LEN);
	} else {
		c = csum_add32(c, bpf_htonl(COOKIE_TCP_LEN));
		c = csum_add32(c, bpf_htonl(IPPROTO_TCP));
	}
	return csum_fold(bpf_csum_diff(NULL, 0, tcp, COOKIE_TCP_LEN, c));
}

/* addr_sum is the ones'-complement sum of a packet's two addresses (the
 * IP header, copied to scratch). */
static __always_inline __u32 addr_sum(const __u8 *ip, int v4)
{
	const __u32 *w = (const void *)(ip + (v4 ? offsetof(struct iphdr, saddr) : offsetof(struct ipv6hdr, saddr)));
	__u32 c = 0;
#pragma unroll
	for (int i = 0; i < 8; i++)
		if (v4 ? i < 2 : 1)
			c = csum_add32(c, w[i]);
	return c;
}

#endif
