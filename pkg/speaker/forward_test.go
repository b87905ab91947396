package speaker

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/dataplane"
)

// TestForwarding checks the translation into the data plane's terms: ports
// matched to slice ports by name and protocol, target ports from the
// slice, terminating endpoints not ready, SCTP and IPs outside the pools
// left out, affinity and Local carried.
func TestForwarding(t *testing.T) {
	svc := testService("web", "192.0.2.10", true)
	svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	svc.Annotations = map[string]string{ironlbv1alpha1.AnnotationNewFlowsPerSource: "20"}
	svc.Spec.Ports = []corev1.ServicePort{
		{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)},
		{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
		{Name: "sctp", Port: 99, Protocol: corev1.ProtocolSCTP},
	}
	svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: "203.0.113.1"}) // no pool
	es := testSlice("web", "a", "b")
	es.Ports = []discoveryv1.EndpointPort{
		{Name: new("http"), Protocol: new(corev1.ProtocolTCP), Port: new(int32(8080))},
		{Name: new("dns"), Protocol: new(corev1.ProtocolUDP), Port: new(int32(5353))},
	}
	es.Endpoints[1].Conditions = discoveryv1.EndpointConditions{Ready: new(false), Serving: new(true), Terminating: new(true)}
	node := testNode("a", nil, corev1.ConditionTrue)
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.1.0.11"}, {Type: corev1.NodeExternalIP, Address: "198.51.100.9"}}
	w := world{
		nodes:    []corev1.Node{node},
		services: []corev1.Service{svc},
		slices:   []discoveryv1.EndpointSlice{es},
		pools:    []ironlbv1alpha1.IPPool{testPool("lan", nil, "192.0.2.0/24")},
	}
	fp := forwarding(w)
	nodes, ports := fp.nodes, fp.ports
	if want := []dataplane.Node{{Name: "a", Addrs: []netip.Addr{netip.MustParseAddr("10.1.0.11")}}}; !cmp.Equal(nodes, want, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })) {
		t.Errorf("nodes %v, want %v (InternalIPs only)", nodes, want)
	}
	vip := netip.MustParseAddr("192.0.2.10")
	eps := func(port uint16) []dataplane.Endpoint {
		return []dataplane.Endpoint{
			{Addr: netip.MustParseAddr("10.0.0.1"), Port: port, Node: "a", Ready: true, Serving: true},
			{Addr: netip.MustParseAddr("10.0.0.2"), Port: port, Node: "b", Ready: false, Serving: true},
		}
	}
	want := []dataplane.Port{
		{Service: "ns/web", VIP: vip, Port: 80, Proto: dataplane.TCP, Affinity: true, Local: true, NewFlowsPerSource: 20, Endpoints: eps(8080)},
		{Service: "ns/web", VIP: vip, Port: 53, Proto: dataplane.UDP, Affinity: true, Local: true, NewFlowsPerSource: 20, Endpoints: eps(5353)},
	}
	if d := cmp.Diff(want, ports, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("ports (-want +got):\n%s", d)
	}
}

// TestOneViewOfReadiness: when no endpoint is ready but one still serves
// while terminating, the announcer announces the IP from that endpoint's
// node (Local) and the data plane sends new flows to it; an endpoint that
// neither is ready nor serves counts for neither.
func TestOneViewOfReadiness(t *testing.T) {
	svc := testService("web", "192.0.2.10", true)
	svc.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}
	es := testSlice("web", "a", "b")
	es.Ports = []discoveryv1.EndpointPort{{Name: new("http"), Protocol: new(corev1.ProtocolTCP), Port: new(int32(8080))}}
	es.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: new(false), Serving: new(true), Terminating: new(true)}
	es.Endpoints[1].Conditions = discoveryv1.EndpointConditions{Ready: new(false), Serving: new(false), Terminating: new(true)}
	nodes := []corev1.Node{testNode("a", nil, corev1.ConditionTrue), testNode("b", nil, corev1.ConditionTrue)}
	for i, a := range []string{"10.1.0.11", "10.1.0.12"} {
		nodes[i].Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: a}}
	}
	w := world{
		nodes:    nodes,
		services: []corev1.Service{svc},
		slices:   []discoveryv1.EndpointSlice{es},
		pools:    []ironlbv1alpha1.IPPool{testPool("lan", nil, "192.0.2.0/24")},
		l2:       []ironlbv1alpha1.L2Advertisement{{}},
		alive:    map[string]bool{"a": true, "b": true},
	}
	w.svcFacts = translate(w.services, w.slices)
	d := plan(w, "a")
	if len(d) != 1 || d[0].owner != "a" {
		t.Fatalf("decisions %+v: want the IP owned by a, whose endpoint serves", d)
	}
	fp := forwarding(w)
	entries, err := dataplane.Plan("a", fp.nodes, fp.ports, 251)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || len(entries[0].Backends) != 1 || entries[0].Ready != 1 {
		t.Errorf("data plane entry %+v: want the serving endpoint taking new flows", entries)
	}
}
