package speaker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/ironlb/ironlb/pkg/announce"
	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/dataplane"
)

// sync reads the cache, decides, and applies: first the announcements on
// the wire (what clients feel), then the status objects.
func (s *Speaker) sync(ctx context.Context) error {
	var w world
	var (
		nodes  corev1.NodeList
		svcs   corev1.ServiceList
		slcs   discoveryv1.EndpointSliceList
		pools  ironlbv1alpha1.IPPoolList
		l2advs ironlbv1alpha1.L2AdvertisementList
	)
	if err := s.client.List(ctx, &nodes); err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	if err := s.client.List(ctx, &svcs); err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	if err := s.client.List(ctx, &slcs); err != nil {
		return fmt.Errorf("list endpointslices: %w", err)
	}
	if err := s.client.List(ctx, &pools); err != nil {
		return fmt.Errorf("list ippools: %w", err)
	}
	if err := s.client.List(ctx, &l2advs); err != nil {
		return fmt.Errorf("list l2advertisements: %w", err)
	}
	w.nodes, w.services, w.slices, w.pools, w.l2 = nodes.Items, svcs.Items, slcs.Items, pools.Items, l2advs.Items
	w.alive = s.members.Alive()
	w.alive[s.opts.NodeName] = true
	s.metrics.members.Set(float64(len(w.alive)))

	// Forwarding first: a node must forward an IP before it announces it.
	var dpErr error
	if s.dp != nil {
		dpErr = s.applyDataplane(w)
	}
	decisions := plan(w, s.opts.NodeName)
	want := map[string][]netip.Addr{}
	var mine []announcement
	var owned []ownedIP
	for _, d := range decisions {
		if prev, ok := s.owners[d.ip]; ok && prev != d.owner {
			s.metrics.ownerChanges.Inc()
		}
		s.owners[d.ip] = d.owner
		if d.owner == s.opts.NodeName {
			owned = append(owned, ownedIP{ip: d.ip, services: d.services})
		}
		if d.self != announce.Announcing {
			continue
		}
		ifaces := d.interfaces
		if ifaces == nil {
			ifaces = interfacesFor(d.ip)
		}
		for _, i := range ifaces {
			want[i] = append(want[i], d.ip)
		}
		for _, svc := range d.services {
			mine = append(mine, announcement{service: svc, ip: d.ip, interfaces: ifaces})
		}
	}
	// Forget owners of IPs that went away.
	for ip := range s.owners {
		if !slices.ContainsFunc(decisions, func(d decision) bool { return d.ip == ip }) {
			delete(s.owners, ip)
		}
	}
	err := s.l2.Set(want)
	if s.members.joined.Swap(false) {
		// A node came (back): if the network was split, clients may hold
		// the MAC of a node that answered while cut off.
		s.l2.Reannounce()
	}
	n := 0
	for _, ips := range want {
		n += len(ips)
	}
	s.metrics.announced.WithLabelValues("L2").Set(float64(n))
	s.writer.publish(mine, owned, w.alive)
	if err != nil {
		return fmt.Errorf("layer 2: %w", err)
	}
	return dpErr
}

// applyDataplane writes the world into the XDP maps.
func (s *Speaker) applyDataplane(w world) error {
	var self *corev1.Node
	for i := range w.nodes {
		if w.nodes[i].Name == s.opts.NodeName {
			self = &w.nodes[i]
		}
	}
	if self == nil {
		return fmt.Errorf("data plane: node %s not found", s.opts.NodeName)
	}
	nodes, ports := forwarding(w)
	entries, err := dataplane.Plan(s.opts.NodeName, nodes, ports, s.opts.XDP.RingSize)
	if err != nil {
		return fmt.Errorf("data plane: %w", err)
	}
	if err := s.dp.Apply(selfOf(self), entries); err != nil {
		return fmt.Errorf("data plane: %w", err)
	}
	return nil
}

// interfacesFor picks the interfaces to answer on when the advertisement
// names none: the one the node routes the IP's subnet through, else every
// up, non-loopback interface with a hardware address.
func interfacesFor(ip netip.Addr) []string {
	if routes, err := netlink.RouteGet(net.IP(ip.AsSlice())); err == nil {
		for _, r := range routes {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				a := l.Attrs()
				if a.Flags&net.FlagLoopback == 0 && len(a.HardwareAddr) == 6 {
					return []string{a.Name}
				}
			}
		}
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []string
	for _, i := range ifs {
		if i.Flags&net.FlagUp != 0 && i.Flags&net.FlagLoopback == 0 && len(i.HardwareAddr) == 6 {
			out = append(out, i.Name)
		}
	}
	return out
}
