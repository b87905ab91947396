package bpf

import (
	"bytes"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// The duties the data plane takes over from kube-proxy and the kernel:
// source ranges, trusted tunnels, flows re-placed when what they point to
// is gone, reverse NAT kept with its flow, failing open without a
// speaker, and client affinity that survives a new endpoint.

// vipInfo returns the vips entry of key, to change a field of it.
func vipInfo(t *testing.T, objs *LbObjects, k LbVipKey) LbVipInfo {
	t.Helper()
	var v LbVipInfo
	must(t, objs.Vips.Lookup(k, &v))
	return v
}

func putVIP(t *testing.T, objs *LbObjects, k LbVipKey, v LbVipInfo) {
	t.Helper()
	must(t, objs.Vips.Put(k, v))
}

func nowCoarse(t testing.TB) uint64 {
	t.Helper()
	var ts unix.Timespec
	must(t, unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts))
	return uint64(ts.Nano())
}

func denied(t *testing.T, objs *LbObjects, id uint32) uint64 {
	t.Helper()
	var per []LbServiceStats
	must(t, objs.Stats.Lookup(id, &per))
	var n uint64
	for _, s := range per {
		n += s.Denied
	}
	return n
}

// dstOf returns the destination address of an IPv4 or IPv6 frame.
func dstOf(frame []byte) netip.Addr {
	if frame[12] == 0x08 {
		return netip.AddrFrom4([4]byte(frame[14+16 : 14+20]))
	}
	return netip.AddrFrom16([16]byte(frame[14+24 : 14+40]))
}

// TestSourceRanges: a VIP whose Service lists loadBalancerSourceRanges
// admits the clients inside them only, in both families, on every port,
// for new and established flows alike; a VIP without ranges stays open.
func TestSourceRanges(t *testing.T) {
	objs := load(t)
	world(t, objs)
	setRing(t, objs, 1, 1)
	setRing(t, objs, 3, 11)
	setBackends(t, objs, 1, 8080, pod1)
	setBackends(t, objs, 3, 8080, pod6)
	restrict := func(k LbVipKey, acl uint32) {
		v := vipInfo(t, objs, k)
		v.Acl = acl
		putVIP(t, objs, k, v)
	}
	// acl 1: 198.51.100.0/24 and 10.89.0.0/30 (client4 is 10.89.0.2);
	// acl 2: 198.51.100.0/24 only; acl 3: fd89::/120 (client6).
	for acl, ps := range map[uint32][]string{1: {"198.51.100.0/24", "10.89.0.0/30"}, 2: {"198.51.100.0/24"}, 3: {"fd89::/120"}, 4: {"2001:db8::/32"}} {
		for _, p := range ps {
			must(t, objs.SourceRanges.Put(RangeKeyFor(acl, netip.MustParsePrefix(p)), uint32(1)))
		}
	}
	syn4 := pkt{src: client4, dst: vip4, proto: 6, sport: 40000, dport: 80, flags: tcpSYN}.frame()
	ack4 := pkt{src: client4, dst: vip4, proto: 6, sport: 40000, dport: 80, flags: tcpACK}.frame()
	syn6 := pkt{src: client6, dst: vip6, proto: 6, sport: 40000, dport: 80, flags: tcpSYN}.frame()

	steps := []struct {
		name  string
		setup func()
		in    []byte
		want  uint32
	}{
		{"no ranges: open", nil, syn4, xdpPass},
		{"client inside the ranges", func() { restrict(key(vip4, 80, 6), 1) }, syn4, xdpPass},
		{"the ranges shrink: the established flow is refused", func() { restrict(key(vip4, 80, 6), 2) }, ack4, xdpDrop},
		{"a new flow from outside is refused", nil, pkt{src: client4, dst: vip4, proto: 6, sport: 40001, dport: 80, flags: tcpSYN}.frame(), xdpDrop},
		{"the ranges grow back: served again", func() { restrict(key(vip4, 80, 6), 1) }, ack4, xdpPass},
		{"IPv6 client inside", func() { restrict(key(vip6, 80, 6), 3) }, syn6, xdpPass},
		{"IPv6 client outside", func() { restrict(key(vip6, 80, 6), 4) }, syn6, xdpDrop},
	}
	for _, s := range steps {
		if s.setup != nil {
			s.setup()
		}
		if ret, _ := runXDP(t, objs.IronlbXdp, s.in, 0); ret != s.want {
			t.Errorf("%s: verdict %d, want %d", s.name, ret, s.want)
		}
	}
	if d := drops(t, objs); d[LbDropReasonDROP_SOURCE_RANGE] != 3 {
		t.Errorf("source_range drops %d, want 3", d[LbDropReasonDROP_SOURCE_RANGE])
	}
	if n := denied(t, objs, 1); n != 2 {
		t.Errorf("VIP 1 denied %d packets, want 2", n)
	}
	if n := denied(t, objs, 3); n != 1 {
		t.Errorf("VIP 3 denied %d packets, want 1", n)
	}
}

// TestSourceRangesEncapsulated: tier 2 checks the ranges too, so a flow a
// node with older ranges sent is refused where it lands.
func TestSourceRangesEncapsulated(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	setBackends(t, objs, 1, 8080, pod1)
	v := vipInfo(t, objs, key(vip4, 80, 6))
	v.Acl = 7
	putVIP(t, objs, key(vip4, 80, 6), v)
	must(t, objs.SourceRanges.Put(RangeKeyFor(7, netip.MustParsePrefix("198.51.100.0/24")), uint32(1)))
	in := pkt{src: client4, dst: vip4, proto: 6, sport: 41000, dport: 80, flags: tcpSYN}.encapsulated(nodeB4, self4, macNodeB, macSelf)
	if ret, _ := runXDP(t, objs.IronlbXdp, in, ifindex); ret != xdpDrop {
		t.Errorf("encapsulated packet from a client outside the ranges: verdict %d, want XDP_DROP", ret)
	}
}

// TestTrustedTunnels: only nodes may send encapsulated VIP packets; a
// forged one from anyone else never reaches a pod, and is counted.
func TestTrustedTunnels(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	setBackends(t, objs, 1, 8080, pod1)
	setBackends(t, objs, 3, 8080, pod6)
	stranger4, stranger6 := netip.MustParseAddr("10.89.0.2"), netip.MustParseAddr("fd89::2")
	forged := pkt{src: netip.MustParseAddr("192.0.2.77"), dst: vip4, proto: 17, sport: 5000, dport: 7, payload: []byte("x")}
	tests := []struct {
		name string
		in   []byte
		want uint32
	}{
		{"IPIP from a client", pkt{src: client4, dst: vip4, proto: 6, sport: 41000, dport: 80, flags: tcpSYN}.encapsulated(stranger4, self4, macClient, macSelf), xdpDrop},
		{"IPIP with a forged inner source", forged.encapsulated(stranger4, self4, macClient, macSelf), xdpDrop},
		{"IPv6-in-IPv6 from a client", pkt{src: client6, dst: vip6, proto: 6, sport: 41000, dport: 80}.encapsulated(stranger6, self6, macClient, macSelf), xdpDrop},
		{"IPIP from node B", pkt{src: client4, dst: vip4, proto: 6, sport: 41000, dport: 80, flags: tcpSYN}.encapsulated(nodeB4, self4, macNodeB, macSelf), xdpPass},
	}
	for _, tc := range tests {
		ret, out := runXDP(t, objs.IronlbXdp, tc.in, ifindex)
		if ret != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, ret, tc.want)
		}
		if tc.want == xdpPass && dstOf(out) != pod1 {
			t.Errorf("%s: delivered to %s, want %s", tc.name, dstOf(out), pod1)
		}
	}
	if d := drops(t, objs); d[LbDropReasonDROP_UNTRUSTED_TUNNEL] != 3 {
		t.Errorf("untrusted_tunnel drops %d, want 3", d[LbDropReasonDROP_UNTRUSTED_TUNNEL])
	}
	// A node that leaves the cluster is a stranger from then on.
	must(t, objs.TunnelPeers.Delete(PeerKeyFor(nodeB4)))
	if ret, _ := runXDP(t, objs.IronlbXdp, pkt{src: client4, dst: vip4, proto: 6, sport: 41001, dport: 80}.encapsulated(nodeB4, self4, macNodeB, macSelf), ifindex); ret != xdpDrop {
		t.Errorf("IPIP from a removed node: verdict %d, want XDP_DROP", ret)
	}
}

// TestStaleFlowsReplaced: a flow pinned to an endpoint that is gone, or to
// a node that no longer serves the VIP, is placed again on its next packet
// once the VIP's generation moves; a terminating endpoint keeps its flows.
func TestStaleFlowsReplaced(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	udp := pkt{src: client4, dst: vip4, proto: 17, sport: 5353, dport: 7, payload: []byte("q")}
	bump := func(k LbVipKey) {
		v := vipInfo(t, objs, k)
		v.Gen++
		putVIP(t, objs, k, v)
	}
	send := func(p pkt) (uint32, netip.Addr) {
		ret, out := runXDP(t, objs.IronlbXdp, p.frame(), ifindex)
		return ret, dstOf(out)
	}
	// Tier 2: the UDP flow lands on pod1.
	setRing(t, objs, 2, 1)
	must(t, objs.RingMembers.Put(LbMemberKey{ServiceId: 2, Node: 1}, uint32(1)))
	setBackends(t, objs, 2, 7007, pod1)
	if ret, dst := send(udp); ret != xdpPass || dst != pod1 {
		t.Fatalf("first datagram: verdict %d to %s, want pod1", ret, dst)
	}
	// pod1 terminates (still serving), pod2 is ready: the flow stays.
	var set LbBackendSet
	set.Count, set.Ready = 2, 1
	set.Be[0] = LbBackend{Addr: Addr(pod2), Port: Port(7007), Family: 4}
	set.Be[1] = LbBackend{Addr: Addr(pod1), Port: Port(7007), Family: 4}
	must(t, objs.Backends.Put(uint32(2), set))
	bump(key(vip4, 7, 17))
	if _, dst := send(udp); dst != pod1 {
		t.Errorf("a terminating endpoint lost its flow: to %s, want pod1", dst)
	}
	// pod1 is gone: the same 5-tuple goes to pod2 now, and its replies
	// get the VIP back.
	setBackends(t, objs, 2, 7007, pod2)
	if _, dst := send(udp); dst != pod1 {
		t.Errorf("before the generation moves the flow keeps its entry: to %s", dst)
	}
	bump(key(vip4, 7, 17))
	if ret, dst := send(udp); ret != xdpPass || dst != pod2 {
		t.Errorf("after its endpoint left: verdict %d to %s, want pod2", ret, dst)
	}
	reply := pkt{src: pod2, dst: client4, proto: 17, sport: 7007, dport: 5353, payload: []byte("a"), srcMAC: macSelf, dstMAC: macClient}
	want := pkt{src: vip4, dst: client4, proto: 17, sport: 7, dport: 5353, payload: []byte("a"), srcMAC: macSelf, dstMAC: macClient}
	if _, out := runTC(t, objs.IronlbTcEgress, reply.frame()); !bytes.Equal(out[:len(want.frame())], want.frame()) {
		t.Errorf("the re-placed flow's reply is not reverse-NATed\n got %x\nwant %x", out, want.frame())
	}

	// A TCP flow keeps its endpoint when it leaves the slice, as
	// kube-proxy's conntrack does: its pod may still run.
	setRing(t, objs, 1, 1)
	setBackends(t, objs, 1, 8080, pod1)
	tcp2 := pkt{src: client4, dst: vip4, proto: 6, sport: 42500, dport: 80, flags: tcpACK}
	if _, dst := send(tcp2); dst != pod1 {
		t.Fatalf("TCP flow to %s, want pod1", dst)
	}
	setBackends(t, objs, 1, 8080, pod2)
	bump(key(vip4, 80, 6))
	if _, dst := send(tcp2); dst != pod1 {
		t.Errorf("a TCP flow left its endpoint: to %s, want pod1", dst)
	}

	// Tier 1: flows pinned to node B while B served the VIP.
	tcp := pkt{src: client4, dst: vip4, proto: 6, sport: 42000, dport: 80, flags: tcpACK}
	udpB := pkt{src: client4, dst: vip4, proto: 17, sport: 5400, dport: 7, payload: []byte("q")}
	setRing(t, objs, 1, 2)
	setRing(t, objs, 2, 2)
	setBackends(t, objs, 1, 8080, pod1)
	must(t, objs.RingMembers.Put(LbMemberKey{ServiceId: 1, Node: 2}, uint32(1)))
	must(t, objs.RingMembers.Put(LbMemberKey{ServiceId: 2, Node: 2}, uint32(1)))
	for _, p := range []pkt{tcp, udpB} {
		if ret, _ := send(p); ret != xdpTX {
			t.Fatalf("to node B: verdict %d, want XDP_TX", ret)
		}
	}
	// The rings move to this node; B still serves: both flows stay on B.
	setRing(t, objs, 1, 1)
	setRing(t, objs, 2, 1)
	must(t, objs.RingMembers.Put(LbMemberKey{ServiceId: 1, Node: 1}, uint32(1)))
	bump(key(vip4, 80, 6))
	bump(key(vip4, 7, 17))
	for _, p := range []pkt{tcp, udpB} {
		if ret, _ := send(p); ret != xdpTX {
			t.Errorf("proto %d: a flow left its node while the node still serves: verdict %d, want XDP_TX", p.proto, ret)
		}
	}
	// B lives but serves neither port any more: the UDP flow is placed
	// again, here; the TCP flow stays (B's tier 2 knows its endpoint).
	must(t, objs.RingMembers.Delete(LbMemberKey{ServiceId: 1, Node: 2}))
	must(t, objs.RingMembers.Delete(LbMemberKey{ServiceId: 2, Node: 2}))
	bump(key(vip4, 80, 6))
	bump(key(vip4, 7, 17))
	if ret, dst := send(udpB); ret != xdpPass || dst != pod2 {
		t.Errorf("a UDP flow pinned to a node that no longer serves: verdict %d to %s, want XDP_PASS to pod2", ret, dst)
	}
	if ret, _ := send(tcp); ret != xdpTX {
		t.Errorf("a TCP flow left a live node: verdict %d, want XDP_TX", ret)
	}
	// A connection not yet made (a SYN retransmitted after its first
	// went to B) is placed again, since B serves the VIP no more.
	syn := pkt{src: client4, dst: vip4, proto: 6, sport: 42100, dport: 80, flags: tcpSYN}
	must(t, objs.Ct1.Put(LbFlow{Src: Addr(client4), Dst: Addr(vip4), Sport: Port(42100), Dport: Port(80), Proto: 6, Family: 4},
		LbCt1Entry{Node: Addr(nodeB4), Idx: 2}))
	if ret, dst := send(syn); ret != xdpPass || dst != pod1 {
		t.Errorf("a SYN pinned to a node that no longer serves: verdict %d to %s, want XDP_PASS to pod1", ret, dst)
	}
	// Tier 2 alike: a SYN whose endpoint left goes to one that serves.
	syn2 := pkt{src: client4, dst: vip4, proto: 6, sport: 42200, dport: 80, flags: tcpSYN}
	must(t, objs.Ct2.Put(LbFlow{Src: Addr(client4), Dst: Addr(vip4), Sport: Port(42200), Dport: Port(80), Proto: 6, Family: 4},
		LbCt2Entry{Be: LbBackend{Addr: Addr(pod2), Port: Port(8080), Family: 4}}))
	if _, dst := send(syn2); dst != pod1 {
		t.Errorf("a SYN pinned to an endpoint that left: to %s, want pod1", dst)
	}
	// B dies: its TCP flow is placed again too.
	must(t, objs.Nodes.Put(uint32(2), LbNodeInfo{}))
	bump(key(vip4, 80, 6))
	if ret, dst := send(tcp); ret != xdpPass || dst != pod1 {
		t.Errorf("a TCP flow pinned to a dead node: verdict %d to %s, want XDP_PASS to pod1", ret, dst)
	}
}

// TestRevnatKeptWithFlow: a reverse-NAT entry the LRU dropped while tier-2
// conntrack still holds the flow is written again within a second.
func TestRevnatKeptWithFlow(t *testing.T) {
	objs := load(t)
	world(t, objs)
	setRing(t, objs, 1, 1)
	setBackends(t, objs, 1, 8080, pod1)
	p := pkt{src: client4, dst: vip4, proto: 6, sport: 43000, dport: 80, flags: tcpACK}
	if ret, _ := runXDP(t, objs.IronlbXdp, p.frame(), 0); ret != xdpPass {
		t.Fatalf("verdict %d", ret)
	}
	rk := LbFlow{Src: Addr(pod1), Dst: Addr(client4), Sport: Port(8080), Dport: Port(43000), Proto: 6, Family: 4}
	must(t, objs.Revnat.Delete(rk))
	// Later (the entry's last check moved back by 1 000 jiffies).
	fk := LbFlow{Src: Addr(client4), Dst: Addr(vip4), Sport: Port(43000), Dport: Port(80), Proto: 6, Family: 4}
	var ce LbCt2Entry
	must(t, objs.Ct2.Lookup(fk, &ce))
	ce.RevnatAt -= 1000
	must(t, objs.Ct2.Put(fk, ce))
	if ret, _ := runXDP(t, objs.IronlbXdp, p.frame(), 0); ret != xdpPass {
		t.Fatalf("verdict %d", ret)
	}
	var vk LbVipKey
	if err := objs.Revnat.Lookup(rk, &vk); err != nil || vk != key(vip4, 80, 6) {
		t.Errorf("reverse NAT not restored: %v %+v", err, vk)
	}
}

// TestStaleSpeaker: once the heartbeat is older than the bound, VIP
// traffic goes to the kernel untouched, and is counted; a fresh heartbeat
// resumes forwarding.
func TestStaleSpeaker(t *testing.T) {
	objs := load(t)
	world(t, objs)
	setRing(t, objs, 1, 1)
	setBackends(t, objs, 1, 8080, pod1)
	var cfg LbConfigEntry
	must(t, objs.Config.Lookup(uint32(0), &cfg))
	in := pkt{src: client4, dst: vip4, proto: 6, sport: 44000, dport: 80, flags: tcpSYN}.frame()

	cfg.StaleAfter = 60_000_000_000
	cfg.Heartbeat = nowCoarse(t) - 61_000_000_000
	must(t, objs.Config.Put(uint32(0), cfg))
	ret, out := runXDP(t, objs.IronlbXdp, in, 0)
	if ret != xdpPass || !bytes.Equal(out[:len(in)], in) {
		t.Errorf("stale: verdict %d, modified %v; want XDP_PASS, untouched", ret, !bytes.Equal(out[:len(in)], in))
	}
	if d := drops(t, objs); d[LbDropReasonPASS_STALE] != 1 {
		t.Errorf("stale_speaker count %d, want 1", d[LbDropReasonPASS_STALE])
	}
	cfg.Heartbeat = nowCoarse(t)
	must(t, objs.Config.Put(uint32(0), cfg))
	if ret, out := runXDP(t, objs.IronlbXdp, in, 0); ret != xdpPass || dstOf(out) != pod1 {
		t.Errorf("fresh heartbeat: verdict %d to %s, want pod1", ret, dstOf(out))
	}
}

// TestAffinityStable: with sessionAffinity ClientIP a client keeps its
// endpoint when another endpoint is added, until its affinity times out.
func TestAffinityStable(t *testing.T) {
	objs := load(t)
	world(t, objs)
	setRing(t, objs, 4, 1)
	v := vipInfo(t, objs, key(vip4, 81, 6))
	v.AffinityTimeout = 10800
	putVIP(t, objs, key(vip4, 81, 6), v)
	var pods []netip.Addr
	for i := range 8 {
		pods = append(pods, netip.AddrFrom4([4]byte{10, 89, 1, byte(10 + i)}))
	}
	setBackends(t, objs, 4, 8081, pods[:4]...)
	conn := func(sport uint16) netip.Addr {
		ret, out := runXDP(t, objs.IronlbXdp, pkt{src: client4, dst: vip4, proto: 6, sport: sport, dport: 81, flags: tcpSYN}.frame(), 0)
		if ret != xdpPass {
			t.Fatalf("verdict %d", ret)
		}
		return dstOf(out)
	}
	first := conn(50000)
	// Four more endpoints: most clients would move under hash modulo n.
	setBackends(t, objs, 4, 8081, pods...)
	v.Gen++
	putVIP(t, objs, key(vip4, 81, 6), v)
	for sport := uint16(50001); sport < 50017; sport++ {
		if got := conn(sport); got != first {
			t.Fatalf("connection from port %d reached %s, the client's endpoint is %s", sport, got, first)
		}
	}
	// Its endpoint leaves: the client gets another one, and keeps it.
	var rest []netip.Addr
	for _, p := range pods {
		if p != first {
			rest = append(rest, p)
		}
	}
	setBackends(t, objs, 4, 8081, rest...)
	second := conn(50100)
	if second == first {
		t.Fatalf("the client still reaches %s, which left", first)
	}
	if got := conn(50101); got != second {
		t.Errorf("after moving, the client reached %s then %s", second, got)
	}
}
