// Package bgp runs the speaker's embedded BGP router (GoBGP v3, in
// process): a session to every peer selected for the node, and the VIP
// routes each peer should see, with their communities and local
// preference. Routes carry this node as next hop; the peers spread flows
// over the nodes that advertise a VIP (ECMP).
//
// All routes live in GoBGP's global table without attributes. What each
// peer sees, and with which attributes, is one export policy rebuilt from
// the desired routes: a statement per (peer, attribute set) that matches
// the peer (neighbor set) and the prefixes (prefix set), adds the
// communities and local preference, and accepts; everything else is
// rejected. GoBGP sends LOCAL_PREF to iBGP peers only.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/anypb"
)

// Peer is one session this node keeps.
type Peer struct {
	// Name is the BGPPeer's name.
	Name    string
	Address netip.Addr
	// Port is the peer's TCP port; 0 means 179.
	Port uint16
	// ASN is the peer's, MyASN this node's.
	ASN, MyASN uint32
	// Source is the local address to connect from; invalid means the
	// kernel's choice.
	Source netip.Addr
	// HoldTime and KeepaliveTime; zero means 90 s and a third of the hold
	// time.
	HoldTime, KeepaliveTime time.Duration
	// Password is the TCP MD5 (RFC 2385) key; empty means none.
	Password string
	// EBGPMultiHop lets an eBGP peer be more than one hop away.
	EBGPMultiHop bool
	// GracefulRestart is the restart time offered to the peer (RFC
	// 4724); zero means no graceful restart.
	GracefulRestart time.Duration
	// IPv4 and IPv6 are the route families the session carries (MP-BGP);
	// neither means the session's own family.
	IPv4, IPv6 bool
	// NextHop4 and NextHop6 are this node's addresses: the next hop of
	// the routes whose family is not the session's.
	NextHop4, NextHop6 netip.Addr
	// Dynamic, when valid, makes the peer dynamic (Address is then
	// unset): the node does not connect; routers from this prefix connect
	// to it, on Listen, TCP 179.
	Dynamic netip.Prefix
	Listen  netip.Addr
	// RouterID is the BGP identifier the node runs with; invalid means
	// the Server's default. Every peer must say the same (one router).
	RouterID netip.Addr
	// VRF binds the session's socket to this Linux VRF device.
	VRF string
	// ExtendedNextHop sends the IPv4 routes of an IPv6 session with the
	// session's IPv6 address as next hop (RFC 8950) once the router has
	// offered the capability; until then with NextHop4.
	ExtendedNextHop bool
}

// is4 tells the session's own family.
func (p Peer) is4() bool {
	if p.Dynamic.IsValid() {
		return p.Dynamic.Addr().Is4()
	}
	return p.Address.Is4()
}

// neighbor is what GoBGP's neighbor set matches the peer's sessions by.
func (p Peer) neighbor() string {
	if p.Dynamic.IsValid() {
		return p.Dynamic.String()
	}
	return netip.PrefixFrom(p.Address, p.Address.BitLen()).String()
}

// carries tells whether the session carries routes of pfx's family.
func (p Peer) carries(pfx netip.Prefix) bool {
	if !p.IPv4 && !p.IPv6 {
		return pfx.Addr().Is4() == p.is4()
	}
	return (pfx.Addr().Is4() && p.IPv4) || (pfx.Addr().Is6() && p.IPv6)
}

// nextHop is the explicit next hop of pfx's routes to the peer: none
// (the session's own address) for its own family, and for IPv4 routes on
// an IPv6 session whose router takes an IPv6 next hop (enh, RFC 8950);
// this node's address of pfx's family for the other one (invalid when
// the node has none).
func (p Peer) nextHop(pfx netip.Prefix, enh bool) (netip.Addr, bool) {
	if pfx.Addr().Is4() == p.is4() {
		return netip.Addr{}, true
	}
	if pfx.Addr().Is4() {
		if p.ExtendedNextHop && enh {
			return netip.Addr{}, true
		}
		return p.NextHop4, p.NextHop4.IsValid()
	}
	return p.NextHop6, p.NextHop6.IsValid()
}

// Route is a prefix advertised to some peers.
type Route struct {
	Prefix netip.Prefix
	// Peers are names of Peers.
	Peers []string
	// Communities: "ASN:VALUE" or a well-known name (no-export, ...).
	Communities []string
	// LargeCommunities: "GLOBAL:LOCAL1:LOCAL2".
	LargeCommunities []string
	// LocalPref is sent to iBGP peers; 0 means none.
	LocalPref uint32
}

// SessionState is a BGP session's state (RFC 4271, 8.2.2); its String is
// how the BGPPeer status spells it.
type SessionState uint8

// The session states. A dynamic peer is Active while it listens with no
// router connected.
const (
	Idle SessionState = iota
	Connect
	Active
	OpenSent
	OpenConfirm
	// Established is the state of a session that exchanges routes.
	Established
)

var stateNames = [...]string{"Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established"}

func (s SessionState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "Idle"
}

// sessionState is GoBGP's state as ours (unknown is Idle).
func sessionState(st api.PeerState_SessionState) SessionState {
	switch st {
	case api.PeerState_CONNECT:
		return Connect
	case api.PeerState_ACTIVE:
		return Active
	case api.PeerState_OPENSENT:
		return OpenSent
	case api.PeerState_OPENCONFIRM:
		return OpenConfirm
	case api.PeerState_ESTABLISHED:
		return Established
	}
	return Idle
}

// State is a session's state, with when it got there.
type State struct {
	State SessionState
	Since time.Time
}

// Server is the embedded router.
type Server struct {
	log      logr.Logger
	routerID netip.Addr
	onChange func()

	mu      sync.Mutex
	s       *server.BgpServer
	started bool
	asn     uint32
	peers   map[string]Peer            // by name
	paths   map[netip.Prefix][]byte    // prefix -> uuid of its path
	policy  string                     // fingerprint of the export policy in force
	states  map[string]State           // by peer name
	byAddr  map[string]string          // peer address -> name
	counts  map[string]int             // peer name -> routes exported to it
	held    map[string]string          // peer name -> why its session is held closed
	gr      map[string]string          // peer name -> graceful restart on its session
	enh     map[string]bool            // peer name -> the router takes IPv6 next hops for IPv4 (RFC 8950)
	routers map[string]map[string]bool // dynamic peer name -> router address -> Established
	global  global                     // what GoBGP was started with
	// The last Apply's peers and routes, for GracefulShutdown.
	lastPeers  []Peer
	lastRoutes []Route
	stopped    chan struct{}
}

// New returns a router whose router ID is routerID (an IPv4 address)
// unless a peer says otherwise; it starts with the first peer. onChange is
// called when a session changes state.
func New(log logr.Logger, routerID netip.Addr, onChange func()) *Server {
	return &Server{
		log: log, routerID: routerID, onChange: onChange,
		peers: map[string]Peer{}, paths: map[netip.Prefix][]byte{}, states: map[string]State{},
		byAddr: map[string]string{}, counts: map[string]int{}, held: map[string]string{}, gr: map[string]string{},
		enh: map[string]bool{}, routers: map[string]map[string]bool{},
	}
}

// global is what GoBGP takes only when it starts: a change restarts it.
type global struct {
	routerID netip.Addr
	// listen are the addresses to accept sessions on (TCP 179),
	// comma-separated; empty means none.
	listen string
}

// ListenPort is where a node accepts the sessions of its dynamic peers.
const ListenPort = 179

func (b *Server) globalFor(peers []Peer) global {
	g := global{routerID: b.routerID}
	for _, p := range peers {
		if p.RouterID.IsValid() {
			g.routerID = p.RouterID
			break
		}
	}
	var listen []string
	for _, p := range peers {
		if p.Dynamic.IsValid() && p.Listen.IsValid() {
			listen = append(listen, p.Listen.String())
		}
	}
	slices.Sort(listen)
	g.listen = strings.Join(slices.Compact(listen), ",")
	return g
}

// start runs GoBGP with asn as its global AS (each peer still says its
// own MyASN). It listens only for dynamic peers, and then only on their
// addresses; otherwise the speakers connect out, as MetalLB's do.
func (b *Server) start(ctx context.Context, asn uint32, g global) error {
	s := server.NewBgpServer(server.LoggerOption(&gobgpLogger{log: b.log.WithName("gobgp"), onSync: func() { go b.rearm() }}))
	go s.Serve()
	conf := &api.Global{Asn: asn, RouterId: g.routerID.String(), ListenPort: -1}
	if g.listen != "" {
		conf.ListenPort, conf.ListenAddresses = ListenPort, strings.Split(g.listen, ",")
	}
	err := s.StartBgp(ctx, &api.StartBgpRequest{Global: conf})
	if err != nil {
		s.Stop()
		return fmt.Errorf("start BGP: %w", err)
	}
	watchCtx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	b.stopped = stopped
	go func() { <-stopped; cancel() }()
	err = s.WatchEvent(watchCtx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, func(r *api.WatchEventResponse) {
		p := r.GetPeer()
		if p == nil || p.Type != api.WatchEventResponse_PeerEvent_STATE || p.Peer == nil || p.Peer.State == nil {
			return
		}
		b.setState(p.Peer.State.NeighborAddress, p.Peer.State.SessionState)
	})
	if err != nil {
		close(b.stopped)
		s.Stop()
		return fmt.Errorf("watch BGP sessions: %w", err)
	}
	b.s, b.started, b.asn, b.global = s, true, asn, g
	return nil
}

// rearm adds again the peers with graceful restart whose session is not
// up. GoBGP opens each session as a restarting speaker (the Restart State
// bit, and the Forwarding State bit for each family) until the sessions
// that are up have exchanged End-of-RIB; then it ends that state for
// every neighbour ("sync finished"), including those whose session has
// not opened yet. Such a session would open without the Forwarding State
// bit, and the router would drop its stale routes at once, for the few
// milliseconds until this speaker's UPDATE (BIRD did, for a node's second
// session). A peer added again starts in the restarting state.
func (b *Server) rearm() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return
	}
	up := map[string]bool{}
	err := b.s.ListPeer(ctx, &api.ListPeerRequest{}, func(n *api.Peer) {
		if n.State != nil && n.State.SessionState == api.PeerState_ESTABLISHED {
			up[n.State.NeighborAddress] = true
		}
	})
	if err != nil {
		b.log.Error(err, "list BGP sessions after the End-of-RIB exchange")
		return
	}
	for name, p := range b.peers {
		if _, held := b.held[name]; p.GracefulRestart == 0 || p.Dynamic.IsValid() || held || up[p.Address.String()] {
			continue
		}
		if err := b.removePeer(ctx, p); err != nil {
			b.log.Error(err, "open the session again as a restarting speaker", "peer", name)
			continue
		}
		if err := b.addPeer(ctx, p); err != nil {
			// Gone from GoBGP: the next Apply adds it.
			delete(b.peers, name)
			delete(b.byAddr, p.Address.String())
			b.log.Error(err, "open the session again as a restarting speaker", "peer", name)
			continue
		}
		b.log.V(1).Info("session not up yet opens as a restarting speaker's", "peer", name)
	}
}

// restart stops GoBGP for a start with new global settings: every session
// is closed (a Cease, which withdraws at the routers) and every route
// forgotten, for Apply to add again.
func (b *Server) restart(ctx context.Context, want global) error {
	b.log.Info("restarting BGP: the router ID or the addresses it listens on change",
		"routerID", want.routerID, "listen", want.listen, "was", b.global.routerID, "wasListening", b.global.listen)
	errs := b.closeAll(ctx)
	if b.global.listen != "" {
		// Only StopBgp closes GoBGP's listeners.
		if err := b.s.StopBgp(ctx, &api.StopBgpRequest{}); err != nil {
			errs = append(errs, err)
		}
	}
	close(b.stopped)
	b.started = false
	b.peers, b.byAddr, b.states, b.policy = map[string]Peer{}, map[string]string{}, map[string]State{}, ""
	b.paths, b.routers, b.gr, b.enh = map[netip.Prefix][]byte{}, map[string]map[string]bool{}, map[string]string{}, map[string]bool{}
	return errors.Join(errs...)
}

// closeAll closes every session with a Cease notification; it leaves
// the routes in GoBGP's table.
func (b *Server) closeAll(ctx context.Context) []error {
	var errs []error
	for name, p := range b.peers {
		if err := b.removePeer(ctx, p); err != nil {
			errs = append(errs, fmt.Errorf("close session to %s: %w", name, err))
		}
	}
	return errs
}

// addPeer configures one peer in GoBGP: a neighbor, or for a dynamic
// peer a peer group and the prefix its routers may connect from.
func (b *Server) addPeer(ctx context.Context, p Peer) error {
	if !p.Dynamic.IsValid() {
		return b.s.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)})
	}
	if p.Password == "" {
		return errors.New("a dynamic peer needs a password: the node would accept any router of the prefix")
	}
	if err := listenerMD5(); err != nil {
		return err
	}
	if err := b.s.AddPeerGroup(ctx, &api.AddPeerGroupRequest{PeerGroup: apiPeerGroup(p)}); err != nil {
		return err
	}
	err := b.s.AddDynamicNeighbor(ctx, &api.AddDynamicNeighborRequest{DynamicNeighbor: &api.DynamicNeighbor{Prefix: p.Dynamic.String(), PeerGroup: p.Name}})
	if err != nil {
		_ = b.s.DeletePeerGroup(ctx, &api.DeletePeerGroupRequest{Name: p.Name})
	}
	return err
}

// removePeer closes a peer's sessions (with a Cease) and removes it
// from GoBGP: for a dynamic peer, its prefix first, so no router
// connects meanwhile, then each router's session, then the group.
func (b *Server) removePeer(ctx context.Context, p Peer) error {
	if !p.Dynamic.IsValid() {
		return b.s.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.Address.String()})
	}
	var errs []error
	if err := b.s.DeleteDynamicNeighbor(ctx, &api.DeleteDynamicNeighborRequest{Prefix: p.Dynamic.String(), PeerGroup: p.Name}); err != nil {
		errs = append(errs, err)
	}
	var members []string
	_ = b.s.ListPeer(ctx, &api.ListPeerRequest{}, func(n *api.Peer) {
		if n.Conf != nil && n.Conf.PeerGroup == p.Name && n.State != nil {
			members = append(members, n.State.NeighborAddress)
		}
	})
	for _, a := range members {
		if err := b.s.DeletePeer(ctx, &api.DeletePeerRequest{Address: a}); err != nil {
			errs = append(errs, err)
		}
	}
	if err := b.s.DeletePeerGroup(ctx, &api.DeletePeerGroupRequest{Name: p.Name}); err != nil {
		errs = append(errs, err)
	}
	delete(b.routers, p.Name)
	return errors.Join(errs...)
}

// dynamicOf names the dynamic peer whose prefix addr is in. The caller
// holds mu.
func (b *Server) dynamicOf(addr string) (string, bool) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return "", false
	}
	for name, p := range b.peers {
		if p.Dynamic.IsValid() && p.Dynamic.Contains(a.Unmap()) {
			return name, true
		}
	}
	return "", false
}

func (b *Server) setState(addr string, st api.PeerState_SessionState) {
	name := sessionState(st)
	b.mu.Lock()
	peer, ok := b.byAddr[addr]
	if !ok {
		// A router of a dynamic peer: the peer is Established while any
		// of its routers is, else it listens (Active).
		if peer, ok = b.dynamicOf(addr); ok {
			rs := b.routers[peer]
			if rs == nil {
				rs = map[string]bool{}
				b.routers[peer] = rs
			}
			if name == Established {
				rs[addr] = true
			} else {
				delete(rs, addr)
			}
			name = Active
			if len(rs) > 0 {
				name = Established
			}
		}
	}
	changed := false
	if ok && b.states[peer].State != name {
		b.states[peer] = State{State: name, Since: time.Now()}
		changed = true
	}
	b.mu.Unlock()
	if changed {
		b.log.Info("session", "peer", peer, "address", addr, "state", name.String())
		if b.onChange != nil {
			b.onChange()
		}
	}
}

// States returns every peer's session state.
func (b *Server) States() map[string]State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.states)
}

// Routers returns, per dynamic peer, the routers with an Established
// session.
func (b *Server) Routers() map[string][]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string][]string{}
	for name, rs := range b.routers {
		if len(rs) > 0 {
			out[name] = slices.Sorted(maps.Keys(rs))
		}
	}
	return out
}

// Exported returns how many routes each peer is offered.
func (b *Server) Exported() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.counts)
}

// Advertised returns the prefixes GoBGP holds in its table now, ready to
// export: what Apply managed to add.
func (b *Server) Advertised() map[netip.Prefix]bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[netip.Prefix]bool, len(b.paths))
	for p := range b.paths {
		out[p] = true
	}
	return out
}

// Apply makes the sessions and routes the given ones: new peers are
// added, changed ones replaced, gone ones closed; the export policy is
// rebuilt; routes are added and withdrawn.
func (b *Server) Apply(ctx context.Context, peers []Peer, routes []Route) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	g := b.globalFor(peers)
	if b.started && g != b.global {
		if err := b.restart(ctx, g); err != nil {
			errs = append(errs, fmt.Errorf("restart BGP: %w", err))
		}
	}
	if !b.started {
		if len(peers) == 0 {
			return errors.Join(errs...)
		}
		if err := b.start(ctx, peers[0].MyASN, g); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	b.lastPeers, b.lastRoutes = peers, routes
	want := map[string]Peer{}
	for _, p := range peers {
		want[p.Name] = p
	}
	for name, old := range b.peers {
		if p, ok := want[name]; !ok || !samePeer(p, old) {
			if err := b.removePeer(ctx, old); err != nil {
				errs = append(errs, fmt.Errorf("close session to %s: %w", name, err))
			}
			delete(b.peers, name)
			delete(b.byAddr, old.Address.String())
			delete(b.states, name)
			if !ok {
				delete(b.held, name)
			}
		}
	}

	// The policy before the routes: a route is never sent to a peer it
	// is not meant for, not even for a moment.
	sets, policy, fp := exportPolicy(peers, routes, b.enh)
	policyChanged := fp != b.policy
	if policyChanged {
		// SetPolicies replaces the definitions and keeps the
		// assignments, which are set next.
		err := b.s.SetPolicies(ctx, &api.SetPoliciesRequest{DefinedSets: sets, Policies: []*api.Policy{policy}})
		if err == nil {
			err = b.s.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
				Name:          "global",
				Direction:     api.PolicyDirection_EXPORT,
				Policies:      []*api.Policy{{Name: policy.Name}},
				DefaultAction: api.RouteAction_REJECT,
			}})
		}
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("export policy: %w", err))...)
		}
		b.policy = fp
	}

	wantPaths := map[netip.Prefix]bool{}
	counts := map[string]int{}
	for _, r := range routes {
		wantPaths[r.Prefix] = true
		for _, name := range r.Peers {
			for _, p := range peers {
				if p.Name != name || !p.carries(r.Prefix) {
					continue
				}
				if _, ok := p.nextHop(r.Prefix, b.enh[name]); ok {
					counts[name]++
				}
			}
		}
	}
	b.counts = counts
	for pfx, id := range b.paths {
		if !wantPaths[pfx] {
			if err := b.s.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: id}); err != nil {
				errs = append(errs, fmt.Errorf("withdraw %s: %w", pfx, err))
				continue
			}
			delete(b.paths, pfx)
		}
	}
	for pfx := range wantPaths {
		if _, ok := b.paths[pfx]; ok {
			continue
		}
		res, err := b.s.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: apiPath(pfx)})
		if err != nil {
			errs = append(errs, fmt.Errorf("advertise %s: %w", pfx, err))
			continue
		}
		b.paths[pfx] = res.Uuid
	}
	// New sessions after the routes: a session's first UPDATEs, and with
	// graceful restart its End-of-RIB, must carry every route, or the
	// router would drop a stale route that is about to come back.
	for _, p := range peers {
		if _, ok := b.peers[p.Name]; ok {
			continue
		}
		if err := b.addPeer(ctx, p); err != nil {
			errs = append(errs, fmt.Errorf("open session to %s: %w", p.Name, err))
			continue
		}
		b.peers[p.Name] = p
		if p.Dynamic.IsValid() {
			if _, ok := b.states[p.Name]; !ok {
				b.states[p.Name] = State{State: Active, Since: time.Now()}
			}
			continue
		}
		b.byAddr[p.Address.String()] = p.Name
		if why, ok := b.held[p.Name]; ok {
			if err := b.s.DisablePeer(ctx, &api.DisablePeerRequest{Address: p.Address.String(), Communication: why}); err != nil {
				errs = append(errs, fmt.Errorf("hold session to %s closed: %w", p.Name, err))
			}
		}
		if _, ok := b.states[p.Name]; !ok {
			b.states[p.Name] = State{State: Idle, Since: time.Now()}
		}
	}

	// Routes already sent go through the new policy again, on every
	// session GoBGP has Established. Not only those b.states has: it
	// learns of a session from GoBGP's events, later, and a session that
	// came up with the old policy while its event was on the way would
	// keep that policy's routes (an IPv4 next hop after the router had
	// offered RFC 8950) until the next policy change.
	if policyChanged && len(b.peers) > 0 {
		if err := b.s.ResetPeer(ctx, &api.ResetPeerRequest{Address: "all", Soft: true, Direction: api.ResetPeerRequest_OUT}); err != nil {
			errs = append(errs, fmt.Errorf("resend the routes under the new policy: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Hold closes a peer's session at once and keeps it closed (why is sent
// to the peer in the Cease notification, RFC 8203), or, with why empty,
// lets it open again. BFD uses it: a path BFD declared down must not
// carry routes until BFD is Up again.
func (b *Server) Hold(ctx context.Context, name, why string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, was := b.held[name]
	if why == "" {
		delete(b.held, name)
	} else {
		b.held[name] = why
	}
	p, ok := b.peers[name]
	if !ok || !b.started || was == (why != "") {
		return nil // not open yet (Apply holds it), or no change
	}
	if why == "" {
		// A new neighbour starts enabled. EnablePeer would not do: GoBGP
		// drops an admin-state request while the previous one is still
		// pending, silently (a release right after a hold was lost, and
		// the session stayed closed for good).
		if err := b.s.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.Address.String()}); err != nil {
			return fmt.Errorf("reopen the session to %s: %w", name, err)
		}
		if err := b.s.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
			return fmt.Errorf("reopen the session to %s: %w", name, err)
		}
		return nil
	}
	// The same for a hold: ask until GoBGP says the neighbour is down.
	addr := p.Address.String()
	for {
		if err := b.s.DisablePeer(ctx, &api.DisablePeerRequest{Address: addr, Communication: why}); err != nil {
			return err
		}
		down := false
		_ = b.s.ListPeer(ctx, &api.ListPeerRequest{Address: addr}, func(n *api.Peer) {
			down = n.State != nil && n.State.AdminState == api.PeerState_DOWN
		})
		if down {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hold the session to %s closed: %w", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Held returns the peers whose sessions are held closed, and why.
func (b *Server) Held() map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.held)
}

// Stop withdraws every route and closes every session with a Cease
// notification (the peers drop this node's routes at once). The GoBGP
// server itself is left idle rather than stopped: its StopBgp rewrites
// the global configuration while the closing sessions' goroutines may
// still read it (a data race in GoBGP v3), and Stop is only called on the
// way out of the process.
func (b *Server) Stop(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return nil
	}
	var errs []error
	for pfx, id := range b.paths {
		if err := b.s.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: id}); err != nil {
			errs = append(errs, err)
		}
		delete(b.paths, pfx)
	}
	errs = append(errs, b.closeAll(ctx)...)
	close(b.stopped)
	b.started = false
	b.peers, b.byAddr, b.states, b.policy = map[string]Peer{}, map[string]string{}, map[string]State{}, ""
	b.routers = map[string]map[string]bool{}
	return errors.Join(errs...)
}

// GracefulShutdownCommunity is GRACEFUL_SHUTDOWN (RFC 8326): routers
// that honour it prefer other paths at once.
const GracefulShutdownCommunity = "65535:0"

// GracefulShutdown withdraws for good, gently (RFC 8326): the routes are
// sent again with the GRACEFUL_SHUTDOWN community, so that the routers
// move traffic to the other nodes while this one still forwards; after
// wait they are withdrawn and the sessions closed (Stop). With nothing
// advertised to an Established peer, or no wait, it is Stop.
func (b *Server) GracefulShutdown(ctx context.Context, wait time.Duration) error {
	b.mu.Lock()
	up := false
	for name := range b.peers {
		up = up || b.states[name].State == Established
	}
	peers, routes := b.lastPeers, b.lastRoutes
	b.mu.Unlock()
	if wait <= 0 || !up || len(routes) == 0 {
		return b.Stop(ctx)
	}
	marked := make([]Route, len(routes))
	for i, r := range routes {
		r.Communities = append(slices.Clone(r.Communities), GracefulShutdownCommunity)
		marked[i] = r
	}
	err := b.Apply(ctx, peers, marked)
	select {
	case <-time.After(wait):
	case <-ctx.Done():
	}
	return errors.Join(err, b.Stop(ctx))
}

// Leave is Stop for a restart: sessions with graceful restart are left to
// it (nothing is withdrawn from them; the process exits and the kernel
// closes their connections without a NOTIFICATION, so the routers keep
// the routes as stale until the next speaker refreshes them), the others
// are closed with a Cease notification, which withdraws. It returns the
// names of the peers left to graceful restart.
func (b *Server) Leave(ctx context.Context) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return nil, nil
	}
	var kept []string
	var errs []error
	for name, p := range b.peers {
		if p.GracefulRestart > 0 && b.gr[name] == GRNegotiated {
			kept = append(kept, name)
			continue
		}
		if err := b.removePeer(ctx, p); err != nil {
			errs = append(errs, fmt.Errorf("close session to %s: %w", name, err))
		}
	}
	slices.Sort(kept)
	close(b.stopped)
	b.started = false
	return kept, errors.Join(errs...)
}

// Graceful restart, as negotiated on a peer's current session.
const (
	GRNegotiated         = "Negotiated"
	GRNotSupportedByPeer = "NotSupportedByPeer"
)

// GracefulRestart returns, for the peers that ask for graceful restart
// and whose session is Established, whether the peer offered it too, as
// GoBGP has it now. It also refreshes what ExtendedNextHop knows.
func (b *Server) GracefulRestart(ctx context.Context) map[string]string {
	b.refreshCaps(ctx)
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.gr)
}

// ExtendedNextHop returns, for the peers with ExtendedNextHop whose
// session is Established, whether the router offered the extended next
// hop capability (RFC 8950) for IPv4 routes, as last refreshed.
func (b *Server) ExtendedNextHop() map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]string{}
	for name, p := range b.peers {
		if !p.ExtendedNextHop || b.states[name].State != Established {
			continue
		}
		out[name] = GRNotSupportedByPeer
		if b.enh[name] {
			out[name] = GRNegotiated
		}
	}
	return out
}

// refreshCaps records, from the router's capabilities on Established
// sessions, graceful restart for the peers that ask for it, and the
// extended next hop for those that want it. A dynamic peer has it when
// every router connected has. When the extended next hop changes, the
// export policy does: onChange brings the next Apply.
func (b *Server) refreshCaps(ctx context.Context) {
	b.mu.Lock()
	s, started := b.s, b.started
	peers := maps.Clone(b.peers)
	byAddr := maps.Clone(b.byAddr)
	b.mu.Unlock()
	gr := map[string]string{}
	enh := map[string]bool{}
	if started && len(peers) > 0 {
		seen := map[string]bool{}
		_ = s.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			if p.State == nil || p.State.SessionState != api.PeerState_ESTABLISHED {
				return
			}
			name, ok := byAddr[p.State.NeighborAddress]
			if !ok {
				a, err := netip.ParseAddr(p.State.NeighborAddress)
				if err != nil {
					return
				}
				for n, pp := range peers {
					if pp.Dynamic.IsValid() && pp.Dynamic.Contains(a.Unmap()) {
						name, ok = n, true
					}
				}
			}
			peer, known := peers[name]
			if !ok || !known {
				return
			}
			var hasGR, hasENH bool
			for _, c := range p.State.RemoteCap {
				if c.MessageIs(&api.GracefulRestartCapability{}) {
					hasGR = true
				}
				var e api.ExtendedNexthopCapability
				if c.MessageIs(&e) && c.UnmarshalTo(&e) == nil {
					for _, t := range e.Tuples {
						if t.NlriFamily.GetAfi() == api.Family_AFI_IP && t.NlriFamily.GetSafi() == api.Family_SAFI_UNICAST && t.NexthopFamily.GetAfi() == api.Family_AFI_IP6 {
							hasENH = true
						}
					}
				}
			}
			first := !seen[name]
			seen[name] = true
			if peer.GracefulRestart > 0 {
				if hasGR && (first || gr[name] == GRNegotiated) {
					gr[name] = GRNegotiated
				} else {
					gr[name] = GRNotSupportedByPeer
				}
			}
			if peer.ExtendedNextHop {
				enh[name] = hasENH && (first || enh[name])
			}
		})
	}
	b.mu.Lock()
	b.gr = gr
	changed := !maps.Equal(b.enh, enh)
	b.enh = enh
	b.mu.Unlock()
	if changed && b.onChange != nil {
		b.onChange()
	}
}

// Counters returns, per peer name, the UPDATE messages sent.
func (b *Server) Counters(ctx context.Context) map[string]uint64 {
	b.mu.Lock()
	s, started := b.s, b.started
	byAddr := make(map[string]string, len(b.byAddr))
	for k, v := range b.byAddr {
		byAddr[k] = v
	}
	b.mu.Unlock()
	out := map[string]uint64{}
	if !started {
		return out
	}
	_ = s.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.State == nil || p.State.Messages == nil || p.State.Messages.Sent == nil {
			return
		}
		if name, ok := byAddr[p.State.NeighborAddress]; ok {
			out[name] = p.State.Messages.Sent.Update
		} else if p.Conf != nil && p.Conf.PeerGroup != "" {
			// A router of a dynamic peer (its group has the peer's name).
			out[p.Conf.PeerGroup] += p.State.Messages.Sent.Update
		}
	})
	return out
}

func samePeer(a, b Peer) bool { return a == b }

func apiPeer(p Peer) *api.Peer {
	c := apiCommon(p)
	return &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			LocalAsn:        p.MyASN,
			AuthPassword:    p.Password,
		},
		Timers: c.timers, Transport: c.transport, AfiSafis: c.afiSafis,
		EbgpMultihop: c.multihop, GracefulRestart: c.gr,
	}
}

// apiPeerGroup is a dynamic peer's settings: every router that connects
// from its prefix gets a session with them.
func apiPeerGroup(p Peer) *api.PeerGroup {
	c := apiCommon(p)
	return &api.PeerGroup{
		Conf: &api.PeerGroupConf{
			PeerGroupName: p.Name,
			PeerAsn:       p.ASN,
			LocalAsn:      p.MyASN,
			AuthPassword:  p.Password,
		},
		Timers: c.timers, Transport: c.transport, AfiSafis: c.afiSafis,
		EbgpMultihop: c.multihop, GracefulRestart: c.gr,
	}
}

type apiParts struct {
	timers    *api.Timers
	transport *api.Transport
	afiSafis  []*api.AfiSafi
	multihop  *api.EbgpMultihop
	gr        *api.GracefulRestart
}

// apiCommon is what a static and a dynamic peer configure alike.
func apiCommon(p Peer) apiParts {
	hold := p.HoldTime
	if hold == 0 {
		hold = 90 * time.Second
	}
	keep := p.KeepaliveTime
	if keep == 0 {
		keep = hold / 3
	}
	v4, v6 := p.IPv4, p.IPv6
	if !v4 && !v6 {
		v4, v6 = p.is4(), !p.is4()
	}
	var out apiParts
	if v4 {
		out.afiSafis = append(out.afiSafis, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true}})
	}
	if v6 {
		out.afiSafis = append(out.afiSafis, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}, Enabled: true}})
	}
	out.timers = &api.Timers{Config: &api.TimersConfig{
		HoldTime:          uint64(hold / time.Second),
		KeepaliveInterval: uint64(keep / time.Second),
		ConnectRetry:      2,
	}}
	out.transport = &api.Transport{RemotePort: uint32(p.Port), BindInterface: p.VRF}
	if out.transport.RemotePort == 0 {
		out.transport.RemotePort = 179
	}
	if p.Dynamic.IsValid() {
		out.transport.PassiveMode = true
	}
	if p.Source.IsValid() {
		out.transport.LocalAddress = p.Source.String()
	}
	if p.EBGPMultiHop {
		out.multihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 255}
	}
	if p.GracefulRestart > 0 {
		// Every session opens as a restarting speaker's would: the
		// Restart State bit, and the Forwarding State bit for each
		// family, which is true here, since the data plane (XDP, or
		// kube-proxy) forwards whether the speaker runs or not. The
		// router then keeps stale routes until this speaker's
		// End-of-RIB. Deferral 0: the speaker imports nothing, so it
		// sends its routes at once rather than wait for the router's.
		out.gr = &api.GracefulRestart{
			Enabled:         true,
			RestartTime:     uint32(min(max(p.GracefulRestart/time.Second, 1), 4095)),
			LocalRestarting: true,
		}
		for _, f := range out.afiSafis {
			f.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
	}
	return out
}

func apiPath(pfx netip.Prefix) *api.Path {
	nlri, _ := anypb.New(&api.IPAddressPrefix{Prefix: pfx.Addr().String(), PrefixLen: uint32(pfx.Bits())})
	origin, _ := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	if pfx.Addr().Is4() {
		nh, _ := anypb.New(&api.NextHopAttribute{NextHop: "0.0.0.0"})
		return &api.Path{
			Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST},
			Nlri:   nlri, Pattrs: []*anypb.Any{origin, nh},
		}
	}
	family := &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
	mp, _ := anypb.New(&api.MpReachNLRIAttribute{Family: family, NextHops: []string{"::"}, Nlris: []*anypb.Any{nlri}})
	return &api.Path{Family: family, Nlri: nlri, Pattrs: []*anypb.Any{origin, mp}}
}

// exportPolicy builds the defined sets and the policy that offer each
// peer its routes with their attributes, and a fingerprint of both.
func exportPolicy(peers []Peer, routes []Route, enh map[string]bool) ([]*api.DefinedSet, *api.Policy, string) {
	addr := map[string]string{}
	byName := map[string]Peer{}
	for _, p := range peers {
		addr[p.Name] = p.neighbor()
		byName[p.Name] = p
	}
	type group struct {
		peer             string
		communities      []string
		largeCommunities []string
		localPref        uint32
		// v6 is the prefixes' family (a prefix set holds one), nextHop
		// the explicit next hop of a family not the session's.
		v6      bool
		nextHop netip.Addr
	}
	key := func(g group) string {
		return fmt.Sprintf("%s|%s|%s|%d|%v|%s", g.peer, strings.Join(g.communities, ","), strings.Join(g.largeCommunities, ","), g.localPref, g.v6, g.nextHop)
	}
	groups := map[string]group{}
	prefixes := map[string][]netip.Prefix{}
	for _, r := range routes {
		cs := slices.Sorted(slices.Values(r.Communities))
		ls := slices.Sorted(slices.Values(r.LargeCommunities))
		for _, p := range r.Peers {
			peer, ok := byName[p]
			if !ok || !peer.carries(r.Prefix) {
				continue
			}
			nh, ok := peer.nextHop(r.Prefix, enh[p])
			if !ok {
				continue // no address of that family on the node
			}
			g := group{peer: p, communities: slices.Compact(cs), largeCommunities: slices.Compact(ls), localPref: r.LocalPref,
				v6: r.Prefix.Addr().Is6(), nextHop: nh}
			k := key(g)
			groups[k] = g
			prefixes[k] = append(prefixes[k], r.Prefix)
		}
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range groups {
			if !yield(k) {
				return
			}
		}
	})
	policy := &api.Policy{Name: "ironlb-export"}
	var sets []*api.DefinedSet
	var fp strings.Builder
	neighborSet := map[string]string{}
	for i, k := range keys {
		g := groups[k]
		ns, ok := neighborSet[g.peer]
		if !ok {
			ns = fmt.Sprintf("ironlb-peer-%d", len(neighborSet))
			neighborSet[g.peer] = ns
			sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: ns,
				List: []string{addr[g.peer]}})
		}
		ps := fmt.Sprintf("ironlb-prefixes-%d", i)
		pfxs := prefixes[k]
		slices.SortFunc(pfxs, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
		set := &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: ps}
		for _, p := range slices.Compact(pfxs) {
			set.Prefixes = append(set.Prefixes, &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(p.Bits())})
			fmt.Fprintf(&fp, "%s,", p)
		}
		sets = append(sets, set)
		actions := &api.Actions{RouteAction: api.RouteAction_ACCEPT}
		if len(g.communities) > 0 {
			actions.Community = &api.CommunityAction{Type: api.CommunityAction_ADD, Communities: g.communities}
		}
		if len(g.largeCommunities) > 0 {
			actions.LargeCommunity = &api.CommunityAction{Type: api.CommunityAction_ADD, Communities: g.largeCommunities}
		}
		if g.localPref != 0 {
			actions.LocalPref = &api.LocalPrefAction{Value: g.localPref}
		}
		if g.nextHop.IsValid() {
			actions.Nexthop = &api.NexthopAction{Address: g.nextHop.String()}
		}
		policy.Statements = append(policy.Statements, &api.Statement{
			Name: fmt.Sprintf("ironlb-statement-%d", i),
			Conditions: &api.Conditions{
				NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: ns},
				PrefixSet:   &api.MatchSet{Type: api.MatchSet_ANY, Name: ps},
			},
			Actions: actions,
		})
		fmt.Fprintf(&fp, "%s=%s;", k, addr[g.peer])
	}
	return sets, policy, fp.String()
}

var (
	sessionDesc = prometheus.NewDesc("ironlb_bgp_session_up",
		"1 when the session with the peer is Established, else 0.", []string{"peer"}, nil)
	prefixesDesc = prometheus.NewDesc("ironlb_bgp_prefixes_advertised",
		"Routes this node offers the peer.", []string{"peer"}, nil)
	updatesDesc = prometheus.NewDesc("ironlb_bgp_updates_sent_total",
		"BGP UPDATE messages sent to the peer since its session was configured.", []string{"peer"}, nil)
)

// Describe implements prometheus.Collector.
func (b *Server) Describe(ch chan<- *prometheus.Desc) {
	ch <- sessionDesc
	ch <- prefixesDesc
	ch <- updatesDesc
}

// Collect implements prometheus.Collector: session state, routes offered
// and updates sent, per peer.
func (b *Server) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	updates := b.Counters(ctx)
	exported := b.Exported()
	for peer, st := range b.States() {
		up := 0.0
		if st.State == Established {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(sessionDesc, prometheus.GaugeValue, up, peer)
		ch <- prometheus.MustNewConstMetric(prefixesDesc, prometheus.GaugeValue, float64(exported[peer]), peer)
		ch <- prometheus.MustNewConstMetric(updatesDesc, prometheus.CounterValue, float64(updates[peer]), peer)
	}
}
