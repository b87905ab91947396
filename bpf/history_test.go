package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// Ring history: a TCP packet of a flow that this node does not know goes
// on, marked, to the node its own ring gives the flow when that is another
// (a lagging ring), else to the node the previous ring gave it while the
// history lasts; the flow keeps going there after; a marked packet, a
// SYN, any packet once the history is over, or with history off, is
// served here.

// setPrevRing puts a previous ring whose every slot points to node, kept
// for until (coarse clock ns), for service id.
func setPrevRing(t *testing.T, objs *LbObjects, id, node uint32, k LbVipKey, until uint64) {
	t.Helper()
	ring := uniformRing(t, node)
	defer func() { _ = ring.Close() }()
	must(t, objs.RingsPrev.Put(id, ring))
	v := vipInfo(t, objs, k)
	v.PrevUntil = until
	putVIP(t, objs, k, v)
}

// marked sets the second-hop mark on an encapsulated frame.
func marked(frame []byte) []byte {
	out := bytes.Clone(frame)
	if out[12] == 0x08 {
		binary.BigEndian.PutUint16(out[14+4:], 0x1b2d)
		out[14+10], out[14+11] = 0, 0
		binary.BigEndian.PutUint16(out[14+10:], fold(sum16(out[14:34], 0)))
	} else {
		out[14+3] |= 1
	}
	return out
}

// checkPassedOn asserts out is inner (the IP packet) in an outer header
// from this node to to, with the second-hop mark and a right checksum.
func checkPassedOn(t *testing.T, what string, out, inner []byte, to netip.Addr) {
	t.Helper()
	if to.Is4() {
		o := out[14:34]
		switch {
		case binary.BigEndian.Uint16(out[12:]) != 0x0800 || o[9] != 4:
			t.Errorf("%s: not IPIP", what)
		case netip.AddrFrom4([4]byte(o[12:16])) != self4 || netip.AddrFrom4([4]byte(o[16:20])) != to:
			t.Errorf("%s: outer %s -> %s, want %s -> %s", what, netip.AddrFrom4([4]byte(o[12:16])), netip.AddrFrom4([4]byte(o[16:20])), self4, to)
		case binary.BigEndian.Uint16(o[4:]) != 0x1b2d:
			t.Errorf("%s: outer ID %#x, want the second-hop mark", what, binary.BigEndian.Uint16(o[4:]))
		case fold(sum16(o, 0)) != 0:
			t.Errorf("%s: outer checksum wrong", what)
		case !bytes.Equal(out[34:34+len(inner)], inner):
			t.Errorf("%s: the inner packet changed", what)
		}
		return
	}
	o := out[14:54]
	switch {
	case binary.BigEndian.Uint16(out[12:]) != 0x86dd || o[6] != 41:
		t.Errorf("%s: not IPv6-in-IPv6", what)
	case netip.AddrFrom16([16]byte(o[8:24])) != self6 || netip.AddrFrom16([16]byte(o[24:40])) != to:
		t.Errorf("%s: outer %s -> %s, want %s -> %s", what, netip.AddrFrom16([16]byte(o[8:24])), netip.AddrFrom16([16]byte(o[24:40])), self6, to)
	case o[3]&1 == 0:
		t.Errorf("%s: no second-hop mark in the flow label", what)
	case !bytes.Equal(out[54:54+len(inner)], inner):
		t.Errorf("%s: the inner packet changed", what)
	}
}

func TestRingHistory(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	history := func(on bool) {
		var cfg LbConfigEntry
		must(t, objs.Config.Lookup(uint32(0), &cfg))
		cfg.Flags &^= ConfigHistory
		if on {
			cfg.Flags |= ConfigHistory
		}
		must(t, objs.Config.Put(uint32(0), cfg))
	}
	history(true)
	setRing(t, objs, 1, 1)  // vip4:80: this node now
	setRing(t, objs, 3, 11) // vip6:80: this node now
	setBackends(t, objs, 1, 8080, pod1)
	setBackends(t, objs, 3, 8080, pod6)
	soon := nowCoarse(t) + 60e9
	setPrevRing(t, objs, 1, 2, key(vip4, 80, 6), soon)  // node B before
	setPrevRing(t, objs, 3, 12, key(vip6, 80, 6), soon) // node B before
	chain := func(p pkt) (LbCt2Entry, bool) {
		var e LbCt2Entry
		err := objs.Ct2.Lookup(flowOf(p), &e)
		return e, err == nil && e.Be.Family&0x80 != 0
	}

	for _, c := range []struct {
		client, vip, nodeC, nodeB netip.Addr
	}{{client4, vip4, nodeC4, nodeB4}, {client6, vip6, self6, nodeB6}} {
		// A director (node C; for IPv6 any node) sends an established
		// flow this node does not know: on to node B, marked.
		p := pkt{src: c.client, dst: c.vip, proto: 6, sport: 56000, dport: 80, flags: tcpACK}
		in := p.encapsulated(c.nodeC, selfOf(c.vip), macNodeB, macSelf)
		ret, out := runXDP(t, objs.IronlbXdp, in, ifindex)
		if ret != xdpTX {
			t.Fatalf("%s: an unknown flow's packet: verdict %d, want XDP_TX on to node B", c.vip, ret)
		}
		checkPassedOn(t, c.vip.String()+" first packet", out, p.ip(), c.nodeB)
		if e, ok := chain(p); !ok || e.Ifindex != map[bool]uint32{true: 2, false: 12}[c.vip.Is4()] {
			t.Errorf("%s: the flow is not recorded as passed on to node B: %+v", c.vip, e)
		}
		// The history ends; the flow keeps going to node B.
		setPrevRing(t, objs, map[bool]uint32{true: 1, false: 3}[c.vip.Is4()], map[bool]uint32{true: 2, false: 12}[c.vip.Is4()], key(c.vip, 80, 6), nowCoarse(t)-1)
		ret, out = runXDP(t, objs.IronlbXdp, in, ifindex)
		if ret != xdpTX {
			t.Fatalf("%s: a passed-on flow after the history: verdict %d, want XDP_TX", c.vip, ret)
		}
		checkPassedOn(t, c.vip.String()+" after the history", out, p.ip(), c.nodeB)
		// Another unknown flow, history over: served here.
		q := p
		q.sport = 56001
		ret, out = runXDP(t, objs.IronlbXdp, q.encapsulated(c.nodeC, selfOf(c.vip), macNodeB, macSelf), ifindex)
		if ret != xdpPass || dstOf(out) != map[bool]netip.Addr{true: pod1, false: pod6}[c.vip.Is4()] {
			t.Errorf("%s: history over: verdict %d to %s, want XDP_PASS to the endpoint", c.vip, ret, dstOf(out))
		}
		setPrevRing(t, objs, map[bool]uint32{true: 1, false: 3}[c.vip.Is4()], map[bool]uint32{true: 2, false: 12}[c.vip.Is4()], key(c.vip, 80, 6), soon)
		// A marked packet is never passed on again: no loop.
		r := p
		r.sport = 56002
		ret, out = runXDP(t, objs.IronlbXdp, marked(r.encapsulated(c.nodeB, selfOf(c.vip), macNodeB, macSelf)), ifindex)
		if ret != xdpPass || dstOf(out) != map[bool]netip.Addr{true: pod1, false: pod6}[c.vip.Is4()] {
			t.Errorf("%s: a second hop: verdict %d to %s, want XDP_PASS to the endpoint", c.vip, ret, dstOf(out))
		}
		if _, ok := chain(r); ok {
			t.Errorf("%s: a second hop recorded as passed on", c.vip)
		}
		// A SYN is a new flow: served here.
		s := p
		s.sport, s.flags = 56003, tcpSYN
		if ret, _ := runXDP(t, objs.IronlbXdp, s.encapsulated(c.nodeC, selfOf(c.vip), macNodeB, macSelf), ifindex); ret != xdpPass {
			t.Errorf("%s: a SYN: verdict %d, want XDP_PASS (served here)", c.vip, ret)
		}
	}

	// This node as the director: the current ring gives it the flow,
	// it has no entry, the previous ring says node B: encapsulated there,
	// marked.
	p := pkt{src: client4, dst: vip4, proto: 6, sport: 56100, dport: 80, flags: tcpACK}
	ret, out := runXDP(t, objs.IronlbXdp, p.frame(), ifindex)
	if ret != xdpTX {
		t.Fatalf("director: verdict %d, want XDP_TX to node B", ret)
	}
	checkPassedOn(t, "director", out, p.ip(), nodeB4)

	// A node whose own ring is older than the director's (its speaker
	// lags, or is down): its ring gives the flow to node B, no history
	// needed.
	setRing(t, objs, 1, 2)
	setPrevRing(t, objs, 1, 2, key(vip4, 80, 6), 0)
	q := pkt{src: client4, dst: vip4, proto: 6, sport: 56200, dport: 80, flags: tcpACK}
	ret, out = runXDP(t, objs.IronlbXdp, q.encapsulated(nodeC4, self4, macNodeB, macSelf), ifindex)
	if ret != xdpTX {
		t.Fatalf("lagging ring: verdict %d, want XDP_TX on to node B", ret)
	}
	checkPassedOn(t, "lagging ring", out, q.ip(), nodeB4)

	// Ring history off: served here.
	history(false)
	q.sport = 56201
	ret, out = runXDP(t, objs.IronlbXdp, q.encapsulated(nodeC4, self4, macNodeB, macSelf), ifindex)
	if ret != xdpPass || dstOf(out) != pod1 {
		t.Errorf("history off: verdict %d to %s, want XDP_PASS to pod1", ret, dstOf(out))
	}
}

func selfOf(vip netip.Addr) netip.Addr {
	if vip.Is4() {
		return self4
	}
	return self6
}

// TestReusedTuple: a new connection (a SYN) on the tuple of an old one
// whose established entry no longer holds (a flow passed on by ring
// history; an endpoint that left; a node that left the ring) is placed
// again, and the old entry goes: the connection's next packets follow the
// new placement, not the stale entry.
func TestReusedTuple(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	var cfg LbConfigEntry
	must(t, objs.Config.Lookup(uint32(0), &cfg))
	cfg.Flags |= ConfigHistory
	must(t, objs.Config.Put(uint32(0), cfg))
	setRing(t, objs, 1, 1) // vip4:80: this node
	setBackends(t, objs, 1, 8080, pod1)

	// A stale chain entry (to node B) for the tuple of a new connection.
	p := pkt{src: client4, dst: vip4, proto: 6, sport: 57000, dport: 80, flags: tcpSYN}
	must(t, objs.Ct2.Put(flowOf(p), LbCt2Entry{Be: LbBackend{Addr: Addr(nodeB4), Family: 4 | 0x80}, Ifindex: 2, Gen: 0}))
	ret, out := runXDP(t, objs.IronlbXdp, p.encapsulated(nodeC4, self4, macNodeB, macSelf), ifindex)
	if ret != xdpPass || dstOf(out) != pod1 {
		t.Fatalf("a SYN on a passed-on tuple: verdict %d to %s, want XDP_PASS to pod1", ret, dstOf(out))
	}
	var e LbCt2Entry
	if objs.Ct2.Lookup(flowOf(p), &e) == nil {
		t.Errorf("the stale chain entry is still in ct2: %+v", e)
	}
	synack := pkt{src: pod1, dst: client4, proto: 6, sport: 8080, dport: 57000, flags: tcpSYN | tcpACK, seq: 500}
	runTC(t, objs.IronlbTcEgress, synack.frame())
	ack := p
	ack.flags, ack.ack = tcpACK, 501
	if ret, out := runXDP(t, objs.IronlbXdp, ack.encapsulated(nodeC4, self4, macNodeB, macSelf), ifindex); ret != xdpPass || dstOf(out) != pod1 {
		t.Errorf("the new connection's ACK: verdict %d to %s, want XDP_PASS to pod1", ret, dstOf(out))
	}

	// A stale established entry whose endpoint left (another generation).
	q := pkt{src: client4, dst: vip4, proto: 6, sport: 57001, dport: 80, flags: tcpSYN}
	must(t, objs.Ct2.Put(flowOf(q), LbCt2Entry{Be: LbBackend{Addr: Addr(pod2), Port: Port(8080), Family: 4}, Gen: 99}))
	if ret, out := runXDP(t, objs.IronlbXdp, q.frame(), ifindex); ret != xdpPass || dstOf(out) != pod1 {
		t.Fatalf("a SYN on a tuple whose endpoint left: verdict %d to %s, want pod1", ret, dstOf(out))
	}
	q.flags = tcpACK
	if ret, out := runXDP(t, objs.IronlbXdp, q.frame(), ifindex); ret != xdpPass || dstOf(out) != pod1 {
		t.Errorf("its ACK: verdict %d to %s, want pod1 (not the stale pod2)", ret, dstOf(out))
	}

	// Tier 1: a stale entry to node B, which no longer serves the VIP.
	setRing(t, objs, 2, 3) // vip4:7/UDP unused; vip4:80 below
	r := pkt{src: client4, dst: vip4, proto: 6, sport: 57002, dport: 80, flags: tcpSYN}
	must(t, objs.Ct1.Put(flowOf(r), LbCt1Entry{Node: Addr(nodeB4), Idx: 2, Gen: 99}))
	if ret, out := runXDP(t, objs.IronlbXdp, r.frame(), ifindex); ret != xdpPass || dstOf(out) != pod1 {
		t.Fatalf("a SYN on a tuple pinned to a node that left: verdict %d to %s, want this node's pod1", ret, dstOf(out))
	}
	var e1 LbCt1Entry
	if objs.Ct1.Lookup(flowOf(r), &e1) == nil {
		t.Errorf("the stale tier-1 entry is still in ct1: %+v", e1)
	}
	r.flags = tcpACK
	if ret, out := runXDP(t, objs.IronlbXdp, r.frame(), ifindex); ret != xdpPass || dstOf(out) != pod1 {
		t.Errorf("its ACK: verdict %d to %s, want this node's pod1 (not node B)", ret, dstOf(out))
	}
}

// TestResetClearsEntries: an endpoint's RST leaves with the VIP as its
// source, and the flow's tier-2 entries and reverse NAT go with it, so no
// later connection on the tuple meets them.
func TestResetClearsEntries(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	setRing(t, objs, 1, 1)
	setBackends(t, objs, 1, 8080, pod1)
	p := pkt{src: client4, dst: vip4, proto: 6, sport: 58000, dport: 80, flags: tcpACK}
	if ret, _ := runXDP(t, objs.IronlbXdp, p.frame(), ifindex); ret != xdpPass {
		t.Fatalf("verdict %d", ret)
	}
	rk := replyOf(p, pod1, 8080)
	var e LbCt2Entry
	var vk LbVipKey
	if !has(objs.Ct2, flowOf(p), &e) || !has(objs.Revnat, rk, &vk) {
		t.Fatal("the flow is not established")
	}
	rst := pkt{src: pod1, dst: client4, proto: 6, sport: 8080, dport: 58000, flags: 0x04 | tcpACK}
	ret, out := runTC(t, objs.IronlbTcEgress, rst.frame())
	want := rst
	want.src, want.sport = vip4, 80
	if ret != tcOK || string(out[:len(want.frame())]) != string(want.frame()) {
		t.Error("the RST must leave from the VIP")
	}
	if has(objs.Ct2, flowOf(p), &e) || has(objs.Revnat, rk, &vk) {
		t.Error("the reset flow's ct2 or revnat entry is still there")
	}
}
