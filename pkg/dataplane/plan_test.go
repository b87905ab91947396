package dataplane

import (
	"fmt"
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
	return Endpoint{Addr: netip.MustParseAddr(addr), Port: 8080, Node: node, Ready: ready, Serving: ready}
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
	n := slotsOf(t, a[0], nodes[0].Addrs[0])
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

// TestPlanDeadNode: a dead node leaves the ring and the members at once;
// the slots of the live nodes stay where they were, but for Maglev's small
// disruption, which the test bounds and reports; when the node comes back
// the ring is what it was.
func TestPlanDeadNode(t *testing.T) {
	var many []Node
	var eps []Endpoint
	for i := range 20 {
		name := fmt.Sprintf("node-%02d", i)
		addr := netip.AddrFrom4([4]byte{10, 0, 0, byte(20 + i)})
		many = append(many, Node{Name: name, Addrs: []netip.Addr{addr}})
		eps = append(eps, Endpoint{Addr: netip.AddrFrom4([4]byte{10, 1, byte(i), 2}), Port: 8080, Node: name, Ready: true, Serving: true})
	}
	port := Port{VIP: vip, Port: 80, Proto: TCP, Endpoints: eps}
	const m = 16381
	before, err := Plan("node-00", many, []Port{port}, m)
	if err != nil {
		t.Fatal(err)
	}
	dead := slices.Clone(many)
	dead[7].Dead = true
	after, err := Plan("node-00", dead, []Port{port}, m)
	if err != nil {
		t.Fatal(err)
	}
	gone := many[7].Addrs[0]
	if slices.Contains(after[0].RingNodes, gone) || slices.Contains(after[0].Members, gone) {
		t.Fatalf("the dead node is still in the ring (%v) or the members (%v)", after[0].RingNodes, after[0].Members)
	}
	moved, live := 0, 0
	for slot, i := range before[0].Ring {
		was := before[0].RingNodes[i]
		if was == gone {
			continue
		}
		live++
		if after[0].RingNodes[after[0].Ring[slot]] != was {
			moved++
		}
	}
	frac := float64(moved) / float64(live)
	t.Logf("one of 20 nodes dead: %.2f%% of the live nodes' slots moved (ideal 0)", 100*frac)
	if frac > 0.05 {
		t.Errorf("%.2f%% of the slots of live nodes moved", 100*frac)
	}
	back, err := Plan("node-00", many, []Port{port}, m)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back[0].Ring, before[0].Ring) {
		t.Error("the node came back but the ring is not what it was")
	}
}

// TestPlanTerminating: terminating endpoints that still serve keep their
// flows (members, the tail of the local set) but take new ones only when
// no endpoint is ready, as kube-proxy does.
func TestPlanTerminating(t *testing.T) {
	term := func(addr, node string) Endpoint {
		return Endpoint{Addr: netip.MustParseAddr(addr), Port: 8080, Node: node, Serving: true}
	}
	tests := map[string]struct {
		eps           []Endpoint
		wantRing      []netip.Addr
		wantMembers   []netip.Addr
		wantBackends  int
		wantReady     int
		wantRingEmpty bool
	}{
		"ready elsewhere: the terminating one keeps its flows only": {
			eps:          []Endpoint{term("10.1.0.2", "node-a"), ep("10.1.1.2", "node-b", true)},
			wantRing:     []netip.Addr{netip.MustParseAddr("10.0.0.12")},
			wantMembers:  []netip.Addr{netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("10.0.0.12")},
			wantBackends: 1, wantReady: 0,
		},
		"none ready: the serving ones take new flows": {
			eps:          []Endpoint{term("10.1.0.2", "node-a"), term("10.1.1.2", "node-b")},
			wantRing:     []netip.Addr{netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("10.0.0.12")},
			wantMembers:  []netip.Addr{netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("10.0.0.12")},
			wantBackends: 1, wantReady: 1,
		},
		"terminating and not serving: gone": {
			eps:           []Endpoint{{Addr: netip.MustParseAddr("10.1.0.2"), Port: 8080, Node: "node-a"}},
			wantRingEmpty: true,
		},
	}
	for name, tc := range tests {
		got, err := Plan("node-a", nodes, []Port{{VIP: vip, Port: 80, Proto: TCP, Endpoints: tc.eps}}, 251)
		if err != nil {
			t.Fatal(err)
		}
		e := got[0]
		if tc.wantRingEmpty {
			if e.Ring != nil || e.Members != nil || e.Backends != nil {
				t.Errorf("%s: %+v, want nothing", name, e)
			}
			continue
		}
		if !slices.Equal(e.RingNodes, tc.wantRing) || !slices.Equal(e.Members, tc.wantMembers) ||
			len(e.Backends) != tc.wantBackends || e.Ready != tc.wantReady {
			t.Errorf("%s: ring %v members %v backends %d ready %d; want %v %v %d %d", name,
				e.RingNodes, e.Members, len(e.Backends), e.Ready, tc.wantRing, tc.wantMembers, tc.wantBackends, tc.wantReady)
		}
	}
}

// TestPlanManyLocal: past MaxLocalBackends ready endpoints on a node, the
// extra ones are reported and the ring weighs the node by what it serves.
func TestPlanManyLocal(t *testing.T) {
	var eps []Endpoint
	for i := range 100 {
		eps = append(eps, Endpoint{Addr: netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)}), Port: 8080, Node: "node-a", Ready: true, Serving: true})
	}
	for i := range 64 {
		eps = append(eps, Endpoint{Addr: netip.AddrFrom4([4]byte{10, 1, 1, byte(i + 1)}), Port: 8080, Node: "node-b", Ready: true, Serving: true})
	}
	got, err := Plan("node-a", nodes, []Port{{VIP: vip, Port: 80, Proto: TCP, Endpoints: eps}}, 16381)
	if err != nil {
		t.Fatal(err)
	}
	e := got[0]
	if len(e.Backends) != MaxLocalBackends || e.Ready != MaxLocalBackends || e.Truncated != 36 {
		t.Errorf("backends %d ready %d truncated %d; want 64 64 36", len(e.Backends), e.Ready, e.Truncated)
	}
	n := slotsOf(t, e, nodes[0].Addrs[0])
	if share := float64(n) / 16381; share < 0.47 || share > 0.53 {
		t.Errorf("node-a holds %.2f of the ring; it serves 64 endpoints like node-b, want about half", share)
	}
}

// TestPlannerReuse: a Planner's plans are Plan's, and a change rebuilds
// only the rings it touches (the others are the very same slices).
func TestPlannerReuse(t *testing.T) {
	p1 := Port{VIP: vip, Port: 80, Proto: TCP, Endpoints: []Endpoint{ep("10.1.0.2", "node-a", true), ep("10.1.1.2", "node-b", true)}}
	p2 := Port{VIP: netip.MustParseAddr("10.9.0.2"), Port: 80, Proto: TCP, Endpoints: []Endpoint{ep("10.1.2.2", "node-c", true), ep("10.1.1.3", "node-b", true)}}
	var pl Planner
	first, err := pl.Plan("node-a", nodes, []Port{p1, p2}, 251)
	if err != nil {
		t.Fatal(err)
	}
	dead := slices.Clone(nodes)
	dead[2].Dead = true // node-c: only p2's ring changes
	second, err := pl.Plan("node-a", dead, []Port{p1, p2}, 251)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := Plan("node-a", dead, []Port{p1, p2}, 251)
	if err != nil {
		t.Fatal(err)
	}
	for i := range fresh {
		if !slices.Equal(second[i].Ring, fresh[i].Ring) || second[i].RingID != fresh[i].RingID {
			t.Errorf("%s: the planner's ring differs from a fresh plan's", fresh[i].Key)
		}
	}
	if &first[0].Ring[0] != &second[0].Ring[0] {
		t.Error("an untouched ring was rebuilt")
	}
	if first[1].RingID == second[1].RingID {
		t.Error("a touched ring kept its id")
	}
}

// slotsOf counts the ring slots of the node at addr, which must be in the
// ring: an index it does not hold would count nothing, or another node.
func slotsOf(t *testing.T, e Entry, addr netip.Addr) int {
	t.Helper()
	idx := slices.Index(e.RingNodes, addr)
	if idx < 0 {
		t.Fatalf("%s is not among the ring's nodes %v", addr, e.RingNodes)
	}
	n := 0
	for _, s := range e.Ring {
		if int(s) == idx {
			n++
		}
	}
	return n
}
