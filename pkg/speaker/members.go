package speaker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/memberlist"
)

// MemberOptions tune failure detection. The defaults detect a dead speaker
// in about 300 ms on a LAN: a probe every 80 ms, a 40 ms answer deadline,
// then 160 ms of suspicion during which a live node that was only slow
// refutes, so a missed answer alone moves nothing. Shorter deadlines were
// measured to make a freshly restarted speaker flap for seconds on a busy
// two-core machine.
type MemberOptions struct {
	BindAddr      string
	Port          int
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// SuspicionMult scales the suspicion time: SuspicionMult ×
	// max(1, log10(members)) × ProbeInterval.
	SuspicionMult int
	// SecretName is the Secret, in the speaker's namespace, holding the
	// keys that encrypt and authenticate member traffic (see keys.go).
	SecretName string
	// Insecure lets a speaker run without a key: member traffic is then
	// plaintext and unauthenticated.
	Insecure bool
	// KeyGrace is how long a new key waits before it encrypts, and an old
	// one is still accepted: the time every speaker needs to read a
	// changed Secret.
	KeyGrace time.Duration
	// KeyWait is how long a starting speaker waits for the Secret.
	KeyWait time.Duration
	// keyring, set by the speaker from the Secret, encrypts member
	// traffic; nil only when Insecure.
	keyring *memberlist.Keyring
}

// DefaultMemberOptions are tuned for fast failover on a LAN.
func DefaultMemberOptions() MemberOptions {
	return MemberOptions{
		// Not 7946, MetalLB's (and memberlist's) default: both run side
		// by side while a cluster migrates.
		Port:          7947,
		ProbeInterval: 80 * time.Millisecond,
		ProbeTimeout:  40 * time.Millisecond,
		SuspicionMult: 2,
		SecretName:    "ironlb-memberlist",
		KeyGrace:      10 * time.Second,
		KeyWait:       time.Minute,
	}
}

// members tracks which speakers are alive, with hashicorp/memberlist.
type members struct {
	log     logr.Logger
	self    string
	list    *memberlist.Memberlist
	changed func()
	// joined is set when another node joins or comes back; the speaker
	// then re-announces what it owns.
	joined atomic.Bool
	// leaving is set on shutdown and published as this node's metadata,
	// so the others hand over at once instead of verifying the death.
	leaving atomic.Bool

	// addrs maps peer names to their member address, for re-checks.
	addrs atomic.Value

	// probe tells whether a node's kernel still answers (reachable); a
	// field so that tests can stand in for the network.
	probe func(netip.Addr) bool

	mu    sync.Mutex
	alive map[string]bool
	// down are the nodes whose speaker was a member and is gone while
	// the node still answers: its data plane forwards on. dead are those
	// that stopped answering: they leave every ring. Both last until the
	// node's speaker is a member again.
	down map[string]time.Time
	dead map[string]bool
	// leavers are the members whose metadata says they are leaving.
	leavers map[string]bool
	// ifaces is what each member said of the named interfaces; meta is
	// this node's encoded nodeMeta.
	ifaces map[string]ifaceFacts
	meta   atomic.Pointer[[]byte]
	// checking are the nodes whose "leaving" is being verified;
	// leavingClaims counts the "leaving" metadata heard.
	checking      map[string]bool
	leavingClaims atomic.Int64
}

// startMembers joins nothing yet; call join with the peers' addresses.
// peers are the Nodes known now (name -> InternalIP), admitted from the
// start.
func startMembers(log logr.Logger, name, advertise string, peers map[string]string, opts MemberOptions, changed func()) (*members, error) {
	m := &members{log: log, self: name, changed: changed, alive: map[string]bool{name: true},
		down: map[string]time.Time{}, dead: map[string]bool{}, leavers: map[string]bool{}, ifaces: map[string]ifaceFacts{}, checking: map[string]bool{}}
	m.probe = func(a netip.Addr) bool {
		// Three tries: a live node wrongly found dead has its flows
		// placed again, a dead one found late only delays new flows.
		ok, err := reachable(a, 3, 100*time.Millisecond)
		if err != nil {
			// Without a probe, a gone speaker means a dead node.
			log.Error(err, "probe a node whose speaker is gone", "address", a)
		}
		return ok
	}
	m.learn(peers, opts.Port)
	cfg := memberlist.DefaultLANConfig()
	cfg.Name = name
	// Bind to the address the others reach us on, the node's InternalIP,
	// not to every address of the node: nothing listens wider than it
	// must.
	cfg.BindAddr = opts.BindAddr
	if cfg.BindAddr == "" {
		cfg.BindAddr = advertise
	}
	cfg.BindPort = opts.Port
	cfg.AdvertiseAddr = advertise
	cfg.AdvertisePort = opts.Port
	cfg.ProbeInterval = opts.ProbeInterval
	cfg.ProbeTimeout = opts.ProbeTimeout
	cfg.SuspicionMult = opts.SuspicionMult
	cfg.SuspicionMaxTimeoutMult = 1
	cfg.GossipInterval = 20 * time.Millisecond
	cfg.GossipToTheDeadTime = 2 * time.Second
	cfg.PushPullInterval = 10 * time.Second
	cfg.TCPTimeout = time.Second
	cfg.IndirectChecks = 2
	// Lifeguard's awareness stretches timeouts after every probe that got
	// no nack, which in a small cluster is every probe of a dead node:
	// repeated failures made detection several times slower. A death is
	// instead confirmed by a direct ping (see NotifyLeave).
	cfg.AwarenessMaxMultiplier = 1
	// With a keyring memberlist encrypts (AES-GCM) and authenticates
	// every packet and stream, and drops what no key opens.
	cfg.Keyring = opts.keyring
	cfg.Events = m
	cfg.Delegate = m
	cfg.Alive = m
	cfg.LogOutput = logWriter{log.V(1)}
	list, err := memberlist.Create(cfg)
	if err != nil {
		return nil, fmt.Errorf("start memberlist on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	m.list = list
	return m, nil
}

// learn records the Nodes' names and InternalIPs (name -> address): the
// only members admitted, and where to probe a node whose speaker is gone.
func (m *members) learn(peers map[string]string, port int) {
	addrs := map[string]net.Addr{}
	for name, addr := range peers {
		if ip := net.ParseIP(addr); ip != nil {
			addrs[name] = &net.UDPAddr{IP: ip, Port: port}
		}
	}
	m.addrs.Store(addrs)
}

// NotifyAlive admits a member only under the name of a Node, from that
// Node's InternalIP: no host can join the member list as a node, or as
// another node. (memberlist calls it for every alive message.)
func (m *members) NotifyAlive(peer *memberlist.Node) error {
	if peer.Name == m.self {
		return nil
	}
	addrs, _ := m.addrs.Load().(map[string]net.Addr)
	want, ok := addrs[peer.Name].(*net.UDPAddr)
	if !ok {
		return fmt.Errorf("member %q is no Node of the cluster", peer.Name)
	}
	if !want.IP.Equal(peer.Addr) {
		return fmt.Errorf("member %q speaks from %s, its Node's InternalIP is %s", peer.Name, peer.Addr, want.IP)
	}
	if int(peer.Port) != want.Port {
		return fmt.Errorf("member %q uses port %d, the speakers' is %d", peer.Name, peer.Port, want.Port)
	}
	return nil
}

// join contacts the given peers (addresses without port), ignoring the
// unreachable ones; it is called again while some nodes are not members.
func (m *members) join(peers []string, port int) {
	if len(peers) == 0 {
		return
	}
	addrs := make([]string, len(peers))
	for i, p := range peers {
		addrs[i] = net.JoinHostPort(p, strconv.Itoa(port))
	}
	if n, err := m.list.Join(addrs); err != nil && n == 0 {
		m.log.V(1).Info("no peer answered yet", "peers", addrs, "error", err.Error())
	}
}

// Alive returns the names of the live members, self included. Suspected
// members count as alive until they are declared dead, so one slow answer
// does not move IPs.
func (m *members) Alive() map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]bool, len(m.alive))
	for k := range m.alive {
		out[k] = true
	}
	return out
}

// Dead returns the nodes that were members and whose kernel stopped
// answering since: dead, or cut off.
func (m *members) Dead() map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]bool, len(m.dead))
	for k := range m.dead {
		out[k] = true
	}
	return out
}

// leave tells the others we are going, so they take over at once, then
// stops. Each live member gets a direct "leaving" message (one encrypted
// UDP packet), then the member list shuts down at once: the others believe
// the message only when this node's member port refuses connections (see
// verifyLeaving), so the sooner it closes, the sooner they take over.
// Gossip (a metadata update, a leave broadcast) would make them wait for
// its retransmissions first, and is not needed: a member that missed the
// packet finds the node gone by failure detection.
func (m *members) leave() {
	m.leaving.Store(true)
	msg := []byte(msgLeaving + m.self)
	for _, n := range m.list.Members() {
		if n.Name == m.self {
			continue
		}
		if err := m.list.SendBestEffort(n, msg); err != nil {
			m.log.V(1).Info("tell a member we leave", "peer", n.Name, "error", err.Error())
		}
	}
	if err := m.list.Shutdown(); err != nil {
		m.log.Error(err, "stop memberlist")
	}
}

// msgLeaving starts the message a speaker sends each member as it stops,
// followed by its node's name.
const msgLeaving = "ironlb-leaving:"

// metaLeaving is the metadata of a speaker that is shutting down.
const metaLeaving = "leaving"

// NotifyJoin is called by memberlist when a node joins or comes back.
// (memberlist holds its lock around the callbacks: n is read here only.)
func (m *members) NotifyJoin(n *memberlist.Node) {
	if m.noteMeta(n) {
		go m.verifyLeaving(n.Name)
		return
	}
	m.set(n.Name, true)
}

// noteMeta records what n's metadata says: whether it is leaving, and
// which interfaces named by L2Advertisements it has. It returns whether n
// is leaving. memberlist changes its Nodes in place, so their metadata is
// read only in its callbacks.
func (m *members) noteMeta(n *memberlist.Node) bool {
	leaving := string(n.Meta) == metaLeaving
	var facts ifaceFacts
	if !leaving && len(n.Meta) > 0 {
		var meta nodeMeta
		if err := json.Unmarshal(n.Meta, &meta); err == nil {
			facts = meta.facts()
		}
	}
	if leaving {
		m.leavingClaims.Add(1)
	}
	m.mu.Lock()
	if leaving {
		m.leavers[n.Name] = true
	} else {
		delete(m.leavers, n.Name)
	}
	changed := false
	if !leaving {
		changed = !facts.equal(m.ifaces[n.Name])
		m.ifaces[n.Name] = facts
	}
	m.mu.Unlock()
	if changed && n.Name != m.self {
		go m.changed() // not from memberlist's callback
	}
	return leaving
}

// nodeMeta is what a speaker publishes about itself while it runs (when it
// leaves its metadata is metaLeaving): of the interfaces that
// L2Advertisements name, those it has (up) and those it lacks, so every
// speaker elects owners among the nodes that can answer.
type nodeMeta struct {
	Has   []string `json:"has,omitempty"`
	Lacks []string `json:"lacks,omitempty"`
}

func (n nodeMeta) facts() ifaceFacts {
	f := ifaceFacts{has: map[string]bool{}, lacks: map[string]bool{}}
	for _, i := range n.Has {
		f.has[i] = true
	}
	for _, i := range n.Lacks {
		f.lacks[i] = true
	}
	return f
}

// ifaceFacts are what a node said of the named interfaces; an interface in
// neither set is unknown (an older speaker, or news not yet gossiped) and
// counts as present.
type ifaceFacts struct {
	has, lacks map[string]bool
}

func (f ifaceFacts) equal(g ifaceFacts) bool {
	return maps.Equal(f.has, g.has) && maps.Equal(f.lacks, g.lacks)
}

// publishInterfaces sets what this speaker says of the named interfaces
// and gossips it when it changed.
func (m *members) publishInterfaces(meta nodeMeta) {
	b, err := json.Marshal(meta)
	if err != nil || len(b) > memberlist.MetaMaxSize {
		b = nil // unknown: counted as present everywhere
	}
	if len(meta.Has)+len(meta.Lacks) == 0 {
		b = nil
	}
	if old := m.meta.Load(); old != nil && bytes.Equal(*old, b) {
		return
	}
	m.meta.Store(&b)
	m.mu.Lock()
	m.ifaces[m.self] = meta.facts()
	m.mu.Unlock()
	if err := m.list.UpdateNode(time.Second); err != nil {
		m.log.Error(err, "publish interfaces")
	}
}

// Interfaces returns what each member said of the named interfaces.
func (m *members) Interfaces() map[string]ifaceFacts {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.ifaces)
}

// saidLeaving tells whether the node's last metadata said it is leaving.
func (m *members) saidLeaving(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leavers[name]
}

// NotifyLeave is called when a node leaves or is declared dead. A death
// can be second-hand: a node cut off from the others declares them all
// dead, and when its link comes back its gossip makes healthy nodes look
// dead for a moment. So a death is first checked with a direct ping; only
// a node that does not answer is dead.
func (m *members) NotifyLeave(n *memberlist.Node) {
	addr := &net.UDPAddr{IP: n.Addr, Port: int(n.Port)}
	name := n.Name
	go m.verifyDead(name, addr)
}

// NotifyUpdate is called when a node's metadata changes: a node that says
// it is leaving is gone as soon as it stops answering (see verifyLeaving).
func (m *members) NotifyUpdate(n *memberlist.Node) {
	if m.noteMeta(n) {
		go m.verifyLeaving(n.Name)
	}
}

// verifyLeaving hands a node over on its "leaving" only once that node's
// speaker is seen gone: its member port, at the Node's InternalIP,
// refuses connections (a speaker that really leaves closes it within
// milliseconds of saying so), or, when that cannot be told, a direct ping
// goes unanswered. A forged "leaving" about a live node, from whoever
// holds the key or crafted the message, is answered by the real node and
// changes nothing.
func (m *members) verifyLeaving(name string) {
	addrs, _ := m.addrs.Load().(map[string]net.Addr)
	addr, ok := addrs[name]
	if !ok {
		return // no Node of that name: never a member
	}
	// One check per node at a time, however many messages say it.
	m.mu.Lock()
	if m.checking[name] {
		m.mu.Unlock()
		return
	}
	m.checking[name] = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.checking, name)
		m.mu.Unlock()
	}()
	deadline := time.Now().Add(leavingFor)
	for time.Now().Before(deadline) {
		switch portState(addr) {
		case portClosed:
			m.set(name, false)
			return
		case portUnknown:
			if _, err := m.list.Ping(name, addr); err != nil {
				m.set(name, false)
				return
			}
		}
		time.Sleep(leavingCheckEvery)
	}
	m.log.Info("a node said to be leaving still answers; keeping it (a forged message, or a speaker slow to stop)", "peer", name)
}

// leavingFor bounds how long a leaving node may still answer before its
// "leaving" is taken for forged; a slow leaver is then handed over by
// failure detection.
const (
	leavingFor        = time.Second
	leavingCheckEvery = 10 * time.Millisecond
)

type portAnswer int

const (
	portOpen portAnswer = iota
	portClosed
	portUnknown
)

// portState tells whether a speaker listens at addr's member port: a
// refused connection says no at once; a timeout says nothing.
func portState(addr net.Addr) portAnswer {
	u, ok := addr.(*net.UDPAddr)
	if !ok {
		return portUnknown
	}
	c, err := net.DialTimeout("tcp", (&net.TCPAddr{IP: u.IP, Port: u.Port}).String(), 50*time.Millisecond)
	switch {
	case err == nil:
		_ = c.Close()
		return portOpen
	case errors.Is(err, syscall.ECONNREFUSED):
		return portClosed
	}
	return portUnknown
}

// verifyDead pings a node reported dead and marks it dead unless it answers.
func (m *members) verifyDead(name string, addr net.Addr) {
	if _, err := m.list.Ping(name, addr); err == nil {
		m.log.Info("a node reported dead answers a direct ping; keeping it", "peer", name)
		return
	}
	// It may have come back while we pinged.
	for _, n := range m.list.Members() {
		if n.Name == name {
			return
		}
	}
	m.set(name, false)
}

// watchDead reconciles, until ctx ends, this speaker's view with
// memberlist's: a node still counted alive though memberlist has it dead (a
// death that a direct ping once disproved) is checked again, so a later
// real death is not missed, and a live member counted dead is alive.
func (m *members) watchDead(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.checkDown()
		live := map[string]*memberlist.Node{}
		alive := m.Alive()
		for _, n := range m.list.Members() {
			live[n.Name] = n
			if !alive[n.Name] && !m.saidLeaving(n.Name) {
				m.set(n.Name, true) // missed a join
			}
		}
		for name := range alive {
			if live[name] != nil || name == m.list.LocalNode().Name {
				continue
			}
			if addr, ok := m.addrs.Load().(map[string]net.Addr)[name]; ok {
				m.verifyDead(name, addr)
			} else {
				m.set(name, false)
			}
		}
	}
}

// downProbeEvery is how often a node whose speaker is gone is probed.
const downProbeEvery = time.Second

// checkDown probes the nodes whose speaker is gone and whose last probe
// is older than downProbeEvery, and marks dead those that do not answer.
func (m *members) checkDown() {
	addrs, _ := m.addrs.Load().(map[string]net.Addr)
	now := time.Now()
	m.mu.Lock()
	var due []string
	for name, last := range m.down {
		if now.Sub(last) >= downProbeEvery {
			due = append(due, name)
			m.down[name] = now
		}
	}
	m.mu.Unlock()
	for _, name := range due {
		var addr netip.Addr
		if u, ok := addrs[name].(*net.UDPAddr); ok {
			addr, _ = netip.AddrFromSlice(u.IP)
			addr = addr.Unmap()
		}
		if addr.IsValid() && m.probe(addr) {
			continue
		}
		m.mu.Lock()
		_, stillDown := m.down[name]
		if stillDown {
			delete(m.down, name)
			m.dead[name] = true
		}
		m.mu.Unlock()
		if stillDown {
			m.log.Info("a node whose speaker is gone does not answer: dead, out of the rings", "node", name, "address", addr)
			m.changed()
		}
	}
}

// NodeMeta publishes whether this node is leaving and, while it is not,
// which named interfaces it has.
func (m *members) NodeMeta(limit int) []byte {
	if m.leaving.Load() {
		return []byte(metaLeaving)
	}
	if b := m.meta.Load(); b != nil && len(*b) <= limit {
		return *b
	}
	return nil
}

// NotifyMsg, GetBroadcasts, LocalState and MergeRemoteState complete
// memberlist.Delegate; speakers exchange no data of their own.
func (m *members) NotifyMsg(b []byte) {
	name, ok := strings.CutPrefix(string(b), msgLeaving)
	if !ok || name == m.self {
		return
	}
	go m.verifyLeaving(name)
}

// GetBroadcasts returns nothing: see NotifyMsg.
func (m *members) GetBroadcasts(int, int) [][]byte { return nil }

// LocalState returns nothing: see NotifyMsg.
func (m *members) LocalState(bool) []byte { return nil }

// MergeRemoteState does nothing: see NotifyMsg.
func (m *members) MergeRemoteState([]byte, bool) {}

func (m *members) set(name string, alive bool) {
	if name == m.self && !alive {
		return // gossip about ourselves, which memberlist refutes
	}
	m.mu.Lock()
	changed := m.alive[name] != alive
	if alive {
		m.alive[name] = true
		delete(m.down, name)
		delete(m.dead, name)
	} else {
		delete(m.alive, name)
		if _, ok := m.down[name]; !ok && !m.dead[name] {
			m.down[name] = time.Time{} // probed at once
		}
	}
	m.mu.Unlock()
	if !alive {
		// Not in memberlist's callback: a probe takes up to 200 ms.
		go m.checkDown()
	}
	if changed && alive {
		m.joined.Store(true)
	}
	if changed {
		m.log.Info("member changed", "node", name, "alive", alive)
		m.changed()
	}
}

// joinLoop keeps joining the nodes that are not members, so speakers that
// start in any order, or come back, find each other. peers returns node
// name -> address.
func (m *members) joinLoop(ctx context.Context, peers func() map[string]string, port int) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		var missing []string
		live := map[string]bool{}
		for _, n := range m.list.Members() {
			live[n.Name] = true
		}
		known := peers()
		m.learn(known, port)
		for name, addr := range known {
			if !live[name] {
				missing = append(missing, addr)
			}
		}
		if len(missing) > 0 {
			m.join(missing, port)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// logWriter sends memberlist's log lines to logr.
type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Info(string(bytes.TrimSpace(p)))
	return len(p), nil
}

var _ io.Writer = logWriter{}
