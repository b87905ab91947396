//go:build linux

// Package layer2 makes a node answer ARP (IPv4) and NDP (IPv6) for the IPs
// it owns, on the interfaces it is told to, and tells the network at once
// when it becomes the owner (gratuitous ARP, unsolicited Neighbor
// Advertisement). It knows nothing about Kubernetes: the speaker decides
// what to announce where and calls Set.
package layer2

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
)

// Options tune the gratuitous announcements.
type Options struct {
	// Gratuitous lists the delays, from becoming owner, at which an IP is
	// announced unasked. The first one should be 0; later ones cover a
	// lost frame or a switch that was slow to learn.
	Gratuitous []time.Duration
	// Refresh re-announces every owned IP this often so that switch and
	// neighbour tables do not age out; 0 disables it.
	Refresh time.Duration
}

// DefaultOptions announce at once and three more times within two seconds,
// and refresh every minute.
func DefaultOptions() Options {
	return Options{
		Gratuitous: []time.Duration{0, 100 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second},
		Refresh:    time.Minute,
	}
}

// Announcer answers for a set of IPs per interface.
type Announcer struct {
	log     logr.Logger
	opts    Options
	metrics *Metrics

	mu     sync.Mutex
	ifaces map[string]*iface
	// ctx bounds the gratuitous bursts and read loops; set by Run.
	ctx context.Context
	// servers counts the running receive loops (one per open socket).
	servers sync.WaitGroup
}

// iface is one interface the Announcer answers on.
type iface struct {
	name string
	ifi  *net.Interface
	// ips is the current set, read by the receive loops without the lock.
	ips atomic.Pointer[map[netip.Addr]bool]

	arp    *arpConn
	ndp    *ndp.Conn
	groups map[netip.Addr]bool // solicited-node groups joined
	// defended is when each IP was last defended against another
	// node's claim; guarded by Announcer.mu.
	defended map[netip.Addr]time.Time
}

// defendEvery bounds how often an IP is re-announced against claims of
// other nodes, so two nodes that both believe they own an IP for a moment
// do not flood the segment.
const defendEvery = time.Second

// New returns an Announcer; call Run before Set.
func New(log logr.Logger, opts Options, m *Metrics) *Announcer {
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Announcer{log: log, opts: opts, metrics: m, ifaces: map[string]*iface{}, ctx: context.Background()}
}

// Run refreshes the announcements until ctx ends, then closes every socket.
// Announcements stop at once when it returns: on SIGTERM that is the
// hand-over.
func (a *Announcer) Run(ctx context.Context) {
	a.mu.Lock()
	a.ctx = ctx
	a.mu.Unlock()
	var tick <-chan time.Time
	if a.opts.Refresh > 0 {
		t := time.NewTicker(a.opts.Refresh)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			a.mu.Lock()
			for name, ifc := range a.ifaces {
				ifc.close()
				delete(a.ifaces, name)
			}
			a.mu.Unlock()
			return
		case <-tick:
			a.mu.Lock()
			for _, ifc := range a.ifaces {
				for ip := range *ifc.ips.Load() {
					a.gratuitous(ifc, ip)
				}
			}
			a.mu.Unlock()
		}
	}
}

// Set makes the announcer answer for exactly these IPs on these interfaces
// (interface name -> IPs). IPs new on an interface are announced
// gratuitously at once. It returns the errors of interfaces it could not
// serve; those are retried by the next Set with the same IPs. Serving
// tells what it answers for once Set returns.
func (a *Announcer) Set(want map[string][]netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for name, ifc := range a.ifaces {
		if len(want[name]) == 0 {
			ifc.close()
			delete(a.ifaces, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		ips := want[name]
		if len(ips) == 0 {
			continue
		}
		ifc := a.ifaces[name]
		if ifc == nil {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				errs = append(errs, fmt.Errorf("interface %s: %w", name, err))
				continue
			}
			ifc = &iface{name: name, ifi: ifi, groups: map[netip.Addr]bool{}, defended: map[netip.Addr]time.Time{}}
			empty := map[netip.Addr]bool{}
			ifc.ips.Store(&empty)
			a.ifaces[name] = ifc
		}
		if err := a.update(ifc, ips); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Serving returns, for each IP, the interfaces the announcer answers on
// now: only these are announced, whatever Set was asked.
func (a *Announcer) Serving() map[netip.Addr][]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[netip.Addr][]string{}
	for _, name := range slices.Sorted(maps.Keys(a.ifaces)) {
		for ip := range *a.ifaces[name].ips.Load() {
			out[ip] = append(out[ip], name)
		}
	}
	return out
}

// update opens what the interface needs, swaps its IP set and announces
// the IPs that are new on it.
func (a *Announcer) update(ifc *iface, ips []netip.Addr) error {
	var errs []error
	next := make(map[netip.Addr]bool, len(ips))
	for _, ip := range ips {
		ip = ip.Unmap()
		if ip.Is4() {
			if ifc.arp == nil {
				if err := a.openARP(ifc); err != nil {
					errs = append(errs, err)
					continue
				}
			}
		} else {
			if ifc.ndp == nil {
				if err := a.openNDP(ifc); err != nil {
					errs = append(errs, err)
					continue
				}
			}
			if !ifc.groups[ip] {
				group, err := ndp.SolicitedNodeMulticast(ip)
				if err == nil {
					err = ifc.ndp.JoinGroup(group)
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("join solicited-node group of %s on %s: %w", ip, ifc.name, err))
					continue
				}
				ifc.groups[ip] = true
			}
		}
		next[ip] = true
	}
	prev := *ifc.ips.Load()
	ifc.ips.Store(&next)
	for ip := range prev {
		if !next[ip] && ifc.groups[ip] {
			if group, err := ndp.SolicitedNodeMulticast(ip); err == nil {
				_ = ifc.ndp.LeaveGroup(group) // the group only costs a filter entry
			}
			delete(ifc.groups, ip)
		}
	}
	for ip := range next {
		if !prev[ip] {
			a.log.Info("announcing", "ip", ip, "interface", ifc.name)
			a.burst(ifc, ip)
		}
	}
	return errors.Join(errs...)
}

// burst sends the gratuitous announcements of a new IP at the configured
// delays, stopping early when the IP is no longer ours or Run ends.
func (a *Announcer) burst(ifc *iface, ip netip.Addr) {
	ctx := a.ctx
	go func() {
		start := time.Now()
		for _, d := range a.opts.Gratuitous {
			if wait := time.Until(start.Add(d)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
			if !(*ifc.ips.Load())[ip] {
				return
			}
			a.mu.Lock()
			if a.ifaces[ifc.name] == ifc {
				a.gratuitous(ifc, ip)
			}
			a.mu.Unlock()
		}
	}()
}

// gratuitous announces ip on ifc unasked. Callers hold a.mu, so the
// sockets are not closed underneath.
func (a *Announcer) gratuitous(ifc *iface, ip netip.Addr) {
	var err error
	if ip.Is4() {
		if ifc.arp == nil {
			return
		}
		var p *arp.Packet
		p, err = arp.NewPacket(arp.OperationRequest, ifc.ifi.HardwareAddr, ip, ethernet.Broadcast, ip)
		if err == nil {
			err = ifc.arp.write(p, ethernet.Broadcast)
		}
		a.metrics.gratuitous.WithLabelValues("arp").Inc()
	} else {
		if ifc.ndp == nil {
			return
		}
		na := &ndp.NeighborAdvertisement{
			Override:      true,
			TargetAddress: ip,
			Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ifc.ifi.HardwareAddr}},
		}
		err = ifc.ndp.WriteTo(na, nil, netip.IPv6LinkLocalAllNodes().WithZone(strconv.Itoa(ifc.ifi.Index)))
		a.metrics.gratuitous.WithLabelValues("ndp").Inc()
	}
	if err != nil {
		a.log.Error(err, "gratuitous announcement", "ip", ip, "interface", ifc.name)
	}
}

// defend answers another node's claim on one of our IPs (a gratuitous ARP
// or unsolicited advertisement it sent when it believed, for a moment,
// that it owned the IP) with a new burst of our own, so clients that
// followed the claim come back.
func (a *Announcer) defend(ifc *iface, ip netip.Addr, proto string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ifaces[ifc.name] != ifc || time.Since(ifc.defended[ip]) < defendEvery {
		return
	}
	ifc.defended[ip] = time.Now()
	a.metrics.conflicts.WithLabelValues(proto).Inc()
	a.log.Info("another node claimed an IP this node owns; re-announcing", "ip", ip, "interface", ifc.name)
	a.burst(ifc, ip)
}

// Reannounce sends a new gratuitous burst for every IP: after a network
// partition heals, the clients may still hold the MAC of a node that
// announced while cut off, and only an unasked announcement corrects them.
func (a *Announcer) Reannounce() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ifc := range a.ifaces {
		for ip := range *ifc.ips.Load() {
			a.burst(ifc, ip)
		}
	}
}

func (a *Announcer) openARP(ifc *iface) error {
	conn, err := packet.Listen(ifc.ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
	if err != nil {
		return fmt.Errorf("open ARP socket on %s: %w", ifc.name, err)
	}
	c := &arpConn{pc: conn, mac: ifc.ifi.HardwareAddr}
	ifc.arp = c
	a.servers.Go(func() { a.serveARP(ifc, c) })
	return nil
}

// arpConn reads and writes ARP over a packet socket. Unlike arp.Client it
// needs no IPv4 address on the interface: a node may announce on a link
// where it has none.
type arpConn struct {
	pc  *packet.Conn
	mac net.HardwareAddr
	// done is set by Close: the read loop ends on its next error.
	done atomic.Bool
}

// read returns the next ARP packet and the Ethernet source it came from.
func (c *arpConn) read(buf []byte) (*arp.Packet, net.HardwareAddr, error) {
	for {
		n, _, err := c.pc.ReadFrom(buf)
		if err != nil {
			return nil, nil, err
		}
		var f ethernet.Frame
		if err := f.UnmarshalBinary(buf[:n]); err != nil || f.EtherType != ethernet.EtherTypeARP {
			continue // malformed or not ARP: never answered
		}
		var p arp.Packet
		if err := p.UnmarshalBinary(f.Payload); err != nil {
			continue
		}
		return &p, f.Source, nil
	}
}

func (c *arpConn) write(p *arp.Packet, dst net.HardwareAddr) error {
	pb, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	fb, err := (&ethernet.Frame{Destination: dst, Source: c.mac, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
	if err != nil {
		return err
	}
	_, err = c.pc.WriteTo(fb, &packet.Addr{HardwareAddr: dst})
	return err
}

func (c *arpConn) Close() error {
	c.done.Store(true)
	return c.pc.Close()
}

// serveARP answers ARP requests for the interface's IPv4 addresses until
// the socket is closed.
func (a *Announcer) serveARP(ifc *iface, c *arpConn) {
	mac := ifc.ifi.HardwareAddr
	buf := make([]byte, 1500)
	for {
		p, from, err := c.read(buf)
		if err != nil {
			if c.done.Load() || closed(err) {
				return
			}
			readError()
			continue
		}
		if slices.Equal(p.SenderHardwareAddr, mac) {
			continue
		}
		if sender := p.SenderIP.Unmap(); (*ifc.ips.Load())[sender] {
			a.defend(ifc, sender, "arp")
			continue
		}
		if p.Operation != arp.OperationRequest {
			continue
		}
		ip := p.TargetIP.Unmap()
		if !(*ifc.ips.Load())[ip] {
			continue
		}
		a.metrics.requests.WithLabelValues("arp").Inc()
		reply, err := arp.NewPacket(arp.OperationReply, mac, ip, p.SenderHardwareAddr, p.SenderIP)
		if err == nil {
			err = c.write(reply, from)
		}
		if err != nil {
			a.log.Error(err, "ARP reply", "ip", ip, "interface", ifc.name)
			continue
		}
		a.metrics.replies.WithLabelValues("arp").Inc()
	}
}

func (a *Announcer) openNDP(ifc *iface) error {
	c, err := listenNDP(ifc.ifi)
	if err != nil {
		return fmt.Errorf("open NDP socket on %s: %w", ifc.name, err)
	}
	ifc.ndp = c
	a.servers.Go(func() { a.serveNDP(ifc, c) })
	return nil
}

// listenNDP binds to a link-local address of the interface that the kernel
// accepts: one still in duplicate address detection cannot be bound, so
// each is tried in turn.
func listenNDP(ifi *net.Interface) (*ndp.Conn, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() != nil || !ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		c, _, err := ndp.Listen(ifi, ndp.Addr(ipn.IP.String()))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, errors.New("no IPv6 link-local address")
	}
	return nil, errors.Join(errs...)
}

// serveNDP answers Neighbor Solicitations for the interface's IPv6
// addresses until the socket is closed.
func (a *Announcer) serveNDP(ifc *iface, c *ndp.Conn) {
	for {
		msg, _, from, err := c.ReadFrom()
		if err != nil {
			if closed(err) {
				return
			}
			readError()
			continue
		}
		if na, ok := msg.(*ndp.NeighborAdvertisement); ok {
			if (*ifc.ips.Load())[na.TargetAddress] && !advertises(na, ifc.ifi.HardwareAddr) {
				a.defend(ifc, na.TargetAddress, "ndp")
			}
			continue
		}
		ns, ok := msg.(*ndp.NeighborSolicitation)
		if !ok {
			continue
		}
		ip := ns.TargetAddress
		if !(*ifc.ips.Load())[ip] {
			continue
		}
		a.metrics.requests.WithLabelValues("ndp").Inc()
		na := &ndp.NeighborAdvertisement{
			Solicited:     true,
			Override:      true,
			TargetAddress: ip,
			Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ifc.ifi.HardwareAddr}},
		}
		dst := from
		if !from.IsValid() || from.IsUnspecified() {
			// Duplicate address detection: the answer goes to all nodes,
			// not solicited (RFC 4861 section 7.2.4).
			na.Solicited = false
			dst = netip.IPv6LinkLocalAllNodes().WithZone(strconv.Itoa(ifc.ifi.Index))
		}
		if err := c.WriteTo(na, nil, dst); err != nil {
			a.log.Error(err, "NDP reply", "ip", ip, "interface", ifc.name)
			continue
		}
		a.metrics.replies.WithLabelValues("ndp").Inc()
	}
}

// advertises tells whether an advertisement names mac as the target's
// link-layer address; one without the option is our own only if it came
// from us, which the caller cannot tell, so it counts as foreign.
func advertises(na *ndp.NeighborAdvertisement, mac net.HardwareAddr) bool {
	for _, o := range na.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
			return slices.Equal(lla.Addr, mac)
		}
	}
	return false
}

// closed tells whether a read failed because the socket is closed. The
// packet socket (mdlayher/socket) says "use of closed file" once, then
// EBADF; the NDP socket (x/net) says net.ErrClosed. A read loop that
// missed one would spin on it forever.
func closed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EBADF)
}

// readError paces a read loop through errors it does not know, so that a
// lasting one costs a little CPU, not a core.
func readError() { time.Sleep(10 * time.Millisecond) }

func (ifc *iface) close() {
	empty := map[netip.Addr]bool{}
	ifc.ips.Store(&empty)
	if ifc.arp != nil {
		_ = ifc.arp.Close() // closing ends serveARP; nothing else to do
		ifc.arp = nil
	}
	if ifc.ndp != nil {
		_ = ifc.ndp.Close()
		ifc.ndp = nil
	}
}
