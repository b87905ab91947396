//go:build linux

package loader

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/bpf"
	"github.com/ironlb/ironlb/internal/netnstest"
	"github.com/ironlb/ironlb/pkg/dataplane"
)

// sandbox puts this goroutine's thread in a new network namespace with a
// veth pair (t0, t1) and mounts a bpffs of the test's own; it returns the
// pin directory.
// The test world, as in the plan's tests.
var (
	nodes = []dataplane.Node{
		{Name: "node-a", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("fd00::11")}},
		{Name: "node-b", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.12")}},
		{Name: "node-c", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.13"), netip.MustParseAddr("fd00::13")}},
	}
	vip = netip.MustParseAddr("10.9.0.1")
)

func ep(addr, node string, ready bool) dataplane.Endpoint {
	return dataplane.Endpoint{Addr: netip.MustParseAddr(addr), Port: 8080, Node: node, Ready: ready, Serving: ready}
}

func sandbox(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the data plane needs root; CI runs as root")
	}
	netnstest.Enter(t)
	fs := t.TempDir()
	if err := unix.Mount("bpf", fs, "bpf", 0, "mode=0700"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(fs, unix.MNT_DETACH) })
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "t0"}, PeerName: "t1"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"t0", "t1"} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(fs, "ironlb")
}

// TestLoaderRestartAndCleanup: the maps a speaker wrote survive its exit
// and a new speaker takes them over (same ids, programs swapped in place);
// cleanup detaches everything.
func TestLoaderRestartAndCleanup(t *testing.T) {
	dir := sandbox(t)
	opts := dataplane.DefaultOptions()
	opts.PinDir, opts.Interfaces, opts.RingSize = dir, []string{"t0"}, 251
	self := dataplane.Self{V4: netip.MustParseAddr("10.0.0.11")}
	port := dataplane.Port{VIP: vip, Port: 80, Proto: dataplane.TCP, NewFlowsPerSource: 5, Endpoints: []dataplane.Endpoint{
		ep("10.1.0.2", "node-a", true), ep("10.1.1.2", "node-b", true),
	}}
	entries, err := dataplane.Plan("node-a", nodes, []dataplane.Port{port}, 251)
	if err != nil {
		t.Fatal(err)
	}

	d, err := Open(logr.Discard(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(self, nil, entries); err != nil {
		t.Fatal(err)
	}
	var info bpf.LbVipInfo
	if err := d.objs.Vips.Lookup(bpf.VipKeyFor(vip, 80, dataplane.TCP), &info); err != nil {
		t.Fatal(err)
	}
	if info.SrcLimit != 5 {
		t.Errorf("vips src_limit %d, want the port's 5", info.SrcLimit)
	}
	var cfg bpf.LbConfigEntry
	if err := d.objs.Config.Lookup(uint32(0), &cfg); err != nil || cfg.NewFlowRate != dataplane.DefaultNewFlowRate {
		t.Errorf("config new_flow_rate %d (%v), want %d", cfg.NewFlowRate, err, dataplane.DefaultNewFlowRate)
	}
	if n := d.objs.Ct2New.MaxEntries(); n != opts.Flows/8 {
		t.Errorf("ct2_new holds %d, want --conntrack-size/8 = %d", n, opts.Flows/8)
	}
	// A flow in conntrack, as traffic would leave it.
	flow := bpf.LbFlow{Src: bpf.Addr(netip.MustParseAddr("10.9.9.9")), Dst: bpf.Addr(vip), Sport: bpf.Port(1234), Dport: bpf.Port(80), Proto: dataplane.TCP, Family: 4}
	if err := d.objs.Ct1.Put(flow, bpf.LbCt1Entry{Node: bpf.Addr(netip.MustParseAddr("10.0.0.12")), Idx: 2}); err != nil {
		t.Fatal(err)
	}
	// SYN cookies: the rate is configured, both programs are in the
	// progs array, and a port whose cookies are on says so.
	if cfg.SynCookieRate != dataplane.DefaultSynCookieRate {
		t.Errorf("config syn_cookie_rate %d, want %d", cfg.SynCookieRate, dataplane.DefaultSynCookieRate)
	}
	for slot, p := range map[uint32]*ebpf.Program{bpf.ProgCookie: d.objs.IronlbCookie, bpf.ProgMain: d.objs.IronlbXdp} {
		var id ebpf.ProgramID
		want, _ := p.Info()
		wantID, _ := want.ID()
		if err := d.objs.Progs.Lookup(slot, &id); err != nil || id != wantID {
			t.Errorf("progs[%d] holds program %d (%v), want %d", slot, id, err, wantID)
		}
	}
	if err := d.objs.Cookies.Put(info.ServiceId, bpf.LbCookieState{OnUntil: monotonicCoarse() + 60e9}); err != nil {
		t.Fatal(err)
	}
	if err := testutil.CollectAndCompare(d, strings.NewReader(`
# HELP ironlb_dataplane_syn_cookies_active 1 while this node answers the port's SYNs with SYN cookies (a SYN flood), else 0.
# TYPE ironlb_dataplane_syn_cookies_active gauge
ironlb_dataplane_syn_cookies_active{port="80",protocol="TCP",service="",vip="`+vip.String()+`"} 1
`), "ironlb_dataplane_syn_cookies_active"); err != nil {
		t.Error(err)
	}
	if err := testutil.CollectAndCompare(d, strings.NewReader(`
# HELP ironlb_dataplane_conntrack_entries Entries in a conntrack table (tier1, tier2, revnat and their unverified twins tier1_unverified, tier2_unverified, revnat_unverified; affinity; proxied: flows tier 2 proxies after a SYN cookie).
# TYPE ironlb_dataplane_conntrack_entries gauge
ironlb_dataplane_conntrack_entries{table="affinity"} 0
ironlb_dataplane_conntrack_entries{table="proxied"} 0
ironlb_dataplane_conntrack_entries{table="revnat"} 0
ironlb_dataplane_conntrack_entries{table="revnat_unverified"} 0
ironlb_dataplane_conntrack_entries{table="tier1"} 1
ironlb_dataplane_conntrack_entries{table="tier1_unverified"} 0
ironlb_dataplane_conntrack_entries{table="tier2"} 0
ironlb_dataplane_conntrack_entries{table="tier2_unverified"} 0
`), "ironlb_dataplane_conntrack_entries"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(prometheusRegistry(t, d), "ironlb_dataplane_packets_total"); err != nil || n != 1 {
		t.Errorf("packets series: %d (%v), want 1", n, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	// The programs stay attached without the process.
	l, err := netlink.LinkByName("t0")
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached {
		t.Fatal("XDP detached when the speaker exited")
	}
	oldProg := l.Attrs().Xdp.ProgId

	// A new speaker: same id, the flow still there, a new program in the
	// same link.
	d2, err := Open(logr.Discard(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := d2.ids[dataplane.Key{VIP: vip, Port: 80, Proto: dataplane.TCP}]; got != info.ServiceId {
		t.Errorf("the restarted speaker numbered the port %d, was %d", got, info.ServiceId)
	}
	var ce bpf.LbCt1Entry
	if err := d2.objs.Ct1.Lookup(flow, &ce); err != nil {
		t.Errorf("conntrack lost across the restart: %v", err)
	}
	if err := d2.Apply(self, nil, entries); err != nil {
		t.Fatal(err)
	}
	l, _ = netlink.LinkByName("t0")
	if l.Attrs().Xdp == nil || l.Attrs().Xdp.ProgId == oldProg {
		t.Errorf("the restarted speaker did not swap its program in (id %d)", oldProg)
	}
	// A port that goes away leaves no entry.
	if err := d2.Apply(self, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := d2.objs.Vips.Lookup(bpf.VipKeyFor(vip, 80, dataplane.TCP), &info); err == nil {
		t.Error("a removed port is still in vips")
	}
	_ = d2.Close()

	if err := Cleanup(dir); err != nil {
		t.Fatal(err)
	}
	l, _ = netlink.LinkByName("t0")
	if l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
		t.Error("XDP still attached after cleanup")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("pin directory left after cleanup: %v", err)
	}
}

func prometheusRegistry(t *testing.T, c prometheus.Collector) *prometheus.Registry {
	r := prometheus.NewRegistry()
	if err := r.Register(c); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestEndpointLinks: with --xdp-endpoint-redirect the speaker lists the
// veth in front of each local endpoint, and nothing for an endpoint behind
// a router or when redirection is off.
func TestEndpointLinks(t *testing.T) {
	dir := sandbox(t)
	// A pod's veth (p0, the node's end) with a /32 route to the pod, and a
	// route to another endpoint through t0's neighbour.
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "p0"}, PeerName: "p1"}); err != nil {
		t.Fatal(err)
	}
	p0, _ := netlink.LinkByName("p0")
	t0, _ := netlink.LinkByName("t0")
	for _, l := range []netlink.Link{p0, t0} {
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	addr, _ := netlink.ParseAddr("10.0.0.11/24")
	if err := netlink.AddrAdd(t0, addr); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*netlink.Route{
		{LinkIndex: p0.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 1, 0, 2), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK},
		{LinkIndex: t0.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 1, 0, 3), Mask: net.CIDRMask(32, 32)}, Gw: net.IPv4(10, 0, 0, 1)},
	} {
		if err := netlink.RouteAdd(r); err != nil {
			t.Fatal(err)
		}
	}
	port := dataplane.Port{VIP: vip, Port: 80, Proto: dataplane.TCP, Endpoints: []dataplane.Endpoint{
		ep("10.1.0.2", "node-a", true), ep("10.1.0.3", "node-a", true),
	}}
	entries, err := dataplane.Plan("node-a", nodes, []dataplane.Port{port}, 251)
	if err != nil {
		t.Fatal(err)
	}
	self := dataplane.Self{V4: netip.MustParseAddr("10.0.0.11")}
	listed := func(d *Dataplane) (links []uint32, redirect bool) {
		var k, v uint32
		it := d.objs.EndpointLinks.Iterate()
		for it.Next(&k, &v) {
			links = append(links, k)
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		var cfg bpf.LbConfigEntry
		if err := d.objs.Config.Lookup(uint32(0), &cfg); err != nil {
			t.Fatal(err)
		}
		return links, cfg.Flags&bpf.ConfigRedirect != 0
	}

	for _, on := range []bool{true, false} {
		opts := dataplane.DefaultOptions()
		opts.PinDir, opts.Interfaces, opts.RingSize, opts.EndpointRedirect = dir, []string{"t0"}, 251, on
		d, err := Open(logr.Discard(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Apply(self, nil, entries); err != nil {
			t.Fatal(err)
		}
		links, redirect := listed(d)
		want := []uint32{}
		if on {
			want = []uint32{uint32(p0.Attrs().Index)}
		}
		if redirect != on || len(links) != len(want) || (on && links[0] != want[0]) {
			t.Errorf("redirect %v: links %v, flag %v; want %v, flag %v", on, links, redirect, want, on)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := Cleanup(dir); err != nil {
		t.Fatal(err)
	}
}

// TestLoaderSafety: source-range lists are shared, replaced whole and
// freed; tunnel peers follow the nodes; a change of members bumps the
// port's generation; a freed port id is reused; and pinned maps stamped
// with another layout are replaced on start even though their sizes fit.
func TestLoaderSafety(t *testing.T) {
	dir := sandbox(t)
	opts := dataplane.DefaultOptions()
	opts.PinDir, opts.Interfaces, opts.RingSize = dir, []string{"t0"}, 251
	self := dataplane.Self{V4: netip.MustParseAddr("10.0.0.11")}
	d, err := Open(logr.Discard(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = Cleanup(dir) }()
	ranges := func(ps ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, p := range ps {
			out = append(out, netip.MustParsePrefix(p))
		}
		return out
	}
	trie := func() map[string]uint32 {
		out := map[string]uint32{}
		var k bpf.LbRangeKey
		var v uint32
		it := d.objs.SourceRanges.Iterate()
		for it.Next(&k, &v) {
			a, _ := netip.AddrFromSlice(k.Addr[:4])
			out[netip.PrefixFrom(a, int(k.Prefixlen)-32).String()] = k.Acl
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	info := func(port uint16) bpf.LbVipInfo {
		var v bpf.LbVipInfo
		if err := d.objs.Vips.Lookup(bpf.VipKeyFor(vip, port, dataplane.TCP), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	apply := func(ports ...dataplane.Port) {
		t.Helper()
		entries, err := dataplane.Plan("node-a", nodes, ports, 251)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Apply(self, nodes[:2], entries); err != nil {
			t.Fatal(err)
		}
	}
	eps := []dataplane.Endpoint{ep("10.1.0.2", "node-a", true), ep("10.1.1.2", "node-b", true)}
	p80 := dataplane.Port{VIP: vip, Port: 80, Proto: dataplane.TCP, Endpoints: eps, SourceRanges: ranges("198.51.100.0/24", "203.0.113.0/25")}
	p81 := dataplane.Port{VIP: vip, Port: 81, Proto: dataplane.TCP, Endpoints: eps, SourceRanges: ranges("203.0.113.0/25", "198.51.100.0/24")}
	apply(p80, p81)
	if a, b := info(80).Acl, info(81).Acl; a == 0 || a != b {
		t.Errorf("two ports with one list of ranges: acl %d and %d, want one shared id", a, b)
	}
	if got := trie(); len(got) != 2 {
		t.Errorf("trie %v, want the two prefixes once", got)
	}
	// The two ports have one ring: one kernel map.
	var in80, in81 uint32
	if err := d.objs.Rings.Lookup(info(80).ServiceId, &in80); err != nil {
		t.Fatal(err)
	}
	if err := d.objs.Rings.Lookup(info(81).ServiceId, &in81); err != nil {
		t.Fatal(err)
	}
	if in80 != in81 || len(d.ringMaps) != 1 {
		t.Errorf("two ports with one ring use maps %d and %d (%d held), want one", in80, in81, len(d.ringMaps))
	}
	// What the kernel holds is the plan's ring, slot by slot.
	ringPlan, err := dataplane.Plan("node-a", nodes, []dataplane.Port{p80}, 251)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := ebpf.NewMapFromID(ebpf.MapID(in80))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = inner.Close() }()
	for slot, b := range ringPlan[0].Ring {
		var got uint32
		if err := inner.Lookup(uint32(slot), &got); err != nil {
			t.Fatal(err)
		}
		if want := d.nodes[ringPlan[0].RingNodes[b]]; got != want {
			t.Fatalf("slot %d holds node index %d, the plan says %d (%s)", slot, got, want, ringPlan[0].RingNodes[b])
		}
	}
	var pk bpf.LbPeerKey
	n := 0
	var one uint32
	it := d.objs.TunnelPeers.Iterate()
	for it.Next(&pk, &one) {
		n++
	}
	if n != 3 {
		t.Errorf("%d tunnel peers, want node-a's two addresses and node-b's one", n)
	}

	// One port narrows its list, the other opens: the old list goes.
	gen := info(80).Gen
	p80.SourceRanges = ranges("198.51.100.7/32")
	p81.SourceRanges = nil
	apply(p80, p81)
	if got := trie(); len(got) != 1 || got["198.51.100.7/32"] != info(80).Acl {
		t.Errorf("trie %v after the edit, want only 198.51.100.7/32 under acl %d", got, info(80).Acl)
	}
	if info(81).Acl != 0 {
		t.Errorf("a port without ranges has acl %d", info(81).Acl)
	}
	if info(80).Gen != gen {
		t.Errorf("a change of ranges moved the generation (%d -> %d): flows would be re-placed for nothing", gen, info(80).Gen)
	}
	// node-b dies: the members change and the generation moves.
	dead := slices.Clone(nodes)
	dead[1].Dead = true
	entries, err := dataplane.Plan("node-a", dead, []dataplane.Port{p80, p81}, 251)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(self, dead, entries); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.nodes[netip.MustParseAddr("10.0.0.12")]; ok {
		t.Error("a dead node keeps its index: its TCP flows would stay pinned to it")
	}
	if _, ok := d.nodes[netip.MustParseAddr("10.0.0.13")]; !ok {
		t.Error("a live node without endpoints has no index: its TCP flows would be re-placed")
	}
	if info(80).Gen == gen {
		t.Error("a node left the port's members but its generation did not move")
	}
	if len(d.members[info(80).ServiceId]) != 1 {
		t.Errorf("members %v, want node-a only", d.members[info(80).ServiceId])
	}

	// Port 80 goes, port 82 comes: it takes the freed id.
	freed := info(80).ServiceId
	apply(p81, dataplane.Port{VIP: vip, Port: 82, Proto: dataplane.TCP, Endpoints: eps})
	if got := info(82).ServiceId; got != freed {
		t.Errorf("the new port got id %d, want the freed %d", got, freed)
	}
	if got := trie(); len(got) != 0 {
		t.Errorf("trie %v with no ranges left", got)
	}
	// Every port goes: their slots hold the empty ring (an array of maps
	// cannot batch-delete), and no ring map is held any more.
	id81 := info(81).ServiceId
	if err := d.Apply(self, nodes, nil); err != nil {
		t.Fatal(err)
	}
	var innerID uint32
	if err := d.objs.Rings.Lookup(id81, &innerID); err != nil {
		t.Fatal(err)
	}
	emptyInfo, err := d.empty.Info()
	if err != nil {
		t.Fatal(err)
	}
	if eid, _ := emptyInfo.ID(); ebpf.MapID(innerID) != eid || len(d.ringMaps) != 0 {
		t.Errorf("a removed port's slot holds map %d, want the empty ring %d; %d rings held", innerID, eid, len(d.ringMaps))
	}
	apply(p81, dataplane.Port{VIP: vip, Port: 82, Proto: dataplane.TCP, Endpoints: eps})

	// A flow, then a pinned config of another layout: replaced on start.
	flow := bpf.LbFlow{Src: bpf.Addr(netip.MustParseAddr("10.9.9.9")), Dst: bpf.Addr(vip), Sport: bpf.Port(1), Dport: bpf.Port(81), Proto: dataplane.TCP, Family: 4}
	if err := d.objs.Ct1.Put(flow, bpf.LbCt1Entry{Idx: 1}); err != nil {
		t.Fatal(err)
	}
	var cfg bpf.LbConfigEntry
	if err := d.objs.Config.Lookup(uint32(0), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Layout = bpf.MapsLayout - 1
	if err := d.objs.Config.Put(uint32(0), cfg); err != nil {
		t.Fatal(err)
	}
	_ = d.Close()
	d2, err := Open(logr.Discard(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d2.Close() }()
	var ce bpf.LbCt1Entry
	if err := d2.objs.Ct1.Lookup(flow, &ce); err == nil {
		t.Error("maps of another layout were kept")
	}
}

// TestTiedToC: the Go side's limits and names are the C side's, as bpf2go
// generated them from the object's BTF.
func TestTiedToC(t *testing.T) {
	if n := len(bpf.LbBackendSet{}.Be); n != dataplane.MaxLocalBackends {
		t.Errorf("a backend_set holds %d endpoints (MAX_LOCAL_BACKENDS), the planner keeps %d (dataplane.MaxLocalBackends)", n, dataplane.MaxLocalBackends)
	}
	for i, name := range bpf.DropReasons {
		if name == "" {
			t.Errorf("drop reason %d (enum drop_reason) has no name in bpf.DropReasons", i)
		}
	}
}

// ringSlots reads a ring map's slots.
func ringSlots(t *testing.T, m *ebpf.Map) []uint32 {
	t.Helper()
	out := make([]uint32, m.MaxEntries())
	for i := range out {
		if err := m.Lookup(uint32(i), &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestRingHistory: when a port's ring changes, the ring it had goes to
// rings_prev and the VIP says until when (now + --ring-history); a port
// that never changed has none; the history is dropped once its time is
// over; changes in a burst keep the ring from before the first; a
// restarted speaker keeps the history and does not take the same ring
// again for it.
func TestRingHistory(t *testing.T) {
	dir := sandbox(t)
	opts := dataplane.DefaultOptions()
	opts.PinDir, opts.Interfaces, opts.RingSize, opts.RingHistory = dir, []string{"t0"}, 251, time.Hour
	self := dataplane.Self{V4: netip.MustParseAddr("10.0.0.11")}
	plan := func(eps ...dataplane.Endpoint) []dataplane.Entry {
		entries, err := dataplane.Plan("node-a", nodes, []dataplane.Port{{VIP: vip, Port: 80, Proto: dataplane.TCP, Endpoints: eps}}, 251)
		if err != nil {
			t.Fatal(err)
		}
		return entries
	}
	two := plan(ep("10.1.0.2", "node-a", true), ep("10.1.1.2", "node-b", true))
	three := plan(ep("10.1.0.2", "node-a", true), ep("10.1.1.2", "node-b", true), ep("10.1.2.2", "node-c", true))
	d, err := Open(logr.Discard(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.Close() }()
	info := func() bpf.LbVipInfo {
		var v bpf.LbVipInfo
		if err := d.objs.Vips.Lookup(bpf.VipKeyFor(vip, 80, dataplane.TCP), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := d.Apply(self, nodes, two); err != nil {
		t.Fatal(err)
	}
	if v := info(); v.PrevUntil != 0 {
		t.Fatalf("a new port has history until %d", v.PrevUntil)
	}
	var cur *ebpf.Map
	if err := d.objs.Rings.Lookup(info().ServiceId, &cur); err != nil {
		t.Fatal(err)
	}
	before := ringSlots(t, cur)
	_ = cur.Close()
	if err := d.Apply(self, nodes, three); err != nil {
		t.Fatal(err)
	}
	v := info()
	now := monotonicCoarse()
	if v.PrevUntil < now+uint64(50*time.Minute) || v.PrevUntil > now+uint64(time.Hour) {
		t.Errorf("prev_until %d, want about now (%d) + 1h", v.PrevUntil, now)
	}
	var prev *ebpf.Map
	if err := d.objs.RingsPrev.Lookup(v.ServiceId, &prev); err != nil {
		t.Fatalf("rings_prev: %v", err)
	}
	if !slices.Equal(ringSlots(t, prev), before) {
		t.Error("rings_prev does not hold the ring before the change")
	}
	_ = prev.Close()
	// Another change in the same burst: the ring from before the
	// first is kept.
	ac := plan(ep("10.1.0.2", "node-a", true), ep("10.1.2.2", "node-c", true))
	if err := d.Apply(self, nodes, ac); err != nil {
		t.Fatal(err)
	}
	v = info()
	if err := d.objs.RingsPrev.Lookup(v.ServiceId, &prev); err != nil || !slices.Equal(ringSlots(t, prev), before) {
		t.Errorf("a second change within a burst replaced the previous ring (%v)", err)
	}
	_ = prev.Close()
	// A restarted speaker: the same history.
	_ = d.Close()
	if d, err = Open(logr.Discard(), opts); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(self, nodes, ac); err != nil {
		t.Fatal(err)
	}
	if got := info(); got.PrevUntil != v.PrevUntil {
		t.Errorf("after a restart prev_until %d, want %d kept", got.PrevUntil, v.PrevUntil)
	}
	if err := d.objs.RingsPrev.Lookup(v.ServiceId, &prev); err != nil || !slices.Equal(ringSlots(t, prev), before) {
		t.Errorf("after a restart rings_prev lost the previous ring (%v)", err)
	}
	_ = prev.Close()
	// Its time over: gone.
	d.mu.Lock()
	d.prevUntil[v.ServiceId] = 1
	d.mu.Unlock()
	if err := d.Apply(self, nodes, ac); err != nil {
		t.Fatal(err)
	}
	if got := info(); got.PrevUntil != 0 {
		t.Errorf("expired history: prev_until %d, want 0", got.PrevUntil)
	}
	if err := d.objs.RingsPrev.Lookup(v.ServiceId, &prev); err == nil {
		t.Error("expired history: rings_prev still holds a ring")
		_ = prev.Close()
	}
}

// TestGenerationNotReused: a port that takes the id of a removed one gets
// a generation that port never had, so conntrack entries left from it (a
// client reusing a tuple to the same VIP) are checked again, not taken
// for current.
func TestGenerationNotReused(t *testing.T) {
	dir := sandbox(t)
	opts := dataplane.DefaultOptions()
	opts.PinDir, opts.Interfaces, opts.RingSize = dir, []string{"t0"}, 251
	self := dataplane.Self{V4: netip.MustParseAddr("10.0.0.11")}
	d, err := Open(logr.Discard(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.Close() }()
	eps := []dataplane.Endpoint{ep("10.1.0.2", "node-a", true), ep("10.1.1.2", "node-b", true)}
	seen := map[uint32]uint32{} // id -> generation
	for i, port := range []uint16{80, 81, 82} {
		entries, err := dataplane.Plan("node-a", nodes, []dataplane.Port{{VIP: vip, Port: port, Proto: dataplane.TCP, Endpoints: eps}}, 251)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Apply(self, nodes, entries); err != nil {
			t.Fatal(err)
		}
		var v bpf.LbVipInfo
		if err := d.objs.Vips.Lookup(bpf.VipKeyFor(vip, port, dataplane.TCP), &v); err != nil {
			t.Fatal(err)
		}
		if g, ok := seen[v.ServiceId]; ok && g == v.Gen {
			t.Errorf("port %d (round %d) took id %d with generation %d, as the removed port that had it", port, i, v.ServiceId, g)
		}
		if i > 0 && len(seen) != 1 {
			t.Fatalf("ports did not reuse the freed id: %v", seen)
		}
		seen[v.ServiceId] = v.Gen
	}
}
