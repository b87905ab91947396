package speaker

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/pkg/announce"
	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/bgp"
)

func testNode(name string, labels map[string]string, ready corev1.ConditionStatus) corev1.Node {
	return corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status:     corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}},
	}
}

func testService(name, ip string, local bool) corev1.Service {
	s := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
		Status:     corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: ip}}}},
	}
	if local {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	return s
}

// testSlice gives the Service one ready endpoint on each named node.
func testSlice(svc string, nodes ...string) discoveryv1.EndpointSlice {
	es := discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: svc + "-x", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, n := range nodes {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}).String()},
			NodeName:  new(n),
		})
	}
	return es
}

func testPool(name string, labels map[string]string, addrs ...string) ironlbv1alpha1.IPPool {
	p := ironlbv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	for _, a := range addrs {
		p.Spec.Addresses = append(p.Spec.Addresses, ironlbv1alpha1.AddressRange(a))
	}
	return p
}

func TestPlan(t *testing.T) {
	abc := []corev1.Node{
		testNode("a", map[string]string{"zone": "1"}, corev1.ConditionTrue),
		testNode("b", map[string]string{"zone": "2"}, corev1.ConditionTrue),
		testNode("c", map[string]string{"zone": "2"}, corev1.ConditionTrue),
	}
	allAlive := map[string]bool{"a": true, "b": true, "c": true}
	pools := []ironlbv1alpha1.IPPool{
		testPool("lan", map[string]string{"scope": "lan"}, "192.0.2.0/24"),
		testPool("other", nil, "198.51.100.0/24"),
	}
	allAdv := []ironlbv1alpha1.L2Advertisement{{ObjectMeta: metav1.ObjectMeta{Name: "all"}}}
	ip := netip.MustParseAddr("192.0.2.10")
	rank := func(nodes ...string) string {
		announce.Rank(ip, nodes)
		return nodes[0]
	}

	tests := map[string]struct {
		w         world
		wantOwner string
		wantIfs   []string
		wantNone  bool
	}{
		"all eligible: rendezvous owner": {
			w:         world{nodes: abc, services: []corev1.Service{testService("s", "192.0.2.10", false)}, slices: []discoveryv1.EndpointSlice{testSlice("s", "a")}, pools: pools, l2: allAdv, alive: allAlive},
			wantOwner: rank("a", "b", "c"),
		},
		"IP outside every pool is not ours": {
			w:        world{nodes: abc, services: []corev1.Service{testService("s", "203.0.113.1", false)}, slices: []discoveryv1.EndpointSlice{testSlice("s", "a")}, pools: pools, l2: allAdv, alive: allAlive},
			wantNone: true,
		},
		"dead and not-ready nodes are skipped": {
			w: world{nodes: []corev1.Node{abc[0], abc[1], testNode("c", nil, corev1.ConditionFalse)},
				services: []corev1.Service{testService("s", "192.0.2.10", false)}, slices: []discoveryv1.EndpointSlice{testSlice("s", "a")},
				pools: pools, l2: allAdv, alive: map[string]bool{"a": true, "c": true}},
			wantOwner: "a",
		},
		"excluded node": {
			w: world{nodes: []corev1.Node{testNode("a", map[string]string{ironlbv1alpha1.ExcludeLabel: ""}, corev1.ConditionTrue), abc[1]},
				services: []corev1.Service{testService("s", "192.0.2.10", false)}, slices: []discoveryv1.EndpointSlice{testSlice("s", "a")},
				pools: pools, l2: allAdv, alive: allAlive},
			wantOwner: "b",
		},
		"advertisement by pool label and node selector, with interfaces": {
			w: world{nodes: abc, services: []corev1.Service{testService("s", "192.0.2.10", false)}, slices: []discoveryv1.EndpointSlice{testSlice("s", "a")},
				pools: pools, alive: allAlive,
				l2: []ironlbv1alpha1.L2Advertisement{
					{ObjectMeta: metav1.ObjectMeta{Name: "zone1"}, Spec: ironlbv1alpha1.L2AdvertisementSpec{
						PoolSelection: ironlbv1alpha1.PoolSelection{IPPoolSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"scope": "lan"}}},
						NodeSelector:  &metav1.LabelSelector{MatchLabels: map[string]string{"zone": "1"}},
						Interfaces:    []string{"eth1", "eth0"},
					}},
					{ObjectMeta: metav1.ObjectMeta{Name: "wrong-pool"}, Spec: ironlbv1alpha1.L2AdvertisementSpec{
						PoolSelection: ironlbv1alpha1.PoolSelection{IPPools: []string{"other"}},
					}},
				}},
			wantOwner: "a",
			wantIfs:   []string{"eth0", "eth1"},
		},
		"no advertisement selects the pool": {
			w: world{nodes: abc, services: []corev1.Service{testService("s", "192.0.2.10", false)}, slices: []discoveryv1.EndpointSlice{testSlice("s", "a")},
				pools: pools, alive: allAlive,
				l2: []ironlbv1alpha1.L2Advertisement{{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: ironlbv1alpha1.L2AdvertisementSpec{PoolSelection: ironlbv1alpha1.PoolSelection{IPPools: []string{"other"}}}}}},
			wantOwner: "",
		},
		"local follows the endpoint": {
			w:         world{nodes: abc, services: []corev1.Service{testService("s", "192.0.2.10", true)}, slices: []discoveryv1.EndpointSlice{testSlice("s", "c")}, pools: pools, l2: allAdv, alive: allAlive},
			wantOwner: "c",
		},
		"no ready endpoint anywhere": {
			w:         world{nodes: abc, services: []corev1.Service{testService("s", "192.0.2.10", false)}, pools: pools, l2: allAdv, alive: allAlive},
			wantOwner: "",
		},
		"sharing services merge their endpoints": {
			w: world{nodes: abc, services: []corev1.Service{testService("s1", "192.0.2.10", true), testService("s2", "192.0.2.10", true)},
				slices: []discoveryv1.EndpointSlice{testSlice("s2", "b")}, pools: pools, l2: allAdv, alive: allAlive},
			wantOwner: "b",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			// Every node computes the same owner, and only the owner announces.
			var owners []string
			for _, self := range []string{"a", "b", "c"} {
				ds := plan(tc.w, self)
				if tc.wantNone {
					if len(ds) != 0 {
						t.Fatalf("plan = %+v, want nothing", ds)
					}
					return
				}
				if len(ds) != 1 {
					t.Fatalf("plan for %s has %d decisions, want 1", self, len(ds))
				}
				d := ds[0]
				owners = append(owners, d.owner)
				if (d.self == announce.Announcing) != (self == tc.wantOwner) {
					t.Errorf("node %s: reason %q, owner %q", self, d.self, d.owner)
				}
				if self == tc.wantOwner {
					if diff := cmp.Diff(tc.wantIfs, d.interfaces); diff != "" {
						t.Errorf("interfaces (-want +got):\n%s", diff)
					}
				}
			}
			if diff := cmp.Diff([]string{tc.wantOwner, tc.wantOwner, tc.wantOwner}, owners); diff != "" {
				t.Errorf("owners as each node computes them (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAnnouncementName(t *testing.T) {
	a := AnnouncementName("demo", "10.0.0.1", "node-a", ironlbv1alpha1.ProtocolL2)
	b := AnnouncementName("demo", "10.0.0.1", "node-b", ironlbv1alpha1.ProtocolL2)
	if a == b {
		t.Errorf("two nodes share the name %s", a)
	}
	long := AnnouncementName(strings.Repeat("s", 300), "10.0.0.1", "n", ironlbv1alpha1.ProtocolL2)
	if len(long) > 253 {
		t.Errorf("name of %d characters", len(long))
	}
}

// TestBGPRoutes: every eligible node advertises, to the peers of the IP's
// family that the advertisement names and that peer with the node, with
// the aggregation length, communities (well-known names as numbers, large
// ones apart) and local preference; an excluded node and, for Local, a
// node without a ready endpoint advertise nothing.
func TestBGPRoutes(t *testing.T) {
	pool := ironlbv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: ironlbv1alpha1.IPPoolSpec{Addresses: []ironlbv1alpha1.AddressRange{"10.0.0.0/24"}}}
	agg := int32(24)
	lp := int64(120)
	peer := func(name, addr string, sel map[string]string) ironlbv1alpha1.BGPPeer {
		p := ironlbv1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: ironlbv1alpha1.BGPPeerSpec{PeerAddress: addr}}
		if sel != nil {
			p.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: sel}
		}
		return p
	}
	w := world{
		nodes: []corev1.Node{
			testNode("a", map[string]string{"rack": "1"}, corev1.ConditionTrue),
			testNode("b", map[string]string{"rack": "2"}, corev1.ConditionTrue),
			testNode("x", map[string]string{ironlbv1alpha1.ExcludeLabel: ""}, corev1.ConditionTrue),
		},
		services: []corev1.Service{testService("web", "10.0.0.5", false), testService("loc", "10.0.0.6", true)},
		slices:   []discoveryv1.EndpointSlice{testSlice("web", "a"), testSlice("loc", "b")},
		pools:    []ironlbv1alpha1.IPPool{pool},
		bgpPeers: []ironlbv1alpha1.BGPPeer{
			peer("tor1", "192.0.2.1", nil), peer("tor2", "192.0.2.2", map[string]string{"rack": "2"}),
			peer("v6", "2001:db8::1", nil), peer("other", "192.0.2.3", nil),
		},
		bgpAdvs: []ironlbv1alpha1.BGPAdvertisement{
			{ObjectMeta: metav1.ObjectMeta{Name: "host"}, Spec: ironlbv1alpha1.BGPAdvertisementSpec{
				Peers:       []string{"tor1", "tor2", "v6"},
				Communities: []ironlbv1alpha1.Community{"64512:100", "no-export", "large:64512:1:2"}, LocalPref: &lp,
			}},
			{ObjectMeta: metav1.ObjectMeta{Name: "summary"}, Spec: ironlbv1alpha1.BGPAdvertisementSpec{
				Peers: []string{"other"}, AggregationLength: &agg,
			}},
		},
		alive: map[string]bool{"a": true, "b": true, "x": true},
	}
	routes := func(self, ip string) []bgp.Route {
		for _, d := range plan(w, self) {
			if d.ip.String() == ip {
				return d.bgp
			}
		}
		t.Fatalf("no decision for %s", ip)
		return nil
	}
	want := []bgp.Route{
		{Prefix: netip.MustParsePrefix("10.0.0.5/32"), Peers: []string{"tor1"}, Communities: []string{"64512:100", "65535:65281"}, LargeCommunities: []string{"64512:1:2"}, LocalPref: 120},
		{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Peers: []string{"other"}},
	}
	if diff := cmp.Diff(want, routes("a", "10.0.0.5"), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("node a, 10.0.0.5 (-want +got):\n%s", diff)
	}
	// Node b also peers with tor2 (rack 2).
	if got := routes("b", "10.0.0.5"); len(got) != 2 || strings.Join(got[0].Peers, ",") != "tor1,tor2" {
		t.Errorf("node b, 10.0.0.5: %+v", got)
	}
	if got := routes("x", "10.0.0.5"); got != nil {
		t.Errorf("the excluded node advertises %+v", got)
	}
	if got := routes("a", "10.0.0.6"); got != nil {
		t.Errorf("node a advertises the Local Service without a local endpoint: %+v", got)
	}
	if got := routes("b", "10.0.0.6"); len(got) != 2 {
		t.Errorf("node b, with the Local Service's endpoint: %+v", got)
	}
	// An IPv6 session that carries both families (MP-BGP) gets the IPv4
	// route too; without addressFamilies it does not (above).
	w.bgpPeers[2].Spec.AddressFamilies = []ironlbv1alpha1.AddressFamily{ironlbv1alpha1.FamilyIPv4, ironlbv1alpha1.FamilyIPv6}
	if got := routes("a", "10.0.0.5"); len(got) != 2 || strings.Join(got[0].Peers, ",") != "tor1,v6" {
		t.Errorf("node a, 10.0.0.5, with v6 carrying IPv4: %+v", got)
	}
	// An IPv4 session limited to IPv6 carries no IPv4 route.
	w.bgpPeers[0].Spec.AddressFamilies = []ironlbv1alpha1.AddressFamily{ironlbv1alpha1.FamilyIPv6}
	if got := routes("a", "10.0.0.5"); len(got) != 2 || strings.Join(got[0].Peers, ",") != "v6" {
		t.Errorf("node a, 10.0.0.5, with tor1 carrying IPv6 only: %+v", got)
	}
	// A dynamic peer's family is its prefix's.
	w.bgpPeers = append(w.bgpPeers, ironlbv1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "fabric"},
		Spec: ironlbv1alpha1.BGPPeerSpec{DynamicPeerPrefix: "192.0.2.0/28"}})
	w.bgpAdvs[0].Spec.Peers = append(w.bgpAdvs[0].Spec.Peers, "fabric")
	if got := routes("a", "10.0.0.5"); len(got) != 2 || strings.Join(got[0].Peers, ",") != "fabric,v6" {
		t.Errorf("node a, 10.0.0.5, with a dynamic IPv4 peer: %+v", got)
	}
	w.bgpPeers[len(w.bgpPeers)-1].Spec.DynamicPeerPrefix = "2001:db8::/64"
	if got := routes("a", "10.0.0.5"); len(got) != 2 || strings.Join(got[0].Peers, ",") != "v6" {
		t.Errorf("node a, 10.0.0.5, with a dynamic IPv6 peer: %+v", got)
	}
}

// TestAggregationStaysInPool: an aggregated prefix is announced only when
// all of it lies in the pool entry holding the IP, never a neighbour's
// addresses (a /24 for a /28 pool, or the upper half of a range's block).
func TestAggregationStaysInPool(t *testing.T) {
	pool := func(addrs ...ironlbv1alpha1.AddressRange) *ironlbv1alpha1.IPPool {
		return &ironlbv1alpha1.IPPool{Spec: ironlbv1alpha1.IPPoolSpec{Addresses: addrs}}
	}
	tests := map[string]struct {
		prefix string
		pool   *ironlbv1alpha1.IPPool
		want   bool
	}{
		"host route":                       {"192.0.2.5/32", pool("192.0.2.0/28"), true},
		"the pool's own prefix":            {"192.0.2.0/28", pool("192.0.2.0/28"), true},
		"wider than the pool":              {"192.0.2.0/24", pool("192.0.2.0/28"), false},
		"the whole Internet":               {"0.0.0.0/0", pool("192.0.2.0/28"), false},
		"a block inside a range":           {"10.0.0.0/30", pool("10.0.0.0-10.0.0.5"), true},
		"a block leaving a range":          {"10.0.0.4/30", pool("10.0.0.0-10.0.0.5"), false},
		"IPv6 inside":                      {"fd00::/124", pool("fd00::/120"), true},
		"IPv6 wider":                       {"fd00::/64", pool("fd00::/120"), false},
		"two entries do not add up to one": {"10.1.0.0/31", pool("10.1.0.0/32", "10.1.0.1/32"), false},
	}
	for name, tc := range tests {
		if got := withinPool(netip.MustParsePrefix(tc.prefix), tc.pool); got != tc.want {
			t.Errorf("%s: within %v, want %v", name, got, tc.want)
		}
	}
}

// TestPlanInterfaces: a node that lacks every interface its
// advertisements name is never the owner; when every node lacks them the
// IP has no owner, and one node (the same for all) reports it.
func TestPlanInterfaces(t *testing.T) {
	nodes := []corev1.Node{
		testNode("a", nil, corev1.ConditionTrue),
		testNode("b", nil, corev1.ConditionTrue),
		testNode("c", nil, corev1.ConditionTrue),
	}
	alive := map[string]bool{"a": true, "b": true, "c": true}
	adv := []ironlbv1alpha1.L2Advertisement{{ObjectMeta: metav1.ObjectMeta{Name: "x"},
		Spec: ironlbv1alpha1.L2AdvertisementSpec{Interfaces: []string{"eth1"}}}}
	var svcs []corev1.Service
	var slcs []discoveryv1.EndpointSlice
	for i := range 30 {
		name := "s" + strings.Repeat("x", i)
		svcs = append(svcs, testService(name, netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}).String(), false))
		slcs = append(slcs, testSlice(name, "b"))
	}
	has := ifaceFacts{has: map[string]bool{"eth1": true}, lacks: map[string]bool{}}
	lacks := ifaceFacts{has: map[string]bool{}, lacks: map[string]bool{"eth1": true}}
	w := world{nodes: nodes, services: svcs, slices: slcs, pools: []ironlbv1alpha1.IPPool{testPool("p", nil, "192.0.2.0/24")},
		l2: adv, alive: alive,
		// c is an older speaker that says nothing: counted as having it.
		ifaces: map[string]ifaceFacts{"a": lacks, "b": has}}
	owners := map[netip.Addr]string{}
	for _, self := range []string{"a", "b", "c"} {
		for _, d := range plan(w, self) {
			if d.owner == "a" || d.owner == "" {
				t.Fatalf("%s: owner %q; a lacks eth1 and b, c have it", d.ip, d.owner)
			}
			if prev, ok := owners[d.ip]; ok && prev != d.owner {
				t.Fatalf("%s: nodes disagree on the owner: %s and %s", d.ip, prev, d.owner)
			}
			owners[d.ip] = d.owner
			if self == "a" && d.self != announce.NoInterface {
				t.Errorf("%s: a's reason %q, want %q", d.ip, d.self, announce.NoInterface)
			}
			if self == d.owner && !slicesEqual(d.interfaces, []string{"eth1"}) {
				t.Errorf("%s: owner answers on %v", d.ip, d.interfaces)
			}
		}
	}
	// Without the interfaces a would have owned some of them.
	w2 := w
	w2.ifaces = nil
	aOwned := 0
	for _, d := range plan(w2, "a") {
		if d.owner == "a" {
			aOwned++
		}
	}
	if aOwned == 0 {
		t.Fatal("the test proves nothing: a ranks first for none of the IPs")
	}

	// Nobody has it: no owner, one reporter, the interface named.
	w.ifaces = map[string]ifaceFacts{"a": lacks, "b": lacks, "c": lacks}
	reporters := map[netip.Addr]string{}
	for _, self := range []string{"a", "b", "c"} {
		for _, d := range plan(w, self) {
			if d.owner != "" || d.self == announce.Announcing {
				t.Fatalf("%s: owner %q with no node having eth1", d.ip, d.owner)
			}
			if !slicesEqual(d.missing, []string{"eth1"}) || d.reporter == "" {
				t.Fatalf("%s: missing %v reporter %q", d.ip, d.missing, d.reporter)
			}
			if prev, ok := reporters[d.ip]; ok && prev != d.reporter {
				t.Fatalf("%s: nodes disagree on the reporter", d.ip)
			}
			reporters[d.ip] = d.reporter
		}
	}
	// No endpoints is another reason: not reported as interfaces.
	w.slices = nil
	for _, d := range plan(w, "a") {
		if len(d.missing) != 0 {
			t.Fatalf("%s: no endpoints reported as missing interfaces", d.ip)
		}
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }
