//go:build linux

package dataplane

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/bpf"
)

// sandbox puts this goroutine's thread in a new network namespace with a
// veth pair (t0, t1) and mounts a bpffs of the test's own; it returns the
// pin directory.
func sandbox(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the data plane needs root; CI runs as root")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	fs := t.TempDir()
	if err := unix.Mount("bpf", fs, "bpf", 0, "mode=0700"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unix.Unmount(fs, unix.MNT_DETACH)
		_ = netns.Set(orig)
		_ = ns.Close()
		_ = orig.Close()
		runtime.UnlockOSThread()
	})
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
	opts := DefaultOptions()
	opts.PinDir, opts.Interfaces, opts.RingSize = dir, []string{"t0"}, 251
	self := Self{V4: netip.MustParseAddr("10.0.0.11")}
	port := Port{VIP: vip, Port: 80, Proto: TCP, Endpoints: []Endpoint{
		ep("10.1.0.2", "node-a", true), ep("10.1.1.2", "node-b", true),
	}}
	entries, err := Plan("node-a", nodes, []Port{port}, 251)
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
	if err := d.objs.Vips.Lookup(bpf.VipKeyFor(vip, 80, TCP), &info); err != nil {
		t.Fatal(err)
	}
	// A flow in conntrack, as traffic would leave it.
	flow := bpf.LbFlow{Src: bpf.Addr(netip.MustParseAddr("10.9.9.9")), Dst: bpf.Addr(vip), Sport: bpf.Port(1234), Dport: bpf.Port(80), Proto: TCP, Family: 4}
	if err := d.objs.Ct1.Put(flow, bpf.LbCt1Entry{Node: bpf.Addr(netip.MustParseAddr("10.0.0.12")), Idx: 2}); err != nil {
		t.Fatal(err)
	}
	if err := testutil.CollectAndCompare(d, strings.NewReader(`
# HELP ironlb_dataplane_conntrack_entries Entries in a conntrack table (tier1, tier2, revnat, affinity).
# TYPE ironlb_dataplane_conntrack_entries gauge
ironlb_dataplane_conntrack_entries{table="affinity"} 0
ironlb_dataplane_conntrack_entries{table="revnat"} 0
ironlb_dataplane_conntrack_entries{table="tier1"} 1
ironlb_dataplane_conntrack_entries{table="tier2"} 0
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
	if got := d2.ids[Key{vip, 80, TCP}]; got != info.ServiceId {
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
	if err := d2.objs.Vips.Lookup(bpf.VipKeyFor(vip, 80, TCP), &info); err == nil {
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
	port := Port{VIP: vip, Port: 80, Proto: TCP, Endpoints: []Endpoint{
		ep("10.1.0.2", "node-a", true), ep("10.1.0.3", "node-a", true),
	}}
	entries, err := Plan("node-a", nodes, []Port{port}, 251)
	if err != nil {
		t.Fatal(err)
	}
	self := Self{V4: netip.MustParseAddr("10.0.0.11")}
	listed := func(d *Dataplane) (links []uint32, redirect bool) {
		var k, v uint32
		it := d.objs.EndpointLinks.Iterate()
		for it.Next(&k, &v) {
			links = append(links, k)
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		var cfg bpf.LbSettings
		if err := d.objs.Config.Lookup(uint32(0), &cfg); err != nil {
			t.Fatal(err)
		}
		return links, cfg.Flags&bpf.SettingsRedirect != 0
	}

	for _, on := range []bool{true, false} {
		opts := DefaultOptions()
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
