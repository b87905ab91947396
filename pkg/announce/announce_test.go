package announce

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func node(name string) Node {
	return Node{Name: name, Alive: true, Advertised: true, ReadyEndpoints: 1}
}

func TestCheck(t *testing.T) {
	cluster := Service{ReadyEndpoints: 2}
	local := Service{Local: true, ReadyEndpoints: 2}
	tests := map[string]struct {
		svc  Service
		node Node
		want Reason
	}{
		"eligible":                     {cluster, node("a"), Announcing},
		"dead speaker":                 {cluster, Node{Name: "a", Advertised: true, ReadyEndpoints: 1}, NotAlive},
		"excluded node":                {cluster, Node{Name: "a", Alive: true, Excluded: true, Advertised: true}, Excluded},
		"no advertisement":             {cluster, Node{Name: "a", Alive: true}, NoAdvertisement},
		"missing interface":            {cluster, Node{Name: "a", Alive: true, MissingInterface: true}, NoInterface},
		"one advertisement of two":     {cluster, Node{Name: "a", Alive: true, Advertised: true, MissingInterface: true, ReadyEndpoints: 1}, Announcing},
		"no endpoints anywhere":        {Service{}, node("a"), NoEndpoints},
		"cluster without local ones":   {cluster, Node{Name: "a", Alive: true, Advertised: true}, Announcing},
		"local without local endpoint": {local, Node{Name: "a", Alive: true, Advertised: true}, NoLocalEndpoint},
		"local with local endpoint":    {local, node("a"), Announcing},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Check(tc.svc, tc.node); got != tc.want {
				t.Errorf("Check = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestL2OneOwner(t *testing.T) {
	svc := Service{ReadyEndpoints: 1}
	nodes := []Node{node("a"), node("b"), node("c"), {Name: "d", Alive: true, Excluded: true, Advertised: true}}
	owners := map[string]int{}
	for i := range 300 {
		ip := netip.AddrFrom4([4]byte{10, 89, 100, byte(i)})
		if i >= 256 {
			ip = netip.MustParseAddr(fmt.Sprintf("fd89:100::%x", i))
		}
		var got []string
		for _, n := range nodes {
			if L2(ip, svc, nodes, n.Name) == Announcing {
				got = append(got, n.Name)
			}
		}
		if len(got) != 1 {
			t.Fatalf("%s: announced by %v, want exactly one node", ip, got)
		}
		owners[got[0]]++
	}
	if owners["d"] != 0 {
		t.Errorf("excluded node owns %d IPs", owners["d"])
	}
	// Rendezvous hashing spreads IPs: each of three nodes gets a fair share.
	for _, n := range []string{"a", "b", "c"} {
		if owners[n] < 60 {
			t.Errorf("node %s owns %d of 300 IPs, want a fair share: %v", n, owners[n], owners)
		}
	}
}

func TestRankIsStableUnderNodeLoss(t *testing.T) {
	// Removing a node moves only its own IPs: every other IP keeps its owner.
	all := []string{"a", "b", "c", "d", "e"}
	for i := range 256 {
		ip := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		full := slices.Clone(all)
		Rank(ip, full)
		for _, gone := range all {
			rest := slices.DeleteFunc(slices.Clone(all), func(s string) bool { return s == gone })
			Rank(ip, rest)
			want := slices.DeleteFunc(slices.Clone(full), func(s string) bool { return s == gone })
			if diff := cmp.Diff(want, rest); diff != "" {
				t.Fatalf("%s without %s: order changed (-want +got):\n%s", ip, gone, diff)
			}
		}
	}
}

func TestRankIgnoresInputOrder(t *testing.T) {
	ip := netip.MustParseAddr("10.89.100.7")
	a := []string{"node-a", "node-b", "node-c"}
	b := []string{"node-c", "node-a", "node-b"}
	Rank(ip, a)
	Rank(ip, b)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("order depends on input order (-a +b):\n%s", diff)
	}
	// A v4-mapped address ranks as the IPv4 address.
	c := []string{"node-b", "node-c", "node-a"}
	Rank(netip.MustParseAddr("::ffff:10.89.100.7"), c)
	if diff := cmp.Diff(a, c); diff != "" {
		t.Errorf("mapped address ranks differently (-v4 +mapped):\n%s", diff)
	}
}

func TestL2Unknown(t *testing.T) {
	if got := L2(netip.MustParseAddr("10.0.0.1"), Service{ReadyEndpoints: 1}, []Node{node("a")}, "zz"); got != UnknownNode {
		t.Errorf("L2 for an unknown node = %q, want %q", got, UnknownNode)
	}
}

func BenchmarkEligible(b *testing.B) {
	nodes := make([]Node, 100)
	for i := range nodes {
		nodes[i] = node(fmt.Sprintf("node-%03d", i))
	}
	ip := netip.MustParseAddr("10.89.100.1")
	for b.Loop() {
		_ = Eligible(ip, Service{ReadyEndpoints: 1}, nodes)
	}
}
