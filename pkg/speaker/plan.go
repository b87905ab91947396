package speaker

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/pkg/announce"
	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/bgp"
	"github.com/ironlb/ironlb/pkg/config"
	"github.com/ironlb/ironlb/pkg/ipam"
)

// world is everything one decision looks at, as read from the cache.
type world struct {
	nodes    []corev1.Node
	services []corev1.Service
	slices   []discoveryv1.EndpointSlice
	pools    []ironlbv1alpha1.IPPool
	l2       []ironlbv1alpha1.L2Advertisement
	bgpAdvs  []ironlbv1alpha1.BGPAdvertisement
	bgpPeers []ironlbv1alpha1.BGPPeer
	alive    map[string]bool
	// dead are the nodes memberlist declared dead since they were last
	// alive (a node never seen is not dead: its speaker may be starting).
	dead map[string]bool
	// svcFacts are services and slices translated once (see facts).
	svcFacts []serviceFacts
	// ifaces is what each node said of the interfaces L2Advertisements
	// name (this node's own facts included); a node or interface not in
	// it counts as present.
	ifaces map[string]ifaceFacts
}

// decision is the layer-2 answer for one IP.
type decision struct {
	ip       netip.Addr
	pool     string
	services []types.NamespacedName
	// owner is the node that answers for the IP; empty when none may.
	owner string
	// self is this node's reason (announce.Announcing when it owns the IP).
	self announce.Reason
	// interfaces come from the advertisements selecting the pool and this
	// node; nil means choose by route.
	interfaces []string
	// bgp are this node's routes for the IP (none when it is not
	// eligible), bgpSelf why it does or does not advertise, and bgpOwner
	// the first eligible node, which cleans up after dead ones.
	bgp      []bgp.Route
	bgpSelf  announce.Reason
	bgpOwner string
	// missing, when no node may answer because every live candidate
	// lacks the interfaces its advertisements name, lists those
	// interfaces; reporter is the node that warns about it (the first
	// live node by the IP's rank), so one Event is sent, not one per node.
	missing  []string
	reporter string
}

// plan decides, for every LoadBalancer IP in a pool, which node answers
// for it, and why this node does or does not.
func plan(w world, self string) []decision {
	ips := ipStates(w)
	out := make([]decision, 0, len(ips))
	for ip, st := range ips {
		d := decision{ip: ip, pool: st.pool.Name, services: st.services}
		planL2(&d, w, st, self)
		planBGP(&d, w, st, self)
		slices.SortFunc(d.services, func(a, b types.NamespacedName) int { return cmp.Compare(a.String(), b.String()) })
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b decision) int { return a.ip.Compare(b.ip) })
	return out
}

// ipState is what the Services sharing one of our IPs ask of it.
type ipState struct {
	pool     *ironlbv1alpha1.IPPool
	services []types.NamespacedName
	svc      announce.Service
	perNode  map[string]int
}

// ipStates gathers, per IP of one of our pools, the Services that hold it
// and their endpoints per node.
func ipStates(w world) map[netip.Addr]*ipState {
	type poolRanges struct {
		pool   *ironlbv1alpha1.IPPool
		ranges []ipam.Range
	}
	pools := make([]poolRanges, 0, len(w.pools))
	for i := range w.pools {
		p := &w.pools[i]
		pr := poolRanges{pool: p}
		for _, a := range p.Spec.Addresses {
			if r, err := ipam.ParseRange(string(a)); err == nil {
				pr.ranges = append(pr.ranges, r)
			}
		}
		pools = append(pools, pr)
	}
	slices.SortFunc(pools, func(a, b poolRanges) int { return cmp.Compare(a.pool.Name, b.pool.Name) })
	poolOf := func(ip netip.Addr) *ironlbv1alpha1.IPPool {
		for _, p := range pools {
			for _, r := range p.ranges {
				if r.Contains(ip) {
					return p.pool
				}
			}
		}
		return nil
	}
	ips := map[netip.Addr]*ipState{}
	for _, f := range w.facts() {
		if f.deleting {
			continue
		}
		for _, ip := range f.ips {
			pool := poolOf(ip)
			if pool == nil {
				continue // not ours to announce
			}
			st := ips[ip]
			if st == nil {
				st = &ipState{pool: pool, perNode: map[string]int{}}
				ips[ip] = st
			}
			st.services = append(st.services, f.key)
			st.svc.Local = st.svc.Local || f.local
			for node, n := range f.takingNewFlows(family(ip)) {
				st.svc.ReadyEndpoints += n
				st.perNode[node] += n
			}
		}
	}
	return ips
}

// candidate is node n as the announcer sees it for st, before any
// advertisement.
func candidate(w world, n *corev1.Node, st *ipState) announce.Node {
	_, excluded := n.Labels[ironlbv1alpha1.ExcludeLabel]
	return announce.Node{
		Name:           n.Name,
		Alive:          w.alive[n.Name] && nodeReady(n),
		Excluded:       excluded,
		ReadyEndpoints: st.perNode[n.Name],
	}
}

// planL2 decides the layer-2 side of d: the owner, whether this node
// answers and on which interfaces, or who reports missing interfaces.
func planL2(d *decision, w world, st *ipState, self string) {
	nodes := make([]announce.Node, 0, len(w.nodes))
	var ifaces, missing, live []string
	autoIfaces := false
	for i := range w.nodes {
		n := &w.nodes[i]
		an := candidate(w, n, st)
		for j := range w.l2 {
			adv := &w.l2[j]
			if !config.SelectsPool(adv.Spec.PoolSelection, st.pool) || !config.Selects(adv.Spec.NodeSelector, n.Labels) {
				continue
			}
			present := adv.Spec.Interfaces
			if len(present) > 0 {
				present = presentInterfaces(present, w.ifaces[n.Name])
				if len(present) == 0 {
					// A node that cannot answer where the
					// advertisement says is no candidate.
					an.MissingInterface = true
					missing = append(missing, adv.Spec.Interfaces...)
					continue
				}
			}
			an.Advertised = true
			if n.Name == self {
				if len(present) == 0 {
					autoIfaces = true
				}
				ifaces = append(ifaces, present...)
			}
		}
		if an.Alive {
			live = append(live, n.Name)
		}
		nodes = append(nodes, an)
	}
	d.self = announce.L2(d.ip, st.svc, nodes, self)
	if e := announce.Eligible(d.ip, st.svc, nodes); len(e) > 0 {
		d.owner = e[0]
	} else if len(live) > 0 && slices.ContainsFunc(nodes, func(n announce.Node) bool {
		// Interfaces are the reason: a node that lacks them would
		// answer if it had them.
		n.Advertised = n.Advertised || n.MissingInterface
		return n.MissingInterface && announce.Check(st.svc, n) == announce.Announcing
	}) {
		slices.Sort(missing)
		d.missing = slices.Compact(missing)
		announce.Rank(d.ip, live)
		d.reporter = live[0]
	}
	if !autoIfaces && len(ifaces) > 0 {
		slices.Sort(ifaces)
		d.interfaces = slices.Compact(ifaces)
	}
}

// planBGP decides the BGP side of d: which node owns the IP's
// Announcement, whether this node advertises it, and its routes.
func planBGP(d *decision, w world, st *ipState, self string) {
	if len(w.bgpAdvs) == 0 {
		return
	}
	nodes := make([]announce.Node, 0, len(w.nodes))
	var selfLabels map[string]string
	for i := range w.nodes {
		n := &w.nodes[i]
		bn := candidate(w, n, st)
		for j := range w.bgpAdvs {
			adv := &w.bgpAdvs[j]
			if config.SelectsPool(adv.Spec.PoolSelection, st.pool) && config.Selects(adv.Spec.NodeSelector, n.Labels) {
				bn.Advertised = true
			}
		}
		if n.Name == self {
			selfLabels = n.Labels
		}
		nodes = append(nodes, bn)
	}
	if e := announce.Eligible(d.ip, st.svc, nodes); len(e) > 0 {
		d.bgpOwner = e[0]
	}
	d.bgpSelf = announce.UnknownNode
	if i := slices.IndexFunc(nodes, func(n announce.Node) bool { return n.Name == self }); i >= 0 {
		d.bgpSelf = announce.Check(st.svc, nodes[i])
	}
	if d.bgpSelf == announce.Announcing {
		d.bgp = bgpRoutes(d.ip, st.pool, selfLabels, w.bgpAdvs, w.bgpPeers)
	}
}

// presentInterfaces returns the named interfaces a node has not said it
// lacks.
func presentInterfaces(named []string, f ifaceFacts) []string {
	var out []string
	for _, i := range named {
		if !f.lacks[i] {
			out = append(out, i)
		}
	}
	return out
}

// nodeReady is the backstop to memberlist: a node whose Ready condition is
// False or Unknown does not announce. A node without the condition counts
// as ready (its kubelet has not reported yet, or there is none).
func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return true
}

// carries tells whether a peer's session carries routes of ip's family:
// its addressFamilies, or, without them, the session's own family.
func carries(p *ironlbv1alpha1.BGPPeer, ip netip.Addr) bool {
	fam := ironlbv1alpha1.FamilyIPv6
	if ip.Is4() {
		fam = ironlbv1alpha1.FamilyIPv4
	}
	if len(p.Spec.AddressFamilies) > 0 {
		return slices.Contains(p.Spec.AddressFamilies, fam)
	}
	if p.Spec.DynamicPeerPrefix != "" {
		pfx, err := netip.ParsePrefix(p.Spec.DynamicPeerPrefix)
		return err == nil && pfx.Addr().Unmap().Is4() == ip.Is4()
	}
	a, err := netip.ParseAddr(p.Spec.PeerAddress)
	return err == nil && a.Unmap().Is4() == ip.Is4()
}

// bgpRoutes returns the routes a node with the given labels advertises for
// ip: one per BGPAdvertisement that selects the pool and the node, to the
// peers it names (all when none) that peer with the node, the prefix cut
// to the advertisement's aggregation length.
func bgpRoutes(ip netip.Addr, pool *ironlbv1alpha1.IPPool, nodeLabels map[string]string,
	advs []ironlbv1alpha1.BGPAdvertisement, peers []ironlbv1alpha1.BGPPeer) []bgp.Route {
	sorted := slices.Clone(advs)
	slices.SortFunc(sorted, func(a, b ironlbv1alpha1.BGPAdvertisement) int { return cmp.Compare(a.Name, b.Name) })
	var out []bgp.Route
	for i := range sorted {
		adv := &sorted[i]
		if !config.SelectsPool(adv.Spec.PoolSelection, pool) || !config.Selects(adv.Spec.NodeSelector, nodeLabels) {
			continue
		}
		bits := ip.BitLen()
		if ip.Is4() && adv.Spec.AggregationLength != nil {
			bits = int(*adv.Spec.AggregationLength)
		}
		if ip.Is6() && adv.Spec.AggregationLengthV6 != nil {
			bits = int(*adv.Spec.AggregationLengthV6)
		}
		pfx, err := ip.Prefix(bits)
		if err != nil || !withinPool(pfx, pool) {
			// A prefix wider than the pool entry holding the IP would
			// announce a neighbour's addresses: never.
			continue
		}
		r := bgp.Route{Prefix: pfx}
		for j := range peers {
			p := &peers[j]
			if len(adv.Spec.Peers) > 0 && !slices.Contains(adv.Spec.Peers, p.Name) {
				continue
			}
			if !config.Selects(p.Spec.NodeSelector, nodeLabels) {
				continue
			}
			if !carries(p, ip) {
				continue
			}
			r.Peers = append(r.Peers, p.Name)
		}
		if len(r.Peers) == 0 {
			continue
		}
		slices.Sort(r.Peers)
		for _, c := range adv.Spec.Communities {
			if rest, ok := strings.CutPrefix(string(c), "large:"); ok {
				r.LargeCommunities = append(r.LargeCommunities, rest)
			} else if v, ok := ironlbv1alpha1.WellKnownCommunities[string(c)]; ok {
				r.Communities = append(r.Communities, v)
			} else {
				r.Communities = append(r.Communities, string(c))
			}
		}
		if adv.Spec.LocalPref != nil && *adv.Spec.LocalPref > 0 {
			r.LocalPref = uint32(*adv.Spec.LocalPref)
		}
		out = append(out, r)
	}
	return out
}

// withinPool reports whether every address of pfx lies in one entry of the
// pool.
func withinPool(pfx netip.Prefix, pool *ironlbv1alpha1.IPPool) bool {
	first := pfx.Masked().Addr()
	last := first
	b := last.AsSlice()
	for i := pfx.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ = netip.AddrFromSlice(b)
	for _, a := range pool.Spec.Addresses {
		if r, err := ipam.ParseRange(string(a)); err == nil && r.Contains(first) && r.Contains(last) {
			return true
		}
	}
	return false
}
