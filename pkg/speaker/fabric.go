package speaker

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/bgp"
	"github.com/ironlb/ironlb/pkg/dataplane"
)

// links is what a node's BGP sessions need to know of its interfaces: the
// global addresses of each, and which are VRF devices and their members.
type links struct {
	exists map[string]bool
	addrs  map[string][]netip.Addr
	vrf    map[string]bool
	// master names each interface's VRF, if any.
	master map[string]string
}

// needsLinks tells whether any peer reads the node's interfaces.
func needsLinks(peers []ironlbv1alpha1.BGPPeer) bool {
	for i := range peers {
		if peers[i].Spec.SourceInterface != "" || peers[i].Spec.VRF != "" {
			return true
		}
	}
	return false
}

// readLinks reads the node's interfaces and their global addresses.
func readLinks() (links, error) {
	l := links{exists: map[string]bool{}, addrs: map[string][]netip.Addr{}, vrf: map[string]bool{}, master: map[string]string{}}
	all, err := netlink.LinkList()
	if err != nil {
		return l, fmt.Errorf("list interfaces: %w", err)
	}
	byIndex := map[int]string{}
	for _, link := range all {
		a := link.Attrs()
		byIndex[a.Index] = a.Name
		l.exists[a.Name] = true
		if link.Type() == "vrf" {
			l.vrf[a.Name] = true
		}
	}
	for _, link := range all {
		a := link.Attrs()
		if a.MasterIndex != 0 {
			l.master[a.Name] = byIndex[a.MasterIndex]
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return l, fmt.Errorf("addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			if ip, ok := netip.AddrFromSlice(ad.IP); ok && ip.Unmap().IsGlobalUnicast() {
				l.addrs[a.Name] = append(l.addrs[a.Name], ip.Unmap())
			}
		}
	}
	return l, nil
}

// first returns the first address of the family (v4) on the interfaces.
func (l links) first(v4 bool, ifaces ...string) netip.Addr {
	for _, name := range ifaces {
		for _, a := range l.addrs[name] {
			if a.Is4() == v4 {
				return a
			}
		}
	}
	return netip.Addr{}
}

// members are the interfaces in VRF vrf, sorted.
func (l links) members(vrf string) []string {
	var out []string
	for name, m := range l.master {
		if m == vrf {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// placeSession fills in where a node's session runs from: its source
// address (sourceInterface), its listen address (dynamicPeerPrefix), the
// VRF and the next hops of the routes of the other family (the node's
// InternalIPs, or in a VRF its addresses there). An error says why the
// node keeps no session with the peer.
func placeSession(bp *bgp.Peer, spec *ironlbv1alpha1.BGPPeerSpec, self dataplane.Self, l links) error {
	v4 := bp.Address.Is4()
	if bp.Dynamic.IsValid() {
		v4 = bp.Dynamic.Addr().Is4()
	}
	bp.NextHop4, bp.NextHop6 = self.V4, self.V6
	if spec.VRF != "" {
		if !l.vrf[spec.VRF] {
			return fmt.Errorf("vrf: this node has no VRF device %s", spec.VRF)
		}
		members := l.members(spec.VRF)
		bp.VRF = spec.VRF
		bp.NextHop4, bp.NextHop6 = l.first(true, members...), l.first(false, members...)
	}
	if name := spec.SourceInterface; name != "" {
		if !l.exists[name] {
			return fmt.Errorf("sourceInterface: this node has no interface %s", name)
		}
		bp.Source = l.first(v4, name)
		if !bp.Source.IsValid() {
			return fmt.Errorf("sourceInterface: %s has no global %s address on this node", name, familyName(v4))
		}
	}
	if bp.Dynamic.IsValid() {
		bp.Listen = bp.Source
		if !bp.Listen.IsValid() {
			if v4 {
				bp.Listen = self.V4
			} else {
				bp.Listen = self.V6
			}
		}
		if bp.Listen.IsValid() && bp.Listen.Is4() != v4 {
			return fmt.Errorf("dynamicPeerPrefix: the source address %s is not of the prefix's family (%s)", bp.Listen, familyName(v4))
		}
		if !bp.Listen.IsValid() {
			return fmt.Errorf("dynamicPeerPrefix: this node has no %s InternalIP to listen on (set sourceAddress or sourceInterface)", familyName(v4))
		}
		// A dynamic session's source is where it listens; GoBGP checks
		// that accepted connections arrive there.
		bp.Source = bp.Listen
	}
	return nil
}

func familyName(v4 bool) string {
	if v4 {
		return "IPv4"
	}
	return "IPv6"
}

// agreeOnRouterID keeps, of the peers that set a router ID, those that
// agree with the first by name: a node runs one BGP router. The others
// are dropped, with a problem that names the conflict.
func agreeOnRouterID(peers []bgp.Peer, problems map[string]string) []bgp.Peer {
	var id netip.Addr
	var by string
	var out []bgp.Peer
	for _, p := range peers {
		if p.RouterID.IsValid() {
			if !id.IsValid() {
				id, by = p.RouterID, p.Name
			} else if p.RouterID != id {
				problems[p.Name] = fmt.Sprintf("routerID %s conflicts with BGPPeer %s's %s on this node, which runs one BGP router: make them agree", p.RouterID, by, id)
				continue
			}
		}
		out = append(out, p)
	}
	// Every session of the node runs with it.
	for i := range out {
		out[i].RouterID = id
	}
	return out
}

// routersOf spells a dynamic peer's routers for the status.
func routersOf(rs []string) string { return strings.Join(rs, ",") }
