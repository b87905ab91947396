package dataplane

import (
	"net/netip"
	"slices"
)

// Dump is what one node's data plane holds, for ironlbctl dataplane dump:
// its ports with their ring shares and local endpoints, and the fill of
// its conntrack tables.
type Dump struct {
	Self      Self           `json:"self"`
	RingSize  uint32         `json:"ringSize"`
	Ports     []DumpPort     `json:"ports"`
	Conntrack map[string]int `json:"conntrack"`
	Capacity  map[string]int `json:"capacity"`
	// EndpointLinks counts the links XDP may redirect to (0 without
	// --xdp-endpoint-redirect).
	EndpointLinks int `json:"endpointLinks"`
}

// DumpPort is one VIP:port/protocol.
type DumpPort struct {
	VIP      netip.Addr `json:"vip"`
	Port     uint16     `json:"port"`
	Protocol string     `json:"protocol"`
	ID       uint32     `json:"id"`
	Affinity bool       `json:"affinity,omitempty"`
	Local    bool       `json:"local,omitempty"`
	// Ring counts the slots each node holds.
	Ring map[string]int `json:"ring,omitempty"`
	// Endpoints are this node's ready endpoints (address:port).
	Endpoints []string `json:"endpoints,omitempty"`
}

// DumpPorts describes the ports a data plane holds, given the IDs it gave
// their keys, for its Dump.
func DumpPorts(entries []Entry, ids map[Key]uint32) []DumpPort {
	out := make([]DumpPort, 0, len(entries))
	for _, e := range entries {
		p := DumpPort{VIP: e.Key.VIP, Port: e.Key.Port, Protocol: ProtocolName(e.Key.Proto), ID: ids[e.Key], Affinity: e.Affinity, Local: e.Local}
		if len(e.Ring) > 0 {
			p.Ring = map[string]int{}
			for _, i := range e.Ring {
				p.Ring[e.RingNodes[i].String()]++
			}
		}
		for _, b := range e.Backends {
			p.Endpoints = append(p.Endpoints, netip.AddrPortFrom(b.Addr, b.Port).String())
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b DumpPort) int {
		if c := a.VIP.Compare(b.VIP); c != 0 {
			return c
		}
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		return int(a.ID) - int(b.ID)
	})
	return out
}

// ProtocolName names an IP protocol number as the dump and the metrics do.
func ProtocolName(p uint8) string {
	if p == UDP {
		return "UDP"
	}
	return "TCP"
}
