// Package announce decides which nodes announce which IPs. It is pure: every
// speaker feeds it the same plain facts (nodes, their liveness and labels
// already evaluated, the Service's endpoints) and gets the same answer, so
// the cluster agrees on one layer-2 owner per IP without any central
// decision or lease.
package announce

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"slices"
)

// Reason says why a node does or does not announce an IP. The empty reason
// means it announces; the others feed logs, metrics and status.
type Reason string

// The reasons a node does not announce an IP.
const (
	Announcing Reason = ""
	// NotOwner: the node is eligible but another eligible node ranks first.
	NotOwner Reason = "notOwner"
	// NoAdvertisement: no advertisement selects both the IP's pool and the node.
	NoAdvertisement Reason = "noMatchingAdvertisement"
	// Excluded: the node carries node.kubernetes.io/exclude-from-external-load-balancers.
	Excluded Reason = "nodeExcluded"
	// NotAlive: the node's speaker is not a live member.
	NotAlive Reason = "speakerNotAlive"
	// NoEndpoints: the Service has no ready endpoint anywhere.
	NoEndpoints Reason = "noReadyEndpoints"
	// NoLocalEndpoint: externalTrafficPolicy Local and no ready endpoint on the node.
	NoLocalEndpoint Reason = "noLocalEndpoint"
	// UnknownNode: the node is not among the candidates at all.
	UnknownNode Reason = "unknownNode"
	// NoInterface: the advertisements that select the IP's pool and the
	// node name interfaces the node lacks (or has down).
	NoInterface Reason = "interfaceMissing"
)

// Node is what the decision needs to know about one node for one IP.
type Node struct {
	Name string
	// Alive: the node's speaker is a live member of the cluster.
	Alive bool
	// Excluded: labelled to stay out of external load balancing.
	Excluded bool
	// Advertised: an advertisement selects the IP's pool and this node,
	// and the node has an interface it names (or it names none).
	Advertised bool
	// MissingInterface: advertisements select the pool and the node but
	// the node lacks every interface they name.
	MissingInterface bool
	// ReadyEndpoints counts the Service's ready endpoints on this node.
	ReadyEndpoints int
}

// Service is what the decision needs to know about the Service behind an
// IP. Services sharing an IP are merged by the caller: Local if any is, and
// ready endpoints added up, which the sharing rules make consistent.
type Service struct {
	// Local: externalTrafficPolicy Local.
	Local bool
	// ReadyEndpoints counts ready endpoints on all nodes, including those
	// on nodes that run no speaker.
	ReadyEndpoints int
}

// Check tells whether a node may announce the IP at all, ignoring the
// choice of one owner among eligible nodes.
func Check(svc Service, n Node) Reason {
	switch {
	case !n.Alive:
		return NotAlive
	case n.Excluded:
		return Excluded
	case !n.Advertised && n.MissingInterface:
		return NoInterface
	case !n.Advertised:
		return NoAdvertisement
	case svc.ReadyEndpoints == 0:
		return NoEndpoints
	case svc.Local && n.ReadyEndpoints == 0:
		return NoLocalEndpoint
	}
	return Announcing
}

// Eligible returns the names of the nodes that may announce the IP, in the
// order that every speaker computes for it: first is the layer-2 owner,
// second takes over if the first goes, and so on.
func Eligible(ip netip.Addr, svc Service, nodes []Node) []string {
	var out []string
	for _, n := range nodes {
		if Check(svc, n) == Announcing {
			out = append(out, n.Name)
		}
	}
	Rank(ip, out)
	return out
}

// L2 decides whether node self answers ARP/NDP for the IP: it must be
// eligible and rank first among the eligible nodes.
func L2(ip netip.Addr, svc Service, nodes []Node, self string) Reason {
	i := slices.IndexFunc(nodes, func(n Node) bool { return n.Name == self })
	if i < 0 {
		return UnknownNode
	}
	if r := Check(svc, nodes[i]); r != Announcing {
		return r
	}
	if e := Eligible(ip, svc, nodes); len(e) == 0 || e[0] != self {
		return NotOwner
	}
	return Announcing
}

// Rank sorts node names by rendezvous (highest random weight) order for the
// IP: the weight of a node is the first 8 bytes of sha256(node "#" ip).
// Removing a node moves only the IPs it ranked first for, and each of those
// goes to its own runner-up, so a dead node's IPs spread over the others.
func Rank(ip netip.Addr, names []string) {
	key := ip.Unmap().String()
	w := make(map[string]uint64, len(names))
	for _, n := range names {
		sum := sha256.Sum256([]byte(n + "#" + key))
		w[n] = binary.BigEndian.Uint64(sum[:8])
	}
	slices.SortStableFunc(names, func(a, b string) int {
		switch wa, wb := w[a], w[b]; {
		case wa > wb:
			return -1
		case wa < wb:
			return 1
		}
		// Equal weights need a collision in 64 bits; order by name so the
		// answer is still the same everywhere.
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
		return 0
	})
}
