package speaker

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/pkg/announce"
	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/bfd"
	"github.com/ironlb/ironlb/pkg/bgp"
	"github.com/ironlb/ironlb/pkg/config"
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
		bpeers ironlbv1alpha1.BGPPeerList
		badvs  ironlbv1alpha1.BGPAdvertisementList
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
	if err := s.client.List(ctx, &bpeers); err != nil {
		return fmt.Errorf("list bgppeers: %w", err)
	}
	if err := s.client.List(ctx, &badvs); err != nil {
		return fmt.Errorf("list bgpadvertisements: %w", err)
	}
	w.nodes, w.services, w.slices, w.pools, w.l2 = nodes.Items, svcs.Items, slcs.Items, pools.Items, l2advs.Items
	w.bgpPeers, w.bgpAdvs = bpeers.Items, badvs.Items
	w.svcFacts = translate(w.services, w.slices)
	w.alive = s.members.Alive()
	w.alive[s.opts.NodeName] = true
	w.dead = s.members.Dead()
	delete(w.dead, s.opts.NodeName)
	s.metrics.members.Set(float64(len(w.alive)))

	// Forwarding first when the plan has ports the data plane lacks: a
	// node must forward an IP before it announces it. Otherwise last:
	// when a node dies, its IPs move before the rings are rewritten.
	var dpErr error
	var dpLater func() error
	if s.dp != nil {
		apply, fresh, err := s.planDataplane(w)
		switch {
		case err != nil:
			dpErr = err
		case fresh:
			dpErr = apply()
		default:
			dpLater = apply
		}
	}
	// What this node has of the interfaces advertisements name, told to
	// the others before deciding: all elect among nodes that can answer.
	local := localInterfaces(namedInterfaces(w.l2))
	s.members.publishInterfaces(local)
	w.ifaces = s.members.Interfaces()
	w.ifaces[s.opts.NodeName] = local.facts()
	decisions := plan(w, s.opts.NodeName)
	want := map[string][]netip.Addr{}
	var routes []bgp.Route
	var owned []ownedIP
	var problems []problem
	for _, d := range decisions {
		routes = append(routes, d.bgp...)
		if d.bgpOwner == s.opts.NodeName {
			owned = append(owned, ownedIP{ip: d.ip, services: d.services, protocol: ironlbv1alpha1.ProtocolBGP})
		}
		if prev, ok := s.owners[d.ip]; ok && prev != d.owner {
			s.metrics.ownerChanges.Inc()
		}
		s.owners[d.ip] = d.owner
		if d.owner == s.opts.NodeName {
			owned = append(owned, ownedIP{ip: d.ip, services: d.services, protocol: ironlbv1alpha1.ProtocolL2})
		}
		if d.reporter == s.opts.NodeName {
			for _, svc := range d.services {
				problems = append(problems, problem{service: svc, ip: d.ip, reason: "NoInterface",
					message: fmt.Sprintf("%s is not announced: every node an L2Advertisement selects lacks the interfaces it names (%s), or has them down", d.ip, strings.Join(d.missing, ", "))})
			}
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
	}
	// Forget owners of IPs that went away.
	for ip := range s.owners {
		if !slices.ContainsFunc(decisions, func(d decision) bool { return d.ip == ip }) {
			delete(s.owners, ip)
		}
	}
	peers, peerProblems := s.bgpPeers(ctx, w)
	routes = s.drainRoutes(w, routes)
	bgpErr := s.bgp.Apply(ctx, peers, routes)
	bfdWant, bfdStatus := bfdPeers(w, peers)
	s.bfd.Set(bfdWant)
	// A session held closed for its BFD is let go once its peer no longer
	// runs BFD: nothing would bring BFD Up again.
	for name := range s.bgp.Held() {
		if !slices.ContainsFunc(bfdWant, func(p bfd.Peer) bool { return p.Name == name }) {
			if err := s.bgp.Hold(ctx, name, ""); err != nil {
				s.log.Error(err, "open a BGP session held for a BFD the peer no longer runs", "peer", name)
			}
		}
	}
	for _, p := range bfdWant {
		s.metrics.bfdDowns.WithLabelValues(p.Name) // exported from 0
	}
	maps.Copy(bfdStatus, s.bfd.Statuses())
	s.metrics.announced.WithLabelValues("BGP").Set(float64(len(routes)))
	err := s.l2.Set(want)
	if s.members.joined.Swap(false) {
		// A node came (back): if the network was split, clients may hold
		// the MAC of a node that answered while cut off.
		s.l2.Reannounce()
	}
	// Status says what is on the wire, not what was wanted: an IP is
	// recorded as announced only on the interfaces the announcer serves
	// it on, and over BGP only once GoBGP holds the route and a session
	// to one of its peers is up.
	mine, failed := s.announced(decisions, err, bgpErr)
	problems = append(problems, failed...)
	n := 0
	for _, ifs := range s.l2.Serving() {
		if len(ifs) > 0 {
			n++
		}
	}
	s.metrics.announced.WithLabelValues("L2").Set(float64(n))
	unannounced := map[string]int{}
	for _, p := range problems {
		unannounced[p.reason]++
	}
	for _, r := range []string{"NoInterface", "AnnounceFailed"} {
		s.metrics.unannounced.WithLabelValues(r).Set(float64(unannounced[r]))
	}
	if dpLater != nil {
		dpErr = dpLater()
	}
	if dpErr != nil {
		// The Services whose traffic enters here are the ones it hurts.
		for _, m := range mine {
			if len(problems) >= maxDataplaneWarnings {
				break
			}
			problems = append(problems, problem{service: m.service, ip: m.ip, reason: "DataplaneFailed",
				message: fmt.Sprintf("node %s announces %s but its XDP data plane could not be programmed (it forwards with its previous state): %v", s.opts.NodeName, m.ip, dpErr)})
		}
	}
	s.writer.publish(mine, owned, w.alive)
	s.writer.publishProblems(problems)
	s.writer.sessions.publish(sessionsOf(peers, peerProblems, s.bgp.States(), s.bgp.Exported(), bfdStatus, s.bgp.Held(), s.bgp.GracefulRestart(ctx), s.bgp.ExtendedNextHop(), s.bgp.Routers()))
	if dpErr != nil {
		s.metrics.dataplaneErrors.Inc()
	}
	s.writer.publishDataplaneError(dpErr)
	if err != nil {
		return fmt.Errorf("layer 2: %w", err)
	}
	if bgpErr != nil {
		return fmt.Errorf("bgp: %w", bgpErr)
	}
	return dpErr
}

// maxDataplaneWarnings bounds the Services warned about one data plane
// failure per sync (the Node's Event and the metric count it whole).
const maxDataplaneWarnings = 50

// problem is an IP of a Service that should be announced and is not, and
// why: a Warning Event on the Service.
type problem struct {
	service types.NamespacedName
	ip      netip.Addr
	reason  string
	message string
}

// announced returns what this node really announces, from the decisions
// and what the announcers accepted, and the IPs it should announce and
// does not.
func (s *Speaker) announced(decisions []decision, l2Err, bgpErr error) ([]announcement, []problem) {
	serving := s.l2.Serving()
	installed := s.bgp.Advertised()
	states := s.bgp.States()
	var mine []announcement
	var failed []problem
	for _, d := range decisions {
		if len(d.bgp) > 0 {
			var peers []string
			for _, r := range d.bgp {
				if !installed[r.Prefix] {
					continue
				}
				for _, p := range r.Peers {
					if states[p].State == bgp.Established {
						peers = append(peers, p)
					}
				}
			}
			slices.Sort(peers)
			peers = slices.Compact(peers)
			if len(peers) > 0 {
				for _, svc := range d.services {
					mine = append(mine, announcement{service: svc, ip: d.ip, protocol: ironlbv1alpha1.ProtocolBGP, peers: peers})
				}
			} else if bgpErr != nil {
				for _, svc := range d.services {
					failed = append(failed, problem{service: svc, ip: d.ip, reason: "AnnounceFailed",
						message: fmt.Sprintf("node %s cannot advertise %s over BGP: %v", s.opts.NodeName, d.ip, bgpErr)})
				}
			}
		}
		if d.self != announce.Announcing {
			continue
		}
		ifaces := serving[d.ip.Unmap()]
		if len(ifaces) == 0 {
			why := "no interface to answer on"
			if l2Err != nil {
				why = l2Err.Error()
			}
			for _, svc := range d.services {
				failed = append(failed, problem{service: svc, ip: d.ip, reason: "AnnounceFailed",
					message: fmt.Sprintf("node %s owns %s but cannot answer for it: %s", s.opts.NodeName, d.ip, why)})
			}
			continue
		}
		for _, svc := range d.services {
			mine = append(mine, announcement{service: svc, ip: d.ip, protocol: ironlbv1alpha1.ProtocolL2, interfaces: ifaces})
		}
	}
	return mine, failed
}

// namedInterfaces are the interfaces any L2Advertisement names.
func namedInterfaces(advs []ironlbv1alpha1.L2Advertisement) []string {
	var out []string
	for i := range advs {
		out = append(out, advs[i].Spec.Interfaces...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// localInterfaces tells which of the named interfaces this node has up.
func localInterfaces(named []string) nodeMeta {
	var m nodeMeta
	for _, name := range named {
		if ifi, err := net.InterfaceByName(name); err == nil && ifi.Flags&net.FlagUp != 0 {
			m.Has = append(m.Has, name)
		} else {
			m.Lacks = append(m.Lacks, name)
		}
	}
	return m
}

// bgpPeers returns the sessions this node keeps: the BGPPeers that select
// it, with their passwords read from their Secrets. A peer whose Secret
// cannot be read gets no session, and a problem that its status shows.
func (s *Speaker) bgpPeers(ctx context.Context, w world) ([]bgp.Peer, map[string]string) {
	var self *corev1.Node
	for i := range w.nodes {
		if w.nodes[i].Name == s.opts.NodeName {
			self = &w.nodes[i]
		}
	}
	problems := map[string]string{}
	if self == nil {
		return nil, problems
	}
	var out []bgp.Peer
	refs := map[string]bool{}
	defer s.secretRefs.Store(&refs)
	var l links
	var linksErr error
	if needsLinks(w.bgpPeers) {
		l, linksErr = readLinks()
	}
	for i := range w.bgpPeers {
		p := &w.bgpPeers[i]
		if !config.Selects(p.Spec.NodeSelector, self.Labels) {
			continue
		}
		if r := p.Spec.PasswordSecretRef; r != nil {
			refs[r.Namespace+"/"+r.Name] = true
		}
		bp, err := s.bgpPeer(ctx, p, self.Name)
		if err != nil {
			problems[p.Name] = err.Error()
			continue
		}
		if linksErr != nil && (p.Spec.SourceInterface != "" || p.Spec.VRF != "") {
			problems[p.Name] = linksErr.Error()
			continue
		}
		if err := placeSession(&bp, &p.Spec, selfOf(self), l); err != nil {
			problems[p.Name] = err.Error()
			continue
		}
		if key := p.Spec.MyASNFromLabel; key != "" {
			asn, err := asnFromLabel(self, key)
			if err != nil {
				problems[p.Name] = err.Error()
				continue
			}
			bp.MyASN = asn
		}
		out = append(out, bp)
	}
	slices.SortFunc(out, func(a, b bgp.Peer) int { return strings.Compare(a.Name, b.Name) })
	return agreeOnRouterID(out, problems), problems
}

// asnFromLabel reads a node's AS number from its label key.
func asnFromLabel(n *corev1.Node, key string) (uint32, error) {
	v, ok := n.Labels[key]
	if !ok {
		return 0, fmt.Errorf("myASNFromLabel: node %s has no label %s", n.Name, key)
	}
	asn, err := strconv.ParseUint(v, 10, 32)
	if err != nil || asn == 0 {
		return 0, fmt.Errorf("myASNFromLabel: node %s's label %s=%q is not an AS number (1-4294967295)", n.Name, key, v)
	}
	return uint32(asn), nil
}

func (s *Speaker) bgpPeer(ctx context.Context, p *ironlbv1alpha1.BGPPeer, node string) (bgp.Peer, error) {
	out := bgp.Peer{
		Name: p.Name, Port: uint16(p.Spec.PeerPort),
		ASN: uint32(p.Spec.PeerASN), MyASN: uint32(p.Spec.MyASN), EBGPMultiHop: p.Spec.EBGPMultiHop,
		ExtendedNextHop: p.Spec.ExtendedNextHop,
	}
	if p.Spec.DynamicPeerPrefix != "" {
		pfx, err := netip.ParsePrefix(p.Spec.DynamicPeerPrefix)
		if err != nil {
			return bgp.Peer{}, fmt.Errorf("dynamicPeerPrefix: %w", err)
		}
		out.Dynamic = pfx.Masked()
	} else {
		addr, err := netip.ParseAddr(p.Spec.PeerAddress)
		if err != nil {
			return bgp.Peer{}, fmt.Errorf("peerAddress: %w", err)
		}
		out.Address = addr.Unmap()
	}
	if p.Spec.RouterID != "" {
		id, err := netip.ParseAddr(p.Spec.RouterID)
		if err != nil || !id.Is4() {
			return bgp.Peer{}, fmt.Errorf("routerID %q is not an IPv4 address", p.Spec.RouterID)
		}
		out.RouterID = id
	}
	var err error
	if p.Spec.SourceAddress != "" {
		if out.Source, err = netip.ParseAddr(p.Spec.SourceAddress); err != nil {
			return bgp.Peer{}, fmt.Errorf("sourceAddress: %w", err)
		}
	}
	if p.Spec.HoldTime != nil {
		out.HoldTime = p.Spec.HoldTime.Duration
	}
	if p.Spec.KeepaliveTime != nil {
		out.KeepaliveTime = p.Spec.KeepaliveTime.Duration
	}
	for _, f := range p.Spec.AddressFamilies {
		switch f {
		case ironlbv1alpha1.FamilyIPv4:
			out.IPv4 = true
		case ironlbv1alpha1.FamilyIPv6:
			out.IPv6 = true
		}
	}
	if gr := p.Spec.GracefulRestart; gr != nil {
		out.GracefulRestart = 120 * time.Second
		if gr.RestartTime != nil {
			out.GracefulRestart = gr.RestartTime.Duration
		}
	}
	if ref := p.Spec.PasswordSecretRef; ref != nil {
		if p.Spec.PasswordPerNode {
			perNode := *ref
			perNode.Key = node
			ref = &perNode
		}
		pw, err := s.password(ctx, ref)
		if err != nil {
			return bgp.Peer{}, err
		}
		out.Password = pw
	}
	return out, nil
}

// planDataplane computes what the XDP maps must hold, and returns the
// function that writes it and whether the plan has ports the data plane
// does not have yet.
func (s *Speaker) planDataplane(w world) (func() error, bool, error) {
	var self *corev1.Node
	for i := range w.nodes {
		if w.nodes[i].Name == s.opts.NodeName {
			self = &w.nodes[i]
		}
	}
	if self == nil {
		return nil, false, fmt.Errorf("data plane: node %s not found", s.opts.NodeName)
	}
	fp := forwarding(w)
	entries, err := s.planner.Plan(s.opts.NodeName, fp.nodes, fp.ports, s.opts.XDP.RingSize)
	if err != nil {
		return nil, false, fmt.Errorf("data plane: %w", err)
	}
	unserved := 0
	for _, e := range entries {
		unserved += e.Truncated
	}
	if unserved != s.unserved {
		// Said when it changes, not at every sync.
		for _, e := range entries {
			if e.Truncated > 0 {
				s.log.Info("a port has more ready endpoints on this node than the data plane serves; the extra ones get no traffic",
					"service", e.Service, "port", e.Key.String(), "served", dataplane.MaxLocalBackends, "unserved", e.Truncated)
			}
		}
		s.unserved = unserved
	}
	s.metrics.unserved.Set(float64(unserved))
	apply := func() error {
		if err := s.dp.Apply(selfOf(self), fp.nodes, entries); err != nil {
			return fmt.Errorf("data plane: %w", err)
		}
		return nil
	}
	return apply, s.dp.Lacks(entries), nil
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

// password returns the password a BGPPeer refers to: from the cache unless
// the Secret changed since it was read. A Secret that cannot be read now
// (the API server is away) keeps its last password.
func (s *Speaker) password(ctx context.Context, ref *ironlbv1alpha1.SecretKeyRef) (string, error) {
	key := ref.Key
	if key == "" {
		key = "password"
	}
	secret := ref.Namespace + "/" + ref.Name
	if ref.Namespace != s.opts.Namespace {
		return "", fmt.Errorf("password Secret %s: the speaker reads Secrets in its own namespace (%s) only", secret, s.opts.Namespace)
	}
	s.pwMu.Lock()
	pw, known := s.passwords[secret+"/"+key]
	stale := s.stale[secret]
	s.pwMu.Unlock()
	if known && !stale {
		return pw, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var sec corev1.Secret
	err := s.mgr.GetAPIReader().Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, &sec)
	if err == nil {
		v, ok := sec.Data[key]
		if !ok {
			err = fmt.Errorf("password Secret %s has no key %q", secret, key)
		} else {
			s.pwMu.Lock()
			s.passwords[secret+"/"+key] = string(v)
			delete(s.stale, secret)
			s.pwMu.Unlock()
			return string(v), nil
		}
	} else {
		err = fmt.Errorf("password Secret %s: %w", secret, err)
	}
	if known && !apierrors.IsNotFound(err) {
		return pw, nil
	}
	return "", err
}
