// Package dataplane turns Services, EndpointSlices and Nodes into the maps
// of ironlb's XDP program (bpf/), and loads, attaches and pins it.
//
// plan.go is pure: Plan is what every node computes from the same
// Kubernetes state, and its rings must be identical on every node for the
// same input, which its tests check.
package dataplane

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/ironlb/ironlb/pkg/maglev"
)

// Protocols, as IP numbers.
const (
	TCP = 6
	UDP = 17
)

// Node is a node that may hold endpoints.
type Node struct {
	Name  string
	Addrs []netip.Addr // InternalIPs, at most one per family is used
}

// Endpoint is one address of an EndpointSlice, for one Service port.
type Endpoint struct {
	Addr netip.Addr
	Port uint16 // the target port
	Node string
	// Ready takes new flows. A terminating endpoint is not ready: it
	// keeps the flows it has (conntrack) and gets no new ones.
	Ready bool
}

// Port is one VIP:port/protocol of a Service.
type Port struct {
	VIP   netip.Addr
	Port  uint16
	Proto uint8
	// Affinity is sessionAffinity ClientIP: flows hash on the client only.
	Affinity bool
	// Local is externalTrafficPolicy Local: this node's endpoints only.
	Local     bool
	Endpoints []Endpoint
}

// Key identifies a Port.
type Key struct {
	VIP   netip.Addr
	Port  uint16
	Proto uint8
}

// Key returns the port's VIP:port/protocol.
func (p Port) Key() Key { return Key{p.VIP, p.Port, p.Proto} }

func (k Key) String() string {
	proto := "TCP"
	if k.Proto == UDP {
		proto = "UDP"
	}
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(k.VIP, k.Port), proto)
}

// Backend is a local endpoint as tier 2 uses it.
type Backend struct {
	Addr netip.Addr
	Port uint16
}

// Entry is what the maps hold for one Port on this node.
type Entry struct {
	Key      Key
	Affinity bool
	Local    bool
	// Ring holds, for each slot, an index into RingNodes; nil when no
	// node holds a ready endpoint (or for Local).
	Ring      []uint32
	RingNodes []netip.Addr
	// Backends are this node's ready endpoints, in a canonical order.
	Backends []Backend
}

// MaxLocalBackends is how many endpoints of one port one node can serve
// (MAX_LOCAL_BACKENDS in bpf/include/consts.h).
const MaxLocalBackends = 64

// Plan computes the entries of every port for the node self, with rings of
// ringSize slots. A port whose VIP family has no address on a node leaves
// that node out of its ring.
func Plan(self string, nodes []Node, ports []Port, ringSize uint32) ([]Entry, error) {
	addrOf := map[string][2]netip.Addr{} // node -> [v4, v6]
	for _, n := range nodes {
		var a [2]netip.Addr
		for _, ip := range n.Addrs {
			i := 1
			if ip.Is4() {
				i = 0
			}
			if !a[i].IsValid() {
				a[i] = ip
			}
		}
		addrOf[n.Name] = a
	}
	fam := func(ip netip.Addr) int {
		if ip.Is4() {
			return 0
		}
		return 1
	}
	out := make([]Entry, 0, len(ports))
	rings := map[string][]uint32{}
	for _, p := range ports {
		e := Entry{Key: p.Key(), Affinity: p.Affinity, Local: p.Local}
		weights := map[string]uint32{}
		for _, ep := range p.Endpoints {
			if !ep.Ready || ep.Addr.Is4() != p.VIP.Is4() {
				continue
			}
			weights[ep.Node]++
			if ep.Node == self {
				e.Backends = append(e.Backends, Backend{ep.Addr, ep.Port})
			}
		}
		slices.SortFunc(e.Backends, func(a, b Backend) int {
			return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
		})
		e.Backends = slices.Compact(e.Backends)
		if len(e.Backends) > MaxLocalBackends {
			e.Backends = e.Backends[:MaxLocalBackends]
		}
		if !p.Local {
			var bs []maglev.Backend
			names := make([]string, 0, len(weights))
			for n := range weights {
				if addrOf[n][fam(p.VIP)].IsValid() {
					names = append(names, n)
				}
			}
			slices.Sort(names)
			for i, n := range names {
				bs = append(bs, maglev.Backend{Key: n, ID: uint32(i), Weight: weights[n]})
				e.RingNodes = append(e.RingNodes, addrOf[n][fam(p.VIP)])
			}
			if len(bs) > 0 {
				// Ports with the same nodes and weights (the ports of
				// one Service, usually) share one table.
				key := fmt.Sprint(bs)
				ring, ok := rings[key]
				if !ok {
					var err error
					if ring, err = maglev.Build(bs, ringSize); err != nil {
						return nil, fmt.Errorf("%s: %w", e.Key, err)
					}
					rings[key] = ring
				}
				e.Ring = ring
			}
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(a.Key.VIP.Compare(b.Key.VIP), cmp.Compare(a.Key.Port, b.Key.Port), cmp.Compare(a.Key.Proto, b.Key.Proto))
	})
	return out, nil
}
