package speaker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/bfd"
	"github.com/ironlb/ironlb/pkg/bgp"
)

// BFD defaults, as MetalLB's BFDProfile has them.
const (
	bfdDefaultInterval = 300 * time.Millisecond
	bfdDefaultMult     = 3
	bfdDefaultMinTTL   = 254
)

// bfdPeers returns the BFD sessions for the BGP sessions this node keeps
// whose BGPPeer has bfd set. A session runs from the BGP session's source
// address, or the address the kernel would send to the peer from; a peer
// it cannot find one for gets a status that says so.
func bfdPeers(w world, peers []bgp.Peer) ([]bfd.Peer, map[string]bfd.Status) {
	specs := map[string]*ironlbv1alpha1.BGPPeer{}
	for i := range w.bgpPeers {
		specs[w.bgpPeers[i].Name] = &w.bgpPeers[i]
	}
	var out []bfd.Peer
	failed := map[string]bfd.Status{}
	for _, p := range peers {
		spec := specs[p.Name]
		if spec == nil || spec.Spec.BFD == nil {
			continue
		}
		local := p.Source
		if !local.IsValid() {
			var err error
			if local, err = sourceFor(p.Address); err != nil {
				failed[p.Name] = bfd.Status{State: bfd.Down, Err: fmt.Sprintf("no local address towards %s: %v", p.Address, err)}
				continue
			}
		}
		b := spec.Spec.BFD
		bp := bfd.Peer{
			Name: p.Name, Addr: p.Address, Local: local, Multihop: p.EBGPMultiHop,
			DesiredMinTx: bfdDefaultInterval, RequiredMinRx: bfdDefaultInterval, DetectMult: bfdDefaultMult,
		}
		if b.TransmitInterval != nil {
			bp.DesiredMinTx = b.TransmitInterval.Duration
		}
		if b.ReceiveInterval != nil {
			bp.RequiredMinRx = b.ReceiveInterval.Duration
		}
		if b.DetectMultiplier >= 2 && b.DetectMultiplier <= 255 {
			bp.DetectMult = uint8(b.DetectMultiplier)
		}
		if bp.Multihop {
			bp.MinTTL = bfdDefaultMinTTL
			if b.MinimumTTL != nil {
				bp.MinTTL = int(*b.MinimumTTL)
			}
		}
		out = append(out, bp)
	}
	return out, failed
}

// sourceFor returns the address the kernel sends to dst from. Connecting
// a UDP socket sends nothing.
func sourceFor(dst netip.Addr) (netip.Addr, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, bfd.PortSingleHop)))
	if err != nil {
		return netip.Addr{}, err
	}
	defer func() { _ = c.Close() }()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// bfdChanged ties a BGP session to its BFD session: when BFD goes Down
// after being Up (a failed path, not the peer's AdminDown), the BGP
// session is closed at once and held closed until BFD is Up again.
func (s *Speaker) bfdChanged(name string, st bfd.Status) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var err error
	switch {
	case st.State == bfd.Up:
		err = s.bgp.Hold(ctx, name, "")
	case st.State == bfd.Down && st.Diag != bfd.DiagNone && !st.RemoteAdminDown:
		s.metrics.bfdDowns.WithLabelValues(name).Inc()
		err = s.bgp.Hold(ctx, name, "BFD session down: "+st.Diag.String())
	}
	if err != nil {
		s.log.Error(err, "BGP session after a BFD change", "peer", name, "bfd", st.String())
	}
	s.poke()
}

// leaveBGP hands the node's routes over on the way out. An uninstall
// withdraws them for good: first with the GRACEFUL_SHUTDOWN community, so
// that routers move traffic away, then for real. A restart (an upgrade,
// a deleted pod) leaves the sessions with graceful restart to it: the
// routers keep the routes while the next speaker starts, and the data
// plane forwards meanwhile. Sessions without it are closed with a Cease,
// which withdraws at once.
func (s *Speaker) leaveBGP(ctx context.Context) {
	if s.opts.Uninstalling != nil && s.opts.Uninstalling() {
		s.log.Info("uninstalling: withdrawing the BGP routes, GRACEFUL_SHUTDOWN first", "wait", s.opts.BGPGracefulShutdown)
		if err := s.bgp.GracefulShutdown(ctx, s.opts.BGPGracefulShutdown); err != nil {
			s.log.Error(err, "withdraw BGP routes")
		}
		return
	}
	stopCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	kept, err := s.bgp.Leave(stopCtx)
	if err != nil {
		s.log.Error(err, "close BGP sessions")
	}
	if len(kept) > 0 {
		s.log.Info("left the routes to graceful restart: the routers keep them until the next speaker refreshes them", "peers", kept)
	}
}

// drainRoutes withdraws gently from a node being drained, that is newly
// labelled node.kubernetes.io/exclude-from-external-load-balancers: for
// BGPGracefulShutdown it keeps advertising the routes it had, with the
// GRACEFUL_SHUTDOWN community (RFC 8326), so that routers move the
// traffic to other nodes while this one still forwards; then it
// withdraws them. Otherwise it returns routes as they are.
func (s *Speaker) drainRoutes(w world, routes []bgp.Route) []bgp.Route {
	excluded := false
	for i := range w.nodes {
		if w.nodes[i].Name == s.opts.NodeName {
			_, excluded = w.nodes[i].Labels[ironlbv1alpha1.ExcludeLabel]
		}
	}
	if !excluded {
		s.drainUntil, s.draining = time.Time{}, nil
		s.lastRoutes = routes
		return routes
	}
	now := time.Now()
	if s.drainUntil.IsZero() {
		s.drainUntil = now.Add(s.opts.BGPGracefulShutdown)
		s.draining = nil
		for _, r := range s.lastRoutes {
			r.Communities = append(slices.Clone(r.Communities), bgp.GracefulShutdownCommunity)
			s.draining = append(s.draining, r)
		}
		s.lastRoutes = nil
		if len(s.draining) > 0 && s.opts.BGPGracefulShutdown > 0 {
			s.log.Info("node excluded from external load balancing: advertising its routes with GRACEFUL_SHUTDOWN before withdrawing them",
				"routes", len(s.draining), "wait", s.opts.BGPGracefulShutdown)
			time.AfterFunc(s.opts.BGPGracefulShutdown+10*time.Millisecond, s.poke)
		}
	}
	if now.Before(s.drainUntil) {
		return s.draining
	}
	return routes
}

// bfdCollector exports the BFD sessions' state and the packets refused.
type bfdCollector struct{ r *bfd.Runner }

var (
	bfdUpDesc = prometheus.NewDesc("ironlb_bfd_session_up",
		"1 when the BFD session with the peer is Up, else 0.", []string{"peer"}, nil)
	bfdDropDesc = prometheus.NewDesc("ironlb_bfd_packets_dropped_total",
		"BFD packets refused: wrong TTL (ttl), malformed (invalid), or from no peer of this node (unknown-peer).", []string{"reason"}, nil)
)

func (c bfdCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- bfdUpDesc
	ch <- bfdDropDesc
}

func (c bfdCollector) Collect(ch chan<- prometheus.Metric) {
	for peer, st := range c.r.Statuses() {
		up := 0.0
		if st.State == bfd.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(bfdUpDesc, prometheus.GaugeValue, up, peer)
	}
	drops := c.r.Drops()
	for _, reason := range []string{bfd.DropTTL, bfd.DropInvalid, bfd.DropUnknown} {
		ch <- prometheus.MustNewConstMetric(bfdDropDesc, prometheus.CounterValue, float64(drops[reason]), reason)
	}
}
