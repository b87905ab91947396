//go:build linux

package loader

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// keepResolved asks the kernel to keep the next hop towards addr resolved
// (a managed neighbour entry, Linux 5.16+): bpf_fib_lookup reads the
// neighbour table and cannot resolve an address itself, and nodes may
// never otherwise talk over one family (IPv6 between nodes whose member
// list speaks IPv4).
func keepResolved(addr netip.Addr) error {
	routes, err := netlink.RouteGet(net.IP(addr.AsSlice()))
	if err != nil {
		return fmt.Errorf("route to %s: %w", addr, err)
	}
	if len(routes) == 0 {
		return fmt.Errorf("no route to %s", addr)
	}
	r := routes[0]
	hop := net.IP(addr.AsSlice())
	if r.Gw != nil {
		hop = r.Gw
	}
	if r.Type == 2 /* RTN_LOCAL */ {
		return nil
	}
	n := netlink.Neigh{
		LinkIndex: r.LinkIndex,
		IP:        hop,
		State:     netlink.NUD_NONE,
		Flags:     netlink.NTF_EXT_LEARNED,
		FlagsExt:  netlink.NTF_EXT_MANAGED,
	}
	if addr.Is4() {
		n.Family = netlink.FAMILY_V4
	} else {
		n.Family = netlink.FAMILY_V6
	}
	if err := netlink.NeighSet(&n); err != nil {
		return fmt.Errorf("managed neighbour %s: %w", hop, err)
	}
	return nil
}

// forgetManaged removes the managed neighbour entries keepResolved made
// (external-learned and managed: the pair it alone sets here), so an
// uninstall leaves no neighbour entry behind.
func forgetManaged() error {
	var errs []error
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ns, err := netlink.NeighList(0, fam)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for i := range ns {
			n := &ns[i]
			if n.FlagsExt&netlink.NTF_EXT_MANAGED == 0 || n.Flags&netlink.NTF_EXT_LEARNED == 0 {
				continue
			}
			if err := netlink.NeighDel(n); err != nil {
				errs = append(errs, fmt.Errorf("managed neighbour %s: %w", n.IP, err))
			}
		}
	}
	return errors.Join(errs...)
}

// endpointLinks returns the indexes of the veth links the kernel routes
// the endpoints through: the links a packet DNAT-ed to them may be
// redirected to in XDP.
func endpointLinks(addrs []netip.Addr) (map[uint32]bool, error) {
	links := map[uint32]bool{}
	kinds := map[int]string{}
	var errs []error
	for _, a := range addrs {
		routes, err := netlink.RouteGet(net.IP(a.AsSlice()))
		if err != nil || len(routes) == 0 {
			errs = append(errs, fmt.Errorf("route to endpoint %s: %w", a, err))
			continue
		}
		r := routes[0]
		if r.Gw != nil || r.LinkIndex <= 0 {
			continue // behind a router: the kernel forwards it
		}
		kind, ok := kinds[r.LinkIndex]
		if !ok {
			l, err := netlink.LinkByIndex(r.LinkIndex)
			if err != nil {
				errs = append(errs, fmt.Errorf("link %d of endpoint %s: %w", r.LinkIndex, a, err))
				continue
			}
			kind = l.Type()
			kinds[r.LinkIndex] = kind
		}
		// Only a veth takes frames redirected from XDP (ndo_xdp_xmit)
		// and hands them to the pod; a bridge or a tunnel does not.
		if kind == "veth" {
			links[uint32(r.LinkIndex)] = true
		}
	}
	return links, errors.Join(errs...)
}
