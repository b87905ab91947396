package speaker

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"

	"github.com/ironlb/ironlb/pkg/config"
	"github.com/ironlb/ironlb/pkg/dataplane"
	"github.com/ironlb/ironlb/pkg/dataplane/loader"
	"github.com/ironlb/ironlb/pkg/ipam"
)

// forwardingPlan is the world in the data plane's terms.
type forwardingPlan struct {
	nodes []dataplane.Node
	ports []dataplane.Port
}

// forwarding translates the world into the data plane's terms: every
// VIP:port of a LoadBalancer Service whose IP is in a pool, with its
// endpoints, source ranges and affinity, and every node's InternalIPs,
// with the nodes that are dead (memberlist) or not Ready marked so.
func forwarding(w world) forwardingPlan {
	var ranges []ipam.Range
	for _, p := range w.pools {
		for _, a := range p.Spec.Addresses {
			if r, err := ipam.ParseRange(string(a)); err == nil {
				ranges = append(ranges, r)
			}
		}
	}
	inPool := func(ip netip.Addr) bool {
		for _, r := range ranges {
			if r.Contains(ip) {
				return true
			}
		}
		return false
	}
	out := forwardingPlan{nodes: make([]dataplane.Node, 0, len(w.nodes))}
	for i := range w.nodes {
		n := &w.nodes[i]
		addrs := internalIPs(n)
		out.nodes = append(out.nodes, dataplane.Node{Name: n.Name, Addrs: addrs, Dead: w.dead[n.Name] || !nodeReady(n)})
	}
	for _, f := range w.facts() {
		for _, vip := range f.ips {
			if !inPool(vip) {
				continue
			}
			for _, sp := range f.ports {
				p := dataplane.Port{
					Service: f.key.String(),
					VIP:     vip, Port: sp.port, Proto: sp.proto,
					Affinity:     f.affinity,
					Local:        f.local,
					SourceRanges: config.RangesOfFamily(f.ranges, vip.Is4()),

					NewFlowsPerSource: f.newFlowsPerSource,
				}
				if p.Affinity {
					p.AffinityTimeout = f.affinityTimeout
				}
				for _, e := range f.endpoints[family(vip)] {
					if target := e.targets[sp.ref]; target != 0 {
						p.Endpoints = append(p.Endpoints, dataplane.Endpoint{Addr: e.addr, Port: target, Node: e.node, Ready: e.ready, Serving: e.serving})
					}
				}
				out.ports = append(out.ports, p)
			}
		}
	}
	return out
}

func internalIPs(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip)
		}
	}
	return out
}

// selfOf returns a node's first InternalIP of each family.
func selfOf(n *corev1.Node) dataplane.Self {
	var s dataplane.Self
	for _, ip := range internalIPs(n) {
		if ip.Is4() && !s.V4.IsValid() {
			s.V4 = ip
		}
		if ip.Is6() && !s.V6.IsValid() {
			s.V6 = ip
		}
	}
	return s
}

// linkOf names the interface that holds addr.
func linkOf(addr netip.Addr) (string, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return "", err
			}
			return l.Attrs().Name, nil
		}
	}
	return "", fmt.Errorf("no interface holds %s", addr)
}

// openDataplane loads the XDP data plane on the interfaces given, or on
// the one that holds the node's InternalIP.
func (s *Speaker) openDataplane(_ context.Context, self *corev1.Node) (*loader.Dataplane, error) {
	opts := s.opts.XDP
	if len(opts.Interfaces) == 0 {
		me := selfOf(self)
		addr := me.V4
		if !addr.IsValid() {
			addr = me.V6
		}
		name, err := linkOf(addr)
		if err != nil {
			return nil, fmt.Errorf("choose the XDP interface (set --xdp-interfaces): %w", err)
		}
		opts.Interfaces = []string{name}
	}
	if opts.MTU == 0 {
		if i, err := net.InterfaceByName(opts.Interfaces[0]); err == nil {
			opts.MTU = uint32(i.MTU)
		}
	}
	return loader.Open(s.log.WithName("dataplane"), opts)
}
