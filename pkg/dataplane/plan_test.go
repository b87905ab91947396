package dataplane

import (
	"net/netip"
	"slices"
	"testing"
)

var (
	nodes = []Node{
		{"node-a", []netip.Addr{netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("fd00::11")}, false},
		{"node-b", []netip.Addr{netip.MustParseAddr("10.0.0.12")}, false},
		{"node-c", []netip.Addr{netip.MustParseAddr("10.0.0.13"), netip.MustParseAddr("fd00::13")}, false},
	}
	vip = netip.MustParseAddr("10.9.0.1")
)

func ep(addr, node string, ready bool) Endpoint {
	return Endpoint{Addr: netip.MustParseAddr(addr), Port: 8080, Node: node, Ready: ready}
}

func TestPlan(t *testing.T) {
	port := Port{VIP: vip, Port: 80, Proto: TCP, Endpoints: []Endpoint{
		ep("10.1.0.2", "node-a", true), ep("10.1.0.3", "node-a", true),
		ep("10.1.1.2", "node-b", true),
		ep("10.1.2.2", "node-c", false), // terminating
		ep("fd01::2", "node-a", true),   // the other family
	}}
	a, err := Plan("node-a", nodes, []Port{port}, 251)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Plan("node-b", nodes, []Port{port}, 251)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a[0].Ring, b[0].Ring) || !slices.Equal(a[0].RingNodes, b[0].RingNodes) {
		t.Fatal("two nodes computed different rings from the same state")
	}
	want := []netip.Addr{netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("10.0.0.12")}
	if !slices.Equal(a[0].RingNodes, want) {
		t.Errorf("ring nodes %v, want %v (node-c has no ready endpoint)", a[0].RingNodes, want)
	}
	// Weighted by ready endpoints: node-a holds two of three.
	n := 0
	for _, s := range a[0].Ring {
		if s == 0 {
			n++
		}
	}
	if share := float64(n) / 251; share < 0.62 || share > 0.71 {
		t.Errorf("node-a holds %.2f of the ring, want about 2/3", share)
	}
	if len(a[0].Backends) != 2 || len(b[0].Backends) != 1 {
		t.Errorf("local backends: node-a %v, node-b %v", a[0].Backends, b[0].Backends)
	}
	// The input order does not matter.
	rev := port
	rev.Endpoints = slices.Clone(port.Endpoints)
	slices.Reverse(rev.Endpoints)
	revNodes := slices.Clone(nodes)
	slices.Reverse(revNodes)
	c, err := Plan("node-a", revNodes, []Port{rev}, 251)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a[0].Ring, c[0].Ring) || !slices.Equal(a[0].Backends, c[0].Backends) {
		t.Error("the order of the input changed the plan")
	}
}

func TestPlanIPv6AndLocal(t *testing.T) {
	v6 := Port{VIP: netip.MustParseAddr("fd09::1"), Port: 80, Proto: TCP, Endpoints: []Endpoint{
		ep("fd01::2", "node-a", true), ep("fd01:1::2", "node-b", true), ep("fd01:2::2", "node-c", true),
	}}
	local := Port{VIP: vip, Port: 81, Proto: UDP, Local: true, Endpoints: []Endpoint{ep("10.1.0.2", "node-a", true)}}
	none := Port{VIP: vip, Port: 82, Proto: TCP}
	got, err := Plan("node-a", nodes, []Port{v6, local, none}, 251)
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[Key]Entry{}
	for _, e := range got {
		byKey[e.Key] = e
	}
	// node-b has no IPv6 address: it cannot receive IPv6-in-IPv6.
	if e := byKey[v6.Key()]; len(e.RingNodes) != 2 {
		t.Errorf("IPv6 ring nodes %v, want node-a and node-c", e.RingNodes)
	}
	if e := byKey[local.Key()]; e.Ring != nil || len(e.Backends) != 1 {
		t.Errorf("Local: ring %d slots, %d backends; want no ring, one backend", len(e.Ring), len(e.Backends))
	}
	if e := byKey[none.Key()]; e.Ring != nil || e.Backends != nil {
		t.Errorf("no endpoints: %+v", e)
	}
}
