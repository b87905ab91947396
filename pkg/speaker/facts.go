package speaker

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/pkg/config"
	"github.com/ironlb/ironlb/pkg/dataplane"
)

// serviceFacts is a LoadBalancer Service as the speaker's decisions see
// it. The API objects are translated once per sync (translate), and the
// announcer's plan, the data plane's forwarding and BGP all read these
// facts, so that they judge an endpoint, an IP or a port the same way.
type serviceFacts struct {
	key      types.NamespacedName
	deleting bool
	// ips are the Service's ingress IPs.
	ips      []netip.Addr
	local    bool
	affinity bool
	// affinityTimeout is sessionAffinityConfig.clientIP.timeoutSeconds
	// (0: the default).
	affinityTimeout uint32
	// newFlowsPerSource is the per-source limit (0: none).
	newFlowsPerSource uint32
	// ranges are loadBalancerSourceRanges as kube-proxy reads them (both
	// families; entries that are no CIDR left out).
	ranges []netip.Prefix
	ports  []portFacts
	// endpoints are the EndpointSlices' endpoints, IPv4 then IPv6.
	endpoints [2][]endpointFacts
}

// portFacts is a TCP or UDP port of a Service (SCTP is left out: the data
// plane forwards TCP and UDP).
type portFacts struct {
	ref   portRef
	port  uint16
	proto uint8
}

// portRef names a Service port as EndpointSlices do.
type portRef struct {
	name     string
	protocol corev1.Protocol
}

// endpointFacts is one endpoint of an EndpointSlice.
type endpointFacts struct {
	addr           netip.Addr
	node           string
	ready, serving bool
	// targets are the endpoint's ports, from its slice, by Service port.
	targets map[portRef]uint16
}

// family is the index of an address's family in serviceFacts.endpoints.
func family(ip netip.Addr) int {
	if ip.Is4() {
		return 0
	}
	return 1
}

// translate reads the LoadBalancer Services and their EndpointSlices once.
func translate(services []corev1.Service, slices []discoveryv1.EndpointSlice) []serviceFacts {
	byService := map[types.NamespacedName][]*discoveryv1.EndpointSlice{}
	for i := range slices {
		s := &slices[i]
		if name := s.Labels[discoveryv1.LabelServiceName]; name != "" {
			k := types.NamespacedName{Namespace: s.Namespace, Name: name}
			byService[k] = append(byService[k], s)
		}
	}
	out := make([]serviceFacts, 0, len(services))
	for i := range services {
		svc := &services[i]
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		f := serviceFacts{
			key:      types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name},
			deleting: svc.DeletionTimestamp != nil,
			local:    svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
			affinity: svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP,
		}
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			f.affinityTimeout = uint32(max(*c.ClientIP.TimeoutSeconds, 0))
		}
		// Entries that are no CIDR, and a limit that does not parse,
		// are ignored here and reported by the controller.
		f.ranges, _ = config.SourceRanges(svc.Spec.LoadBalancerSourceRanges)
		f.newFlowsPerSource, _ = config.NewFlowsPerSource(svc)
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if ip, err := netip.ParseAddr(ing.IP); err == nil {
				f.ips = append(f.ips, ip.Unmap())
			}
		}
		for _, sp := range svc.Spec.Ports {
			proto := uint8(dataplane.TCP)
			switch sp.Protocol {
			case corev1.ProtocolUDP:
				proto = dataplane.UDP
			case corev1.ProtocolSCTP:
				continue
			}
			f.ports = append(f.ports, portFacts{ref: portRef{sp.Name, sp.Protocol}, port: uint16(sp.Port), proto: proto})
		}
		for _, s := range byService[f.key] {
			fam := 0
			switch s.AddressType {
			case discoveryv1.AddressTypeIPv4:
			case discoveryv1.AddressTypeIPv6:
				fam = 1
			default:
				continue
			}
			targets := map[portRef]uint16{}
			for _, p := range s.Ports {
				ref := portRef{protocol: corev1.ProtocolTCP}
				if p.Name != nil {
					ref.name = *p.Name
				}
				if p.Protocol != nil {
					ref.protocol = *p.Protocol
				}
				if p.Port != nil {
					targets[ref] = uint16(*p.Port)
				}
			}
			for j := range s.Endpoints {
				e := &s.Endpoints[j]
				if len(e.Addresses) == 0 {
					continue
				}
				addr, err := netip.ParseAddr(e.Addresses[0])
				if err != nil || addr.Is4() != (fam == 0) {
					continue
				}
				ef := endpointFacts{addr: addr, targets: targets}
				ef.ready, ef.serving = endpointState(e)
				if e.NodeName != nil {
					ef.node = *e.NodeName
				}
				f.endpoints[fam] = append(f.endpoints[fam], ef)
			}
		}
		out = append(out, f)
	}
	return out
}

// takingNewFlows counts, per node, the endpoints of a family that take
// new flows: the ready ones, or the serving ones when none is ready, as
// the data plane forwards (dataplane.Plan) and kube-proxy does.
func (f *serviceFacts) takingNewFlows(fam int) map[string]int {
	ready, serving := map[string]int{}, map[string]int{}
	for _, e := range f.endpoints[fam] {
		if e.ready {
			ready[e.node]++
		}
		if e.serving {
			serving[e.node]++
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return serving
}

// facts returns the world's Services as facts: those sync translated, or
// a translation now (for tests that build a world by hand).
func (w world) facts() []serviceFacts {
	if w.svcFacts != nil {
		return w.svcFacts
	}
	return translate(w.services, w.slices)
}
