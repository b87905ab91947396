package bpf

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/internal/netnstest"
)

// Verdicts.
const (
	xdpDrop = 1
	xdpTX   = 3
	tcOK    = 0
)

// The node this test plays (self) and two others.
var (
	self4    = netip.MustParseAddr("10.89.0.11")
	self6    = netip.MustParseAddr("fd89::11")
	nodeB4   = netip.MustParseAddr("10.89.0.12")
	nodeB6   = netip.MustParseAddr("fd89::12")
	nodeC4   = netip.MustParseAddr("10.89.0.13")
	macNodeB = [6]byte{0x02, 0, 0, 0, 0, 0x12}
	pod1     = netip.MustParseAddr("10.89.1.2")
	pod2     = netip.MustParseAddr("10.89.1.3")
	pod6     = netip.MustParseAddr("fd89:1::2")
)

const ringSize = 16381

// testNet puts the calling goroutine's thread in a fresh, anonymous
// network namespace with a link that has this node's addresses and
// permanent neighbour entries for node B, so bpf_fib_lookup resolves it.
// It returns the link's index.
func testNet(t testing.TB) int {
	t.Helper()
	netnstest.Enter(t)
	// A veth pair: this kernel has no dummy links.
	link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "t0", HardwareAddr: net.HardwareAddr(macSelf[:])}, PeerName: "t1"}
	if err := netlink.LinkAdd(link); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"t0", "t1"} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	t0, err := netlink.LinkByName("t0")
	if err != nil {
		t.Fatal(err)
	}
	// bpf_fib_lookup wants forwarding on, as on any Kubernetes node. This
	// thread's /proc/sys/net is the new namespace's.
	for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if err := os.WriteFile(f, []byte("1"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []string{"10.89.0.11/24", "fd89::11/64"} {
		addr, _ := netlink.ParseAddr(a)
		addr.Flags = 0x02 // IFA_F_NODAD: usable at once
		if err := netlink.AddrAdd(t0, addr); err != nil {
			t.Fatal(err)
		}
	}
	for _, ip := range []netip.Addr{nodeB4, nodeB6} {
		err := netlink.NeighAdd(&netlink.Neigh{LinkIndex: t0.Attrs().Index, State: netlink.NUD_PERMANENT,
			IP: ip.AsSlice(), HardwareAddr: net.HardwareAddr(macNodeB[:])})
		if err != nil {
			t.Fatal(err)
		}
	}
	return t0.Attrs().Index
}

// world fills the maps: node indexes 1 self, 2 node B (both families), 3
// node C; VIP services 1 (vip4:80/TCP), 2 (vip4:7/UDP), 3 (vip6:80/TCP),
// 4 (vip4:81/TCP, affinity), 5 (vip4:82/TCP, Local).
// worldVIPs are the Services world installs, by service ID.
var worldVIPs = map[uint32]struct {
	k     LbVipKey
	flags uint32
}{
	1: {key(vip4, 80, 6), 0},
	2: {key(vip4, 7, 17), 0},
	3: {key(vip6, 80, 6), 0},
	4: {key(vip4, 81, 6), VIPAffinity},
	5: {key(vip4, 82, 6), VIPLocal},
}

// world installs this node's settings, the nodes, the tunnel peers and
// the VIPs of worldVIPs, and returns the set of VIP keys: what a fuzz
// oracle must treat as served.
func world(t testing.TB, objs *LbObjects) map[LbVipKey]bool {
	t.Helper()
	must(t, objs.Config.Put(uint32(0), LbConfigEntry{Self4: Addr(self4)[0], Self6: Addr(self6), RingSize: ringSize, Mtu: 1500}))
	for i, n := range []netip.Addr{self4, nodeB4, nodeC4} {
		must(t, objs.Nodes.Put(uint32(i+1), LbNodeInfo{Addr: Addr(n), Family: 4}))
	}
	must(t, objs.Nodes.Put(uint32(11), LbNodeInfo{Addr: Addr(self6), Family: 6}))
	must(t, objs.Nodes.Put(uint32(12), LbNodeInfo{Addr: Addr(nodeB6), Family: 6}))
	for _, n := range []netip.Addr{self4, nodeB4, nodeC4, self6, nodeB6} {
		must(t, objs.TunnelPeers.Put(PeerKeyFor(n), uint32(0)))
	}
	served := map[LbVipKey]bool{}
	for id, v := range worldVIPs {
		must(t, objs.Vips.Put(v.k, LbVipInfo{ServiceId: id, Flags: v.flags}))
		served[v.k] = true
	}
	return served
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// setRing swaps in a ring whose every slot points to node index.
func setRing(t testing.TB, objs *LbObjects, id, node uint32) {
	t.Helper()
	ring := uniformRing(t, node)
	defer func() { _ = ring.Close() }()
	must(t, objs.Rings.Put(id, ring))
}

// uniformRing returns a ring whose every slot points to node index.
func uniformRing(t testing.TB, node uint32) *ebpf.Map {
	t.Helper()
	ring, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: ringSize, Flags: unix.BPF_F_MMAPABLE})
	must(t, err)
	keys := make([]uint32, ringSize)
	vals := make([]uint32, ringSize)
	for i := range keys {
		keys[i], vals[i] = uint32(i), node
	}
	if _, err = ring.BatchUpdate(keys, vals, nil); err != nil {
		_ = ring.Close()
		t.Fatal(err)
	}
	return ring
}

func setBackends(t testing.TB, objs *LbObjects, id uint32, port uint16, addrs ...netip.Addr) {
	t.Helper()
	var set LbBackendSet
	set.Count = uint32(len(addrs))
	set.Ready = set.Count
	for i, a := range addrs {
		set.Be[i] = LbBackend{Addr: Addr(a), Port: Port(port), Family: FamilyOf(a)}
	}
	must(t, objs.Backends.Put(id, set))
}

type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// runXDP runs prog on the frame in, received on ifindex, and returns its
// verdict and the frame it leaves (without the XDP metadata the cookie
// program adds, which the kernel's test run puts first).
func runXDP(t testing.TB, prog *ebpf.Program, in []byte, ifindex int) (uint32, []byte) {
	t.Helper()
	var ctxOut xdpMD
	opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256),
		Context: xdpMD{DataEnd: uint32(len(in)), IngressIfindex: uint32(ifindex)}, ContextOut: &ctxOut}
	if ifindex == 0 {
		opts.Context, opts.ContextOut = nil, nil
	}
	ret, err := prog.Run(opts)
	must(t, err)
	out := opts.DataOut
	if meta := int(ctxOut.Data); meta > 0 && meta <= len(out) {
		out = out[meta:]
	}
	return ret, out
}

func runTC(t testing.TB, prog *ebpf.Program, in []byte) (uint32, []byte) {
	t.Helper()
	opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
	ret, err := prog.Run(opts)
	must(t, err)
	return ret, opts.DataOut
}

func drops(t testing.TB, objs *LbObjects) []uint64 {
	t.Helper()
	out := make([]uint64, len(DropReasons))
	for i := range out {
		var per []uint64
		must(t, objs.Drops.Lookup(uint32(i), &per))
		for _, n := range per {
			out[i] += n
		}
	}
	return out
}

// TestForwarding feeds packets through the XDP and TC programs with
// BPF_PROG_TEST_RUN and compares every output byte, checksums included,
// with the packet the data plane must produce. Steps share the maps, in
// order: conntrack written by one is what a later one relies on.
func TestForwarding(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	xdp, tc := objs.IronlbXdp, objs.IronlbTcEgress

	client := pkt{src: client4, dst: vip4, proto: 6, sport: 40000, dport: 80, flags: tcpSYN, mss: 1460, payload: nil}
	dnatted := func(p pkt, to netip.Addr, port uint16) pkt { p.dst, p.dport = to, port; return p }

	steps := []struct {
		name    string
		setup   func()
		prog    string // "xdp" or "tc"
		in      []byte
		verdict uint32
		out     []byte // nil: unchanged
	}{
		{
			name:    "non-VIP passes unchanged",
			prog:    "xdp",
			in:      pkt{src: client4, dst: nodeB4, proto: 6, sport: 1, dport: 80}.frame(),
			verdict: xdpPass,
		},
		{
			name:    "VIP to a local endpoint: DNAT, to the kernel",
			setup:   func() { setRing(t, objs, 1, 1); setBackends(t, objs, 1, 8080, pod1) },
			prog:    "xdp",
			in:      client.frame(),
			verdict: xdpPass,
			out:     dnatted(client, pod1, 8080).frame(),
		},
		{
			name:    "reply: reverse NAT at TC egress, MSS clamped to fit IPIP",
			prog:    "tc",
			in:      pkt{src: pod1, dst: client4, proto: 6, sport: 8080, dport: 40000, flags: tcpSYN | tcpACK, mss: 1460, srcMAC: macSelf, dstMAC: macClient}.frame(),
			verdict: tcOK,
			out:     pkt{src: vip4, dst: client4, proto: 6, sport: 80, dport: 40000, flags: tcpSYN | tcpACK, mss: 1440, srcMAC: macSelf, dstMAC: macClient}.frame(),
		},
		{
			name:    "reply of another flow: unchanged",
			prog:    "tc",
			in:      pkt{src: pod1, dst: client4, proto: 6, sport: 8080, dport: 40001, flags: tcpACK, srcMAC: macSelf, dstMAC: macClient}.frame(),
			verdict: tcOK,
		},
		{
			name:    "tier-1 conntrack: the flow stays on its node after the ring changes",
			setup:   func() { setRing(t, objs, 1, 2) },
			prog:    "xdp",
			in:      func() []byte { p := client; p.flags, p.mss = tcpACK, 0; return p.frame() }(),
			verdict: xdpPass,
			out:     func() []byte { p := dnatted(client, pod1, 8080); p.flags, p.mss = tcpACK, 0; return p.frame() }(),
		},
		{
			name:    "VIP to another node: IPIP, outer addresses, next-hop MACs, XDP_TX",
			prog:    "xdp",
			in:      func() []byte { p := client; p.sport = 40002; return p.frame() }(),
			verdict: xdpTX,
			out:     func() []byte { p := client; p.sport = 40002; return p.encapsulated(self4, nodeB4, macSelf, macNodeB) }(),
		},
		{
			name:    "IPv6 VIP to another node: IPv6-in-IPv6",
			setup:   func() { setRing(t, objs, 3, 12) },
			prog:    "xdp",
			in:      pkt{src: client6, dst: vip6, proto: 6, sport: 40000, dport: 80, tos: 0x28}.frame(),
			verdict: xdpTX,
			out:     pkt{src: client6, dst: vip6, proto: 6, sport: 40000, dport: 80, tos: 0x28}.encapsulated(self6, nodeB6, macSelf, macNodeB),
		},
		{
			name:    "IPIP from another node: decapsulated, DNAT",
			setup:   func() { setBackends(t, objs, 1, 8080, pod2) },
			prog:    "xdp",
			in:      func() []byte { p := client; p.sport = 41000; return p.encapsulated(nodeB4, self4, macNodeB, macSelf) }(),
			verdict: xdpPass,
			out: func() []byte {
				p := dnatted(client, pod2, 8080)
				p.sport, p.srcMAC, p.dstMAC = 41000, macNodeB, macSelf
				return p.frame()
			}(),
		},
		{
			name:    "IPv6-in-IPv6 from another node: decapsulated, DNAT",
			setup:   func() { setBackends(t, objs, 3, 8080, pod6) },
			prog:    "xdp",
			in:      pkt{src: client6, dst: vip6, proto: 6, sport: 41000, dport: 80}.encapsulated(nodeB6, self6, macNodeB, macSelf),
			verdict: xdpPass,
			out:     pkt{src: client6, dst: pod6, proto: 6, sport: 41000, dport: 8080, srcMAC: macNodeB, dstMAC: macSelf}.frame(),
		},
		{
			name:    "IPv6 reply: reverse NAT",
			prog:    "tc",
			in:      pkt{src: pod6, dst: client6, proto: 6, sport: 8080, dport: 41000, flags: tcpACK, payload: []byte("hi"), srcMAC: macSelf, dstMAC: macClient}.frame(),
			verdict: tcOK,
			out:     pkt{src: vip6, dst: client6, proto: 6, sport: 80, dport: 41000, flags: tcpACK, payload: []byte("hi"), srcMAC: macSelf, dstMAC: macClient}.frame(),
		},
		{
			name:    "IPIP to another address: not ours, unchanged",
			prog:    "xdp",
			in:      client.encapsulated(nodeB4, nodeC4, macNodeB, macSelf),
			verdict: xdpPass,
		},
		{
			// The flow went to pod2 above; now only pod1 is ready, and a
			// new placement would pick it: conntrack keeps pod2.
			name:  "tier-2 conntrack: the first flow keeps its endpoint (pod2) although only pod1 is ready now",
			setup: func() { setRing(t, objs, 1, 1); setBackends(t, objs, 1, 8080, pod1) },
			prog:  "xdp",
			in: func() []byte {
				p := client
				p.sport = 41000
				p.flags, p.mss = tcpACK, 0
				return p.encapsulated(nodeB4, self4, macNodeB, macSelf)
			}(),
			verdict: xdpPass,
			out: func() []byte {
				p := dnatted(client, pod2, 8080)
				p.sport, p.flags, p.mss, p.srcMAC, p.dstMAC = 41000, tcpACK, 0, macNodeB, macSelf
				return p.frame()
			}(),
		},
		{
			name:    "UDP, local endpoint",
			setup:   func() { setRing(t, objs, 2, 1); setBackends(t, objs, 2, 7007, pod1) },
			prog:    "xdp",
			in:      pkt{src: client4, dst: vip4, proto: 17, sport: 5000, dport: 7, payload: []byte("ping")}.frame(),
			verdict: xdpPass,
			out:     pkt{src: client4, dst: pod1, proto: 17, sport: 5000, dport: 7007, payload: []byte("ping")}.frame(),
		},
		{
			name:    "UDP without checksum stays without",
			prog:    "xdp",
			in:      pkt{src: client4, dst: vip4, proto: 17, sport: 5001, dport: 7, payload: []byte("ping"), udpNoCsum: true}.frame(),
			verdict: xdpPass,
			out:     pkt{src: client4, dst: pod1, proto: 17, sport: 5001, dport: 7007, payload: []byte("ping"), udpNoCsum: true}.frame(),
		},
		{
			name:    "UDP reply: reverse NAT",
			prog:    "tc",
			in:      pkt{src: pod1, dst: client4, proto: 17, sport: 7007, dport: 5000, payload: []byte("pod ping"), srcMAC: macSelf, dstMAC: macClient}.frame(),
			verdict: tcOK,
			out:     pkt{src: vip4, dst: client4, proto: 17, sport: 7, dport: 5000, payload: []byte("pod ping"), srcMAC: macSelf, dstMAC: macClient}.frame(),
		},
		{
			name:    "externalTrafficPolicy Local: this node's endpoints, no ring",
			setup:   func() { setBackends(t, objs, 5, 8082, pod2) },
			prog:    "xdp",
			in:      pkt{src: client4, dst: vip4, proto: 6, sport: 40000, dport: 82}.frame(),
			verdict: xdpPass,
			out:     pkt{src: client4, dst: pod2, proto: 6, sport: 40000, dport: 8082}.frame(),
		},
		{
			name:    "no local endpoint: dropped, counted",
			setup:   func() { setRing(t, objs, 2, 1); must(t, objs.Backends.Delete(uint32(2))) },
			prog:    "xdp",
			in:      pkt{src: client4, dst: vip4, proto: 17, sport: 6000, dport: 7, payload: []byte("x")}.frame(),
			verdict: xdpDrop,
		},
		{
			name:    "VIP without a ring yet: dropped",
			prog:    "xdp",
			in:      pkt{src: client4, dst: vip4, proto: 6, sport: 40000, dport: 81}.frame(),
			verdict: xdpDrop,
		},
	}
	// No subtests: BPF_PROG_TEST_RUN resolves the ingress link in the
	// namespace of the calling thread, which is this goroutine's.
	for _, s := range steps {
		if s.setup != nil {
			s.setup()
		}
		var ret uint32
		var out []byte
		if s.prog == "xdp" {
			ret, out = runXDP(t, xdp, s.in, ifindex)
		} else {
			ret, out = runTC(t, tc, s.in)
		}
		if ret != s.verdict {
			t.Errorf("%s: verdict %d, want %d (drops %v)", s.name, ret, s.verdict, drops(t, objs))
			continue
		}
		want := s.out
		if want == nil {
			want = s.in
		}
		if s.verdict != xdpDrop && !bytes.Equal(out, want) {
			t.Errorf("%s: output differs\n got %x\nwant %x", s.name, out, want)
		}
	}
	d := drops(t, objs)
	if d[3] != 1 || d[1] != 1 {
		t.Errorf("drops %v: want one no_backend and one no_ring", d)
	}
}

// TestAffinity: with sessionAffinity ClientIP every connection of a client
// reaches the same endpoint; without it, connections spread.
func TestAffinity(t *testing.T) {
	objs := load(t)
	world(t, objs)
	pods := []netip.Addr{}
	for i := range 16 {
		pods = append(pods, netip.AddrFrom4([4]byte{10, 89, 1, byte(10 + i)}))
	}
	setRing(t, objs, 4, 1) // vip4:81, affinity
	setRing(t, objs, 1, 1) // vip4:80, none
	setBackends(t, objs, 4, 8081, pods...)
	setBackends(t, objs, 1, 8080, pods...)
	seen := func(port uint16) map[netip.Addr]bool {
		got := map[netip.Addr]bool{}
		for sport := uint16(50000); sport < 50032; sport++ {
			in := pkt{src: client4, dst: vip4, proto: 6, sport: sport, dport: port, flags: tcpSYN}.frame()
			ret, out := runXDP(t, objs.IronlbXdp, in, 0)
			if ret != xdpPass {
				t.Fatalf("verdict %d", ret)
			}
			got[netip.AddrFrom4([4]byte(out[14+16:14+20]))] = true
		}
		return got
	}
	if got := seen(81); len(got) != 1 {
		t.Errorf("affinity: 32 connections reached %d endpoints, want 1", len(got))
	}
	if got := seen(80); len(got) < 8 {
		t.Errorf("no affinity: 32 connections reached only %d of 16 endpoints", len(got))
	}
}

// TestUntouched: what the data plane does not handle goes to the kernel
// exactly as it came, and malformed VIP packets are never rewritten.
func TestUntouched(t *testing.T) {
	objs := load(t)
	world(t, objs)
	setRing(t, objs, 1, 1)
	setBackends(t, objs, 1, 8080, pod1)
	tcp4 := pkt{src: client4, dst: vip4, proto: 6, sport: 40000, dport: 80, payload: []byte("GET /")}.frame()
	fragment := bytes.Clone(tcp4)
	fragment[14+6] = 0x20 // more fragments
	vlan := append(append(bytes.Clone(tcp4[:12]), 0x81, 0x00, 0, 1), tcp4[12:]...)
	longer := bytes.Clone(tcp4)
	longer[14+3] += 40 // IPv4 total length beyond the frame
	tests := map[string][]byte{
		"VIP, port not served":     pkt{src: client4, dst: vip4, proto: 6, sport: 40000, dport: 83}.frame(),
		"VIP, protocol not served": pkt{src: client4, dst: vip4, proto: 17, sport: 40000, dport: 80}.frame(),
		"not a VIP":                pkt{src: client4, dst: self4, proto: 6, sport: 40000, dport: 80}.frame(),
		"fragment":                 fragment,
		"VLAN tag":                 vlan,
		"IPv4 length past the end": longer,
		"truncated TCP header":     tcp4[:14+20+10],
		"truncated IPv4 header":    tcp4[:14+12],
		"IPv4 header length four":  func() []byte { p := bytes.Clone(tcp4); p[14] = 0x44; return p }(),
		"TCP data offset four":     func() []byte { p := bytes.Clone(tcp4); p[14+20+12] = 0x40; return p }(),
		"IPv6 extension header": func() []byte {
			p := pkt{src: client6, dst: vip6, proto: 6, sport: 1, dport: 80}.frame()
			p[14+6] = 0
			return p
		}(),
	}
	for name, in := range tests {
		ret, out := runXDP(t, objs.IronlbXdp, in, 0)
		if ret != xdpPass || !bytes.Equal(out, in) {
			t.Errorf("%s: verdict %d, modified %v; want XDP_PASS, unchanged", name, ret, !bytes.Equal(out, in))
		}
	}
}

// TestTooBig: a packet that would not fit the link once encapsulated is
// answered with ICMP "fragmentation needed" (IPv4, DF set) or "packet too
// big" (IPv6), from the VIP, quoting its header; without DF it is dropped.
func TestTooBig(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	setRing(t, objs, 2, 2)  // vip4:7/UDP -> node B
	setRing(t, objs, 3, 12) // vip6:80/TCP -> node B
	mtu := 1500

	big4 := pkt{src: client4, dst: vip4, proto: 17, sport: 5000, dport: 7, payload: make([]byte, mtu-20-8-10)}.frame()
	ret, out := runXDP(t, objs.IronlbXdp, big4, ifindex)
	quote := big4[14 : 14+28]
	icmp := append([]byte{3, 4, 0, 0, 0, 0}, byte((mtu-20)>>8), byte(mtu-20))
	icmp = append(icmp, quote...)
	binary.BigEndian.PutUint16(icmp[2:], fold(sum16(icmp, 0)))
	ip := []byte{0x45, 0, 0, byte(20 + len(icmp)), 0, 0, 0, 0, 64, 1, 0, 0}
	ip = append(append(ip, vip4.AsSlice()...), client4.AsSlice()...)
	binary.BigEndian.PutUint16(ip[10:], fold(sum16(ip, 0)))
	want := ether(macSelf, macClient, 4, append(ip, icmp...))
	if ret != xdpTX || !bytes.Equal(out, want) {
		t.Errorf("IPv4 too big: verdict %d\n got %x\nwant %x", ret, out, want)
	}

	noDF := bytes.Clone(big4)
	noDF[14+6] = 0
	binary.BigEndian.PutUint16(noDF[14+10:], 0)
	binary.BigEndian.PutUint16(noDF[14+10:], fold(sum16(noDF[14:34], 0)))
	if ret, _ := runXDP(t, objs.IronlbXdp, noDF, ifindex); ret != xdpDrop {
		t.Errorf("IPv4 too big without DF: verdict %d, want XDP_DROP", ret)
	}

	big6 := pkt{src: client6, dst: vip6, proto: 6, sport: 40000, dport: 80, flags: tcpACK, payload: make([]byte, mtu-40-40-20+1)}.frame()
	ret, out = runXDP(t, objs.IronlbXdp, big6, ifindex)
	icmp6 := []byte{2, 0, 0, 0}
	icmp6 = binary.BigEndian.AppendUint32(icmp6, uint32(mtu-40))
	icmp6 = append(icmp6, big6[14:14+48]...)
	var ph []byte
	ph = append(append(ph, vip6.AsSlice()...), client6.AsSlice()...)
	ph = binary.BigEndian.AppendUint32(ph, uint32(len(icmp6)))
	ph = append(ph, 0, 0, 0, 58)
	binary.BigEndian.PutUint16(icmp6[2:], fold(sum16(icmp6, sum16(ph, 0))))
	ip6 := []byte{0x60, 0, 0, 0, 0, byte(len(icmp6)), 58, 64}
	ip6 = append(append(ip6, vip6.AsSlice()...), client6.AsSlice()...)
	want6 := ether(macSelf, macClient, 6, append(ip6, icmp6...))
	if ret != xdpTX || !bytes.Equal(out, want6) {
		t.Errorf("IPv6 too big: verdict %d\n got %x\nwant %x", ret, out, want6)
	}
	if d := drops(t, objs); d[8] != 3 {
		t.Errorf("too_big drops %d, want 3", d[8])
	}
}

// icmpError builds an ICMP (IPv4) or ICMPv6 error from router to dst with
// the given type, code and 4 bytes of data, quoting quoted.
func icmpError(router, dst netip.Addr, typ, code byte, rest [4]byte, quoted []byte) []byte {
	msg := append([]byte{typ, code, 0, 0}, rest[:]...)
	msg = append(msg, quoted...)
	if dst.Is4() {
		binary.BigEndian.PutUint16(msg[2:], fold(sum16(msg, 0)))
		return ipHeader(router, dst, 1, 0, msg)
	}
	var ph []byte
	ph = append(append(ph, router.AsSlice()...), dst.AsSlice()...)
	ph = binary.BigEndian.AppendUint32(ph, uint32(len(msg)))
	ph = append(ph, 0, 0, 0, 58)
	binary.BigEndian.PutUint16(msg[2:], fold(sum16(msg, sum16(ph, 0))))
	return ipHeader(router, dst, 58, 0, msg)
}

// asSentBy rewrites a quoted reply's source to the endpoint, as the
// endpoint sent it before reverse NAT.
func asSentBy(quoted []byte, ep netip.Addr, port uint16) []byte {
	q := bytes.Clone(quoted)
	if ep.Is4() {
		copy(q[12:16], ep.AsSlice())
		q[10], q[11] = 0, 0
		binary.BigEndian.PutUint16(q[10:], fold(sum16(q[:20], 0)))
		binary.BigEndian.PutUint16(q[20:], port)
		return q
	}
	copy(q[8:24], ep.AsSlice())
	binary.BigEndian.PutUint16(q[40:], port)
	return q
}

// TestICMPErrors: an ICMP error a router on the client's path sends to
// the VIP about a reply is steered with the flow it quotes, and reaches the
// flow's endpoint as an error about the packet the endpoint sent.
func TestICMPErrors(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	router4, router6 := netip.MustParseAddr("10.89.0.1"), netip.MustParseAddr("fd89::1")
	// The client's flows and their endpoints, as tier 2 recorded them.
	must(t, objs.Ct2.Put(LbFlow{Src: Addr(client4), Dst: Addr(vip4), Sport: Port(40000), Dport: Port(80), Proto: 6, Family: 4},
		LbCt2Entry{Be: LbBackend{Addr: Addr(pod1), Port: Port(8080), Family: 4}}))
	must(t, objs.Ct2.Put(LbFlow{Src: Addr(client6), Dst: Addr(vip6), Sport: Port(40000), Dport: Port(80), Proto: 6, Family: 6},
		LbCt2Entry{Be: LbBackend{Addr: Addr(pod6), Port: Port(8080), Family: 6}}))
	quoted4 := pkt{src: vip4, dst: client4, proto: 6, sport: 80, dport: 40000, flags: tcpACK}.ip()[:28]
	quoted6 := pkt{src: client6, dst: client6, proto: 6, sport: 80, dport: 40000, flags: tcpACK}.ip()[:48]
	copy(quoted6[8:24], vip6.AsSlice())
	fragNeeded := [4]byte{0, 0, 0x05, 0xc8}
	err4 := icmpError(router4, vip4, 3, 4, fragNeeded, quoted4)
	toPod4 := icmpError(router4, pod1, 3, 4, fragNeeded, asSentBy(quoted4, pod1, 8080))
	tooBig := [4]byte{0, 0, 0x05, 0xb4}
	err6 := icmpError(router6, vip6, 2, 0, tooBig, quoted6)
	toPod6 := icmpError(router6, pod6, 2, 0, tooBig, asSentBy(quoted6, pod6, 8080))
	routerMAC := [6]byte{0x02, 0, 0, 0, 0, 0x01}

	steps := []struct {
		name    string
		setup   func()
		in      []byte
		verdict uint32
		out     []byte
	}{
		{
			name:    "to the flow's tier-1 node, encapsulated",
			setup:   func() { setRing(t, objs, 1, 2) },
			in:      ether(routerMAC, macSelf, 4, err4),
			verdict: xdpTX,
			out:     ether(macSelf, macNodeB, 4, ipHeader(self4, nodeB4, 4, 0, err4)),
		},
		{
			name:    "on the endpoint's node: rewritten for the endpoint",
			setup:   func() { setRing(t, objs, 1, 1) },
			in:      ether(routerMAC, macSelf, 4, err4),
			verdict: xdpPass,
			out:     ether(routerMAC, macSelf, 4, toPod4),
		},
		{
			name:    "decapsulated, then rewritten",
			in:      ether(macNodeB, macSelf, 4, ipHeader(nodeB4, self4, 4, 0, err4)),
			verdict: xdpPass,
			out:     ether(macNodeB, macSelf, 4, toPod4),
		},
		{
			name:    "ICMPv6 packet too big, rewritten for the endpoint",
			setup:   func() { setRing(t, objs, 3, 11) },
			in:      ether(routerMAC, macSelf, 6, err6),
			verdict: xdpPass,
			out:     ether(routerMAC, macSelf, 6, toPod6),
		},
		{
			name:    "an echo request to the VIP is the kernel's",
			in:      ether(macClient, macSelf, 4, icmpError(client4, vip4, 8, 0, [4]byte{0, 1, 0, 1}, []byte("ping"))),
			verdict: xdpPass,
		},
		{
			name:    "an error about an unknown flow goes to the kernel untouched",
			in:      ether(routerMAC, macSelf, 4, icmpError(router4, vip4, 3, 4, fragNeeded, pkt{src: vip4, dst: client4, proto: 6, sport: 80, dport: 1}.ip()[:28])),
			verdict: xdpPass,
		},
	}
	for _, s := range steps {
		if s.setup != nil {
			s.setup()
		}
		ret, out := runXDP(t, objs.IronlbXdp, s.in, ifindex)
		want := s.out
		if want == nil {
			want = s.in
		}
		if ret != s.verdict || !bytes.Equal(out, want) {
			t.Errorf("%s: verdict %d (want %d)\n got %x\nwant %x", s.name, ret, s.verdict, out, want)
		}
	}
}

// TestOnlyFramesForThisHost: with the interface's MAC recorded (as the
// speaker records it when it attaches), a VIP packet in a frame addressed
// to another host (what a switch floods while it does not know that
// host's port) or to a broadcast or multicast MAC goes to the kernel
// untouched, which drops it as not ours; the same packet to this host's
// MAC is forwarded. Without the check every flooded copy would be
// forwarded by every node that received it.
func TestOnlyFramesForThisHost(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	setRing(t, objs, 1, 1)
	setBackends(t, objs, 1, 8080, pod1)
	m := LbIfMac{Ifindex: uint32(ifindex)}
	copy(m.Addr[:], macSelf[:])
	must(t, objs.IfMacs.Put(IfMacSlot(ifindex), m))
	base := pkt{src: client4, dst: vip4, proto: 6, sport: 40000, dport: 80, flags: tcpSYN, mss: 1460}
	other := base
	other.dstMAC = [6]byte{0x02, 0, 0, 0, 0, 0x12}
	bcast := base
	bcast.dstMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	mcast := base
	mcast.dstMAC = [6]byte{0x01, 0x00, 0x5e, 0, 0, 1}
	for name, p := range map[string]pkt{"another host's MAC": other, "broadcast": bcast, "multicast": mcast} {
		in := p.frame()
		ret, out := runXDP(t, objs.IronlbXdp, in, ifindex)
		if ret != xdpPass || !bytes.Equal(out[:len(in)], in) {
			t.Errorf("%s: verdict %d, modified %v; want XDP_PASS, unchanged", name, ret, !bytes.Equal(out[:len(in)], in))
		}
	}
	in := base.frame()
	ret, out := runXDP(t, objs.IronlbXdp, in, ifindex)
	if ret != xdpPass || bytes.Equal(out[:len(in)], in) {
		t.Fatalf("to this host's MAC: verdict %d, modified %v; want DNAT to the local endpoint", ret, !bytes.Equal(out[:len(in)], in))
	}
}
