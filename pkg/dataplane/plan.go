// Package dataplane is the plain part of ironlb's XDP data plane: Plan
// turns the Services' ports, endpoints and nodes into the entries the
// program's maps hold, and Dump and Options describe it. It is pure (a
// depguard rule keeps it so), so ironlbctl links it without the loader;
// pkg/dataplane/loader loads, attaches and pins the program (bpf/) and
// writes the entries.
//
// Plan is what every node computes from the same state, and its rings must
// be identical on every node for the same input, which its tests check.
package dataplane

import (
	"cmp"
	"crypto/sha256"
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
	// Dead is a node whose speaker memberlist declared dead, or whose
	// Node is not Ready: it leaves every ring at once, and the flows
	// pinned to it are placed again.
	Dead bool
}

// Endpoint is one address of an EndpointSlice, for one Service port.
type Endpoint struct {
	Addr netip.Addr
	Port uint16 // the target port
	Node string
	// Ready takes new flows. A terminating endpoint is not ready: it
	// keeps the flows it has (conntrack) while it is Serving, and gets
	// new ones only when no endpoint is ready, as kube-proxy does.
	Ready   bool
	Serving bool
}

// Port is one VIP:port/protocol of a Service.
type Port struct {
	// Service is "namespace/name", for metrics and logs.
	Service string
	VIP     netip.Addr
	Port    uint16
	Proto   uint8
	// Affinity is sessionAffinity ClientIP: flows hash on the client only.
	Affinity bool
	// AffinityTimeout is sessionAffinityConfig.clientIP.timeoutSeconds.
	AffinityTimeout uint32
	// Local is externalTrafficPolicy Local: this node's endpoints only.
	Local bool
	// SourceRanges are the loadBalancerSourceRanges of the VIP's family;
	// none means open to every client.
	SourceRanges []netip.Prefix
	// NewFlowsPerSource limits the new flows a second of one client
	// (/32, /64) through this node; 0: no limit.
	NewFlowsPerSource uint32
	Endpoints         []Endpoint
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
	Key             Key
	Service         string
	Affinity        bool
	AffinityTimeout uint32
	Local           bool
	SourceRanges    []netip.Prefix
	// NewFlowsPerSource is Port's.
	NewFlowsPerSource uint32
	// Ring holds, for each slot, an index into RingNodes; nil when no
	// node holds a ready endpoint (or for Local). RingID names the ring
	// by what makes it (its nodes, their weights and addresses, its
	// size): ports with the same RingID have the same ring, and share one
	// kernel map.
	Ring      []uint32
	RingNodes []netip.Addr
	RingID    RingID
	// Members are the addresses of the live nodes that hold serving
	// endpoints (ready or terminating): the nodes tier-1 flows may stay
	// pinned to. A superset of RingNodes.
	Members []netip.Addr
	// Backends are this node's serving endpoints in a canonical order:
	// the Ready first ones take new flows, the rest keep theirs.
	Backends []Backend
	Ready    int
	// Truncated counts this node's ready endpoints beyond
	// MaxLocalBackends: they get no traffic, and the ring weighs this
	// node as MaxLocalBackends.
	Truncated int
}

// RingID is a digest of what makes a ring; the zero value names none.
type RingID [sha256.Size]byte

// MaxLocalBackends is how many endpoints of one port one node can serve
// (MAX_LOCAL_BACKENDS in bpf/include/consts.h).
const MaxLocalBackends = 64

// DefaultAffinityTimeout is Kubernetes' default for
// sessionAffinityConfig.clientIP.timeoutSeconds (three hours).
const DefaultAffinityTimeout = 10800

// Plan computes the entries of every port for the node self, with rings of
// ringSize slots. A port whose VIP family has no address on a node leaves
// that node out of its ring, and so does a dead node.
//
// Endpoints are judged as kube-proxy judges them: the ready ones take new
// flows; when none is ready (anywhere, or on this node for Local), the
// serving terminating ones do. Serving endpoints that take no new flows
// keep the flows they have.
func Plan(self string, nodes []Node, ports []Port, ringSize uint32) ([]Entry, error) {
	return (&Planner{}).Plan(self, nodes, ports, ringSize)
}

// Planner computes plans like Plan and keeps the rings of its last one, so
// that a change (a node's death, an endpoint more) rebuilds only the rings
// it touches. Not safe for concurrent use.
type Planner struct {
	rings map[string]ring
}

type ring struct {
	slots []uint32
	id    RingID
}

// Plan is Plan, reusing the rings of the previous call that still fit.
func (pl *Planner) Plan(self string, nodes []Node, ports []Port, ringSize uint32) ([]Entry, error) {
	addrOf := map[string][2]netip.Addr{} // node -> [v4, v6]
	dead := map[string]bool{}
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
		dead[n.Name] = n.Dead
	}
	fam := func(ip netip.Addr) int {
		if ip.Is4() {
			return 0
		}
		return 1
	}
	out := make([]Entry, 0, len(ports))
	rings := map[string]ring{}
	for _, p := range ports {
		e := Entry{Key: p.Key(), Service: p.Service, Affinity: p.Affinity, Local: p.Local, SourceRanges: p.SourceRanges,
			NewFlowsPerSource: p.NewFlowsPerSource}
		if p.Affinity {
			e.AffinityTimeout = p.AffinityTimeout
			if e.AffinityTimeout == 0 {
				e.AffinityTimeout = DefaultAffinityTimeout
			}
		}
		// The endpoints that count: of the VIP's family, on live nodes.
		var eps []Endpoint
		for _, ep := range p.Endpoints {
			if ep.Addr.Is4() != p.VIP.Is4() || dead[ep.Node] || (!ep.Ready && !ep.Serving) {
				continue
			}
			eps = append(eps, ep)
		}
		// Which take new flows: the ready ones, else the serving ones.
		takesNew := func(ep Endpoint) bool { return ep.Ready }
		anyReady := slices.ContainsFunc(eps, func(ep Endpoint) bool {
			return ep.Ready && (!p.Local || ep.Node == self)
		})
		if !anyReady {
			takesNew = func(Endpoint) bool { return true }
		}
		weights := map[string]uint32{}
		members := map[string]bool{}
		var ready, rest []Backend
		for _, ep := range eps {
			members[ep.Node] = true
			if takesNew(ep) {
				weights[ep.Node]++
			}
			if ep.Node != self {
				continue
			}
			if takesNew(ep) {
				ready = append(ready, Backend{ep.Addr, ep.Port})
			} else {
				rest = append(rest, Backend{ep.Addr, ep.Port})
			}
		}
		ready, rest = canonical(ready), canonical(rest)
		if len(ready) > MaxLocalBackends {
			e.Truncated = len(ready) - MaxLocalBackends
			ready = ready[:MaxLocalBackends]
		}
		rest = slices.DeleteFunc(rest, func(b Backend) bool { return slices.Contains(ready, b) })
		e.Backends = append(ready, rest[:min(len(rest), MaxLocalBackends-len(ready))]...)
		e.Ready = len(ready)
		if len(e.Backends) == 0 {
			e.Backends = nil
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
				// A node serves at most MaxLocalBackends endpoints of
				// a port: weigh it so, or its share would overload
				// the endpoints it does serve.
				bs = append(bs, maglev.Backend{Key: n, ID: uint32(i), Weight: min(weights[n], MaxLocalBackends)})
				e.RingNodes = append(e.RingNodes, addrOf[n][fam(p.VIP)])
			}
			for n := range members {
				if a := addrOf[n][fam(p.VIP)]; a.IsValid() {
					e.Members = append(e.Members, a)
				}
			}
			slices.SortFunc(e.Members, netip.Addr.Compare)
			if len(bs) > 0 {
				// Ports with the same nodes and weights (the ports of
				// one Service, usually) share one table.
				key := fmt.Sprint(ringSize, bs, e.RingNodes)
				r, ok := rings[key]
				if !ok {
					r, ok = pl.rings[key]
				}
				if !ok {
					slots, err := maglev.Build(bs, ringSize)
					if err != nil {
						return nil, fmt.Errorf("%s: %w", e.Key, err)
					}
					r = ring{slots, sha256.Sum256([]byte(key))}
					rings[key] = r
				}
				rings[key] = r
				e.Ring, e.RingID = r.slots, r.id
			}
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(a.Key.VIP.Compare(b.Key.VIP), cmp.Compare(a.Key.Port, b.Key.Port), cmp.Compare(a.Key.Proto, b.Key.Proto))
	})
	pl.rings = rings
	return out, nil
}

// canonical sorts endpoints and drops duplicates (an address in two
// slices while they are being rewritten).
func canonical(bs []Backend) []Backend {
	slices.SortFunc(bs, func(a, b Backend) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
	})
	return slices.Compact(bs)
}
