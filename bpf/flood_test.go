package bpf

import (
	"net/netip"
	"os"
	"testing"
	"time"
)

// The conntrack that keeps what matters: flows start in the unverified
// tables and move to the established ones once they prove themselves; a
// flood churns the unverified tables only; the flood guard stops tier 1
// recording new flows above a rate; the per-source limit drops a client's
// new flows above the VIP's rate.

// loadSized loads the programs with conntrack tables of flows entries and
// unverified tables of fresh entries.
func loadSized(t testing.TB, flows, fresh uint32) *LbObjects {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root; CI runs as root")
	}
	spec, err := LoadLb()
	must(t, err)
	for _, m := range []string{"ct1", "ct2", "revnat", "shifts"} {
		spec.Maps[m].MaxEntries = flows
	}
	for _, m := range []string{"ct1_new", "ct2_new", "revnat_new"} {
		spec.Maps[m].MaxEntries = fresh
	}
	var objs LbObjects
	must(t, spec.LoadAndAssign(&objs, nil))
	t.Cleanup(func() { _ = objs.Close() })
	withProgs(t, &objs)
	return &objs
}

func flowOf(p pkt) LbFlow {
	return LbFlow{Src: Addr(p.src), Dst: Addr(p.dst), Sport: Port(p.sport), Dport: Port(p.dport), Proto: p.proto, Family: FamilyOf(p.dst)}
}

// replyOf is the reverse-NAT key of p's flow on endpoint ep:port.
func replyOf(p pkt, ep netip.Addr, port uint16) LbFlow {
	return LbFlow{Src: Addr(ep), Dst: Addr(p.src), Sport: Port(port), Dport: Port(p.sport), Proto: p.proto, Family: FamilyOf(ep)}
}

func has(m interface{ Lookup(any, any) error }, k LbFlow, v any) bool {
	return m.Lookup(k, v) == nil
}

func stats(t testing.TB, objs *LbObjects, id uint32) LbServiceStats {
	t.Helper()
	var per []LbServiceStats
	must(t, objs.Stats.Lookup(id, &per))
	var s LbServiceStats
	for _, p := range per {
		s.Add(p)
	}
	return s
}

// earlyInSecond waits until the coarse clock is in the first 400 ms of a
// second: the guard and the per-source limit count per second, and a test
// that sends a few packets must not straddle two.
func earlyInSecond(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for nowCoarse(t)%1e9 > 400e6 {
		if time.Now().After(deadline) {
			t.Fatal("the coarse clock did not reach a new second")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUnverifiedTier1: a lone SYN is recorded as unverified and the next
// packet of its flow makes it established; a UDP flow moves once it has
// lived PROMOTE_JIFFIES; an established TCP flow picked up mid-way goes
// straight to the established table.
func TestUnverifiedTier1(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	setRing(t, objs, 1, 2) // vip4:80 -> node B
	setRing(t, objs, 2, 2) // vip4:7/UDP -> node B
	var e LbCt1Entry

	syn := pkt{src: client4, dst: vip4, proto: 6, sport: 50000, dport: 80, flags: tcpSYN}
	if ret, _ := runXDP(t, objs.IronlbXdp, syn.frame(), ifindex); ret != xdpTX {
		t.Fatalf("SYN: verdict %d, want XDP_TX", ret)
	}
	if !has(objs.Ct1New, flowOf(syn), &e) || has(objs.Ct1, flowOf(syn), &e) {
		t.Fatal("a lone SYN must be recorded in ct1_new only")
	}
	ack := syn
	ack.flags = tcpACK
	if ret, _ := runXDP(t, objs.IronlbXdp, ack.frame(), ifindex); ret != xdpTX {
		t.Fatalf("ACK: verdict %d, want XDP_TX", ret)
	}
	if !has(objs.Ct1, flowOf(ack), &e) || e.Idx != 2 {
		t.Fatalf("the ACK after the SYN must make the flow established (node 2), got %+v", e)
	}

	udp := pkt{src: client4, dst: vip4, proto: 17, sport: 50001, dport: 7, payload: []byte("x")}
	for i := range 2 {
		if ret, _ := runXDP(t, objs.IronlbXdp, udp.frame(), ifindex); ret != xdpTX {
			t.Fatalf("UDP %d: verdict %d", i, ret)
		}
	}
	if has(objs.Ct1, flowOf(udp), &e) {
		t.Fatal("a UDP flow younger than PROMOTE_JIFFIES must stay unverified")
	}
	must(t, objs.Ct1New.Lookup(flowOf(udp), &e))
	e.Born -= 1000
	must(t, objs.Ct1New.Put(flowOf(udp), e))
	if ret, _ := runXDP(t, objs.IronlbXdp, udp.frame(), ifindex); ret != xdpTX {
		t.Fatalf("UDP: verdict %d", ret)
	}
	if !has(objs.Ct1, flowOf(udp), &e) {
		t.Fatal("a UDP flow older than PROMOTE_JIFFIES must become established")
	}

	mid := pkt{src: client4, dst: vip4, proto: 6, sport: 50002, dport: 80, flags: tcpACK}
	if ret, _ := runXDP(t, objs.IronlbXdp, mid.frame(), ifindex); ret != xdpTX {
		t.Fatalf("mid-flow: verdict %d", ret)
	}
	if !has(objs.Ct1, flowOf(mid), &e) || has(objs.Ct1New, flowOf(mid), &e) {
		t.Fatal("a TCP flow picked up mid-way (guard off) must be recorded as established")
	}
}

// TestHandshakeProven: at tier 2 a SYN's flow and its reverse NAT are
// unverified; TC egress notes the endpoint's SYN-ACK; an ACK that does not
// acknowledge it (a blind spoofer's) leaves the flow unverified, and the
// client's real ACK makes it established, in both families.
func TestHandshakeProven(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	setRing(t, objs, 1, 1)  // vip4:80 -> this node
	setRing(t, objs, 3, 11) // vip6:80 -> this node
	setBackends(t, objs, 1, 8080, pod1)
	setBackends(t, objs, 3, 8080, pod6)
	for _, c := range []struct {
		client, vip, ep netip.Addr
	}{{client4, vip4, pod1}, {client6, vip6, pod6}} {
		syn := pkt{src: c.client, dst: c.vip, proto: 6, sport: 51000, dport: 80, flags: tcpSYN}
		if ret, out := runXDP(t, objs.IronlbXdp, syn.frame(), ifindex); ret != xdpPass || dstOf(out) != c.ep {
			t.Fatalf("%s SYN: verdict %d to %s", c.vip, ret, dstOf(out))
		}
		var ce LbCt2Entry
		var vk LbVipKey
		var ne LbRevnatNewEntry
		rk := replyOf(syn, c.ep, 8080)
		if !has(objs.Ct2New, flowOf(syn), &ce) || !has(objs.RevnatNew, rk, &ne) {
			t.Fatalf("%s: a SYN's flow must be in ct2_new and revnat_new", c.vip)
		}
		if has(objs.Ct2, flowOf(syn), &ce) || has(objs.Revnat, rk, &vk) {
			t.Fatalf("%s: a lone SYN must not reach ct2 or revnat", c.vip)
		}
		// The endpoint answers: TC egress gives it the VIP's address
		// and notes its sequence number.
		synack := pkt{src: c.ep, dst: c.client, proto: 6, sport: 8080, dport: 51000, flags: tcpSYN | tcpACK, seq: 0x7777}
		ret, out := runTC(t, objs.IronlbTcEgress, synack.frame())
		want := synack
		want.src, want.sport = c.vip, 80
		if ret != tcOK || string(out[:len(want.frame())]) != string(want.frame()) {
			t.Fatalf("%s: the SYN-ACK must leave from the VIP", c.vip)
		}
		must(t, objs.RevnatNew.Lookup(rk, &ne))
		if ne.Synack != 1 || ne.Isn != 0x7777 {
			t.Fatalf("%s: revnat_new %+v, want the SYN-ACK's sequence 0x7777", c.vip, ne)
		}
		blind := syn
		blind.flags, blind.ack = tcpACK, 0x1234
		if ret, _ := runXDP(t, objs.IronlbXdp, blind.frame(), ifindex); ret != xdpPass {
			t.Fatalf("%s: blind ACK verdict %d", c.vip, ret)
		}
		if has(objs.Ct2, flowOf(syn), &ce) || has(objs.Revnat, rk, &vk) {
			t.Fatalf("%s: an ACK of the wrong sequence must not make the flow established", c.vip)
		}
		real := syn
		real.flags, real.ack = tcpACK, 0x7778
		if ret, out := runXDP(t, objs.IronlbXdp, real.frame(), ifindex); ret != xdpPass || dstOf(out) != c.ep {
			t.Fatalf("%s: ACK verdict %d to %s", c.vip, ret, dstOf(out))
		}
		if !has(objs.Ct2, flowOf(syn), &ce) || !has(objs.Revnat, rk, &vk) || vk != key(c.vip, 80, 6) {
			t.Fatalf("%s: the ACK of the SYN-ACK must make the flow and its reverse NAT established", c.vip)
		}
	}
}

// TestFloodKeepsEstablished: with conntrack of 1024 flows and unverified
// tables of 256, 4096 never-seen SYNs (a flood four times the size of
// the established table) leave an established flow's tier-1 entry, tier-2
// entry and reverse NAT in place. The same number of never-seen mid-flow
// packets, which go to the established tables while the guard is off,
// does evict it (so the flood is big enough to matter); with the guard on
// they go to the unverified tables, and the flow stays.
func TestFloodKeepsEstablished(t *testing.T) {
	const flood = 4096
	for _, c := range []struct {
		name  string
		flags uint8
		rate  uint32
		kept  bool
	}{
		{"SYN flood, guard off", tcpSYN, 0, true},
		{"mid-flow flood, guard off", tcpACK, 0, false},
		{"mid-flow flood, guard on", tcpACK, 64, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			objs := loadSized(t, 1024, 256)
			ifindex := testNet(t)
			world(t, objs)
			var cfg LbConfigEntry
			must(t, objs.Config.Lookup(uint32(0), &cfg))
			cfg.NewFlowRate = c.rate
			must(t, objs.Config.Put(uint32(0), cfg))
			setRing(t, objs, 1, 2) // vip4:80 -> node B: tier 1
			setBackends(t, objs, 5, 8082, pod1)
			// One established flow on each tier: vip4:80 (remote)
			// and vip4:82 (Local, this node's endpoint).
			remote := pkt{src: client4, dst: vip4, proto: 6, sport: 52000, dport: 80, flags: tcpSYN}
			local := pkt{src: client4, dst: vip4, proto: 6, sport: 52001, dport: 82, flags: tcpSYN}
			runXDP(t, objs.IronlbXdp, remote.frame(), ifindex)
			runXDP(t, objs.IronlbXdp, local.frame(), ifindex)
			synack := pkt{src: pod1, dst: client4, proto: 6, sport: 8082, dport: 52001, flags: tcpSYN | tcpACK, seq: 99}
			runTC(t, objs.IronlbTcEgress, synack.frame())
			remote.flags = tcpACK
			local.flags, local.ack = tcpACK, 100
			runXDP(t, objs.IronlbXdp, remote.frame(), ifindex)
			runXDP(t, objs.IronlbXdp, local.frame(), ifindex)
			var e1 LbCt1Entry
			var e2 LbCt2Entry
			var vk LbVipKey
			rk := replyOf(local, pod1, 8082)
			if !has(objs.Ct1, flowOf(remote), &e1) || !has(objs.Ct2, flowOf(local), &e2) || !has(objs.Revnat, rk, &vk) {
				t.Fatal("the flows did not become established")
			}
			// The flood: never-seen clients 10.90.x.y, both VIPs.
			for i := range flood {
				src := netip.AddrFrom4([4]byte{10, 90, byte(i >> 8), byte(i)})
				for _, port := range []uint16{80, 82} {
					p := pkt{src: src, dst: vip4, proto: 6, sport: 1024 + uint16(i), dport: port, flags: c.flags}
					if ret, _ := runXDP(t, objs.IronlbXdp, p.frame(), ifindex); ret == xdpDrop {
						t.Fatalf("flood packet %d dropped", i)
					}
				}
			}
			kept := has(objs.Ct1, flowOf(remote), &e1) && has(objs.Ct2, flowOf(local), &e2) && has(objs.Revnat, rk, &vk)
			if kept != c.kept {
				t.Fatalf("established entries kept: %v, want %v", kept, c.kept)
			}
		})
	}
}

// TestFloodGuard: above the guard's rate tier 1 forwards new flows by the
// ring without recording them, and counts them; without a rate it records
// every one.
func TestFloodGuard(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	setRing(t, objs, 1, 2)
	send := func(rate uint32, base uint16) (stored int) {
		var cfg LbConfigEntry
		must(t, objs.Config.Lookup(uint32(0), &cfg))
		cfg.NewFlowRate = rate
		must(t, objs.Config.Put(uint32(0), cfg))
		for i := range uint16(20) {
			p := pkt{src: client4, dst: vip4, proto: 6, sport: base + i, dport: 80, flags: tcpSYN}
			if ret, _ := runXDP(t, objs.IronlbXdp, p.frame(), ifindex); ret != xdpTX {
				t.Fatalf("SYN %d: verdict %d, want XDP_TX (the ring sends it either way)", i, ret)
			}
			var e LbCt1Entry
			if has(objs.Ct1New, flowOf(p), &e) {
				stored++
			}
		}
		return stored
	}
	earlyInSecond(t)
	if n := send(10, 53000); n != 10 {
		t.Errorf("guard at 10 a second: %d of 20 new flows recorded, want 10", n)
	}
	if s := stats(t, objs, 1); s.NewFlows != 20 || s.Unstored != 10 {
		t.Errorf("new_flows %d, unstored %d: want 20 and 10", s.NewFlows, s.Unstored)
	}
	if n := send(0, 54000); n != 20 {
		t.Errorf("guard off: %d of 20 new flows recorded, want 20", n)
	}
}

// TestSourceLimit: a VIP's per-source limit drops a client's new flows
// beyond its rate (counted by reason and per VIP), never its established
// flows, and never another client's; IPv6 clients count by /64.
func TestSourceLimit(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	setRing(t, objs, 1, 2)
	setRing(t, objs, 3, 12)
	for _, k := range []LbVipKey{key(vip4, 80, 6), key(vip6, 80, 6)} {
		v := vipInfo(t, objs, k)
		v.SrcLimit = 3
		putVIP(t, objs, k, v)
	}
	earlyInSecond(t)
	for _, c := range []struct {
		vip, client, neighbour, other netip.Addr
	}{
		{vip4, client4, client4, netip.MustParseAddr("10.89.0.3")},
		{vip6, client6, netip.MustParseAddr("fd89::3"), netip.MustParseAddr("fd89:0:0:1::2")},
	} {
		open := func(src netip.Addr, sport uint16, flags uint8) uint32 {
			ret, _ := runXDP(t, objs.IronlbXdp, pkt{src: src, dst: c.vip, proto: 6, sport: sport, dport: 80, flags: flags}.frame(), ifindex)
			return ret
		}
		for i := range uint16(3) {
			if ret := open(c.client, 55000+i, tcpSYN); ret != xdpTX {
				t.Fatalf("%s: new flow %d within the limit: verdict %d", c.vip, i, ret)
			}
		}
		if ret := open(c.neighbour, 55003, tcpSYN); ret != xdpDrop {
			t.Errorf("%s: a fourth new flow from %s's prefix: verdict %d, want XDP_DROP", c.vip, c.neighbour, ret)
		}
		if ret := open(c.client, 55000, tcpACK); ret != xdpTX {
			t.Errorf("%s: the limited client's existing flow: verdict %d, want XDP_TX", c.vip, ret)
		}
		if ret := open(c.other, 55000, tcpSYN); ret != xdpTX {
			t.Errorf("%s: another client %s: verdict %d, want XDP_TX", c.vip, c.other, ret)
		}
	}
	if d := drops(t, objs)[LbDropReasonDROP_SOURCE_LIMIT]; d != 2 {
		t.Errorf("source_limit drops %d, want 2", d)
	}
	if s := stats(t, objs, 1); s.Limited != 1 {
		t.Errorf("vip4:80 limited %d, want 1", s.Limited)
	}
}
