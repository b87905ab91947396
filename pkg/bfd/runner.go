package bfd

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Peer is one session a Runner keeps.
type Peer struct {
	// Name identifies the session (the BGPPeer's name).
	Name string
	// Addr is the peer's address, Local this node's address the session
	// runs from (never a wildcard).
	Addr, Local netip.Addr
	// Multihop sessions use port 4784 and accept packets that crossed up
	// to 255-MinTTL routers; single-hop ones require TTL 255.
	Multihop bool
	MinTTL   int
	// DesiredMinTx, RequiredMinRx and DetectMult are the session's
	// parameters (Config without the discriminator).
	DesiredMinTx, RequiredMinRx time.Duration
	DetectMult                  uint8
}

func (p Peer) config(disc uint32) Config {
	return Config{DesiredMinTx: p.DesiredMinTx, RequiredMinRx: p.RequiredMinRx, DetectMult: p.DetectMult, MyDiscriminator: disc}
}

// Status is a session's state as the speaker reports it.
type Status struct {
	State State
	// Diag is the reason of the last change to Down.
	Diag Diag
	// RemoteAdminDown: the peer said it took the session down on purpose,
	// which is not a failure of the path (RFC 5882 section 3.2).
	RemoteAdminDown bool
	Since           time.Time
	// Err says why the session cannot run (its socket could not open).
	Err string
	// BadTTL is the TTL of the peer's last packet dropped for its TTL
	// (below MinTTL) since the session was last Up, and MinTTL what the
	// session requires: a multihop peer further away than minimumTTL
	// allows, or a router that sends with a lower TTL.
	BadTTL, MinTTL int
}

// Drop reasons for packets a Runner refused.
const (
	DropTTL     = "ttl"
	DropInvalid = "invalid"
	DropUnknown = "unknown-peer"
)

// packetConn is what a Runner needs of a Conn.
type packetConn interface {
	Send(p Packet, to netip.Addr) error
	Read() (Packet, netip.Addr, error)
	Close() error
}

// connKey names a listening socket: a node address and a port.
type connKey struct {
	local    netip.Addr
	multihop bool
	minTTL   int
}

type sharedConn struct {
	c     packetConn
	users int
}

type entry struct {
	peer   Peer
	key    connKey
	s      *Session
	status Status
}

// Runner keeps a set of sessions over real sockets: one socket per node
// address and port, shared by the sessions on it. Packets are matched to
// a session by the discriminator the peer echoes and, always, by their
// source address: a packet from an address with no session is dropped.
type Runner struct {
	log      logr.Logger
	listen   func(local netip.Addr, multihop bool, minTTL int) (packetConn, error)
	onChange func(name string, st Status)
	now      func() time.Time

	mu       sync.Mutex
	sessions map[string]*entry
	byDisc   map[uint32]*entry
	conns    map[connKey]*sharedConn
	drops    map[string]uint64
	closed   bool
	wake     chan struct{}
	done     chan struct{}
}

func newRunner(log logr.Logger, onChange func(string, Status), listen func(netip.Addr, bool, int) (packetConn, error)) *Runner {
	return &Runner{
		log: log, listen: listen, onChange: onChange, now: time.Now,
		sessions: map[string]*entry{}, byDisc: map[uint32]*entry{}, conns: map[connKey]*sharedConn{},
		drops: map[string]uint64{}, wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
}

func keyOf(p Peer) connKey {
	k := connKey{local: p.Local, multihop: p.Multihop}
	if p.Multihop {
		k.minTTL = p.MinTTL
	}
	return k
}

// sameSession: a change of parameters keeps the session (a poll sequence
// tells the peer); a change of addresses or port starts a new one.
func sameSession(a, b Peer) bool {
	return a.Addr == b.Addr && a.Local == b.Local && keyOf(a) == keyOf(b)
}

// Set makes the sessions the given ones. A session removed is first told
// to the peer as AdminDown, so that the peer does not count it as a
// failure. Sessions whose socket cannot open report it in their Status.
func (r *Runner) Set(peers []Peer) {
	r.mu.Lock()
	now := r.now()
	want := map[string]Peer{}
	for _, p := range peers {
		want[p.Name] = p
	}
	for name, e := range r.sessions {
		if p, ok := want[name]; ok && sameSession(p, e.peer) {
			continue
		}
		r.removeLocked(e, now)
	}
	var changed []string
	for _, p := range peers {
		if e, ok := r.sessions[p.Name]; ok {
			if e.peer != p {
				e.peer = p
				e.s.SetConfig(p.config(e.s.cfg.MyDiscriminator), now)
			}
			continue
		}
		e := &entry{peer: p, key: keyOf(p), status: Status{State: Down, Since: now}}
		r.sessions[p.Name] = e
		if err := r.acquireLocked(e.key); err != nil {
			e.status.Err = err.Error()
			changed = append(changed, p.Name)
			continue
		}
		disc := r.discriminatorLocked()
		e.s = New(p.config(disc), now, jitter)
		r.byDisc[disc] = e
	}
	r.mu.Unlock()
	r.kick()
	r.notify(changed)
}

func (r *Runner) removeLocked(e *entry, now time.Time) {
	delete(r.sessions, e.peer.Name)
	if e.s == nil {
		return
	}
	delete(r.byDisc, e.s.cfg.MyDiscriminator)
	e.s.Shutdown(now)
	if p, ok := e.s.Due(now); ok {
		if sc := r.conns[e.key]; sc != nil {
			_ = sc.c.Send(p, e.peer.Addr)
		}
	}
	r.releaseLocked(e.key)
}

func (r *Runner) acquireLocked(k connKey) error {
	if sc, ok := r.conns[k]; ok {
		sc.users++
		return nil
	}
	c, err := r.listen(k.local, k.multihop, k.minTTL)
	if err != nil {
		return err
	}
	r.conns[k] = &sharedConn{c: c, users: 1}
	go r.read(k, c)
	return nil
}

func (r *Runner) releaseLocked(k connKey) {
	sc := r.conns[k]
	if sc == nil {
		return
	}
	sc.users--
	if sc.users == 0 {
		delete(r.conns, k)
		_ = sc.c.Close()
	}
}

// discriminatorLocked picks an unused, non-zero, unpredictable
// discriminator: an off-path forger has to guess it.
func (r *Runner) discriminatorLocked() uint32 {
	for {
		var b [4]byte
		_, _ = rand.Read(b[:])
		d := binary.BigEndian.Uint32(b[:])
		if _, used := r.byDisc[d]; d != 0 && !used {
			return d
		}
	}
}

func jitter() float64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return float64(binary.BigEndian.Uint64(b[:])>>11) / (1 << 53)
}

// Statuses returns every session's status.
func (r *Runner) Statuses() map[string]Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]Status, len(r.sessions))
	for name, e := range r.sessions {
		out[name] = e.status
	}
	return out
}

// Drops returns how many packets were refused, by reason.
func (r *Runner) Drops() map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.drops)
}

// Close tells every peer AdminDown and closes the sockets.
func (r *Runner) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	now := r.now()
	for _, e := range r.sessions {
		r.removeLocked(e, now)
	}
	r.mu.Unlock()
	close(r.done)
}

func (r *Runner) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// read receives packets on one socket until it is closed.
func (r *Runner) read(k connKey, c packetConn) {
	for {
		p, from, err := c.Read()
		var te *TTLError
		switch {
		case errors.As(err, &te):
			r.badTTL(k, from, te)
		case err != nil && isParseError(err):
			r.count(DropInvalid)
		case err != nil:
			return // closed
		default:
			r.receive(k, p, from)
		}
	}
}

func isParseError(err error) bool {
	for _, e := range []error{ErrShort, ErrVersion, ErrLength, ErrAuth, ErrDetectMult, ErrMultipoint, ErrMyDiscZero, ErrYourDiscZero, ErrDemandNotUsed, ErrPollFinal} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// badTTL counts a packet dropped for its TTL and, when it came from a
// session's peer, notes the TTL for the session's status.
func (r *Runner) badTTL(k connKey, from netip.Addr, te *TTLError) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drops[DropTTL]++
	for _, e := range r.sessions {
		if e.key == k && e.peer.Addr == from && e.status.State != Up {
			e.status.BadTTL, e.status.MinTTL = te.TTL, te.Min
		}
	}
}

func (r *Runner) count(reason string) {
	r.mu.Lock()
	r.drops[reason]++
	r.mu.Unlock()
}

// receive matches a packet to its session (RFC 5880 section 6.8.6: by
// Your Discriminator when the peer knows ours, else by the source
// address) and applies it. The source address must be the session's
// peer either way.
func (r *Runner) receive(k connKey, p Packet, from netip.Addr) {
	r.mu.Lock()
	var e *entry
	if p.YourDiscriminator != 0 {
		e = r.byDisc[p.YourDiscriminator]
	} else {
		for _, c := range r.sessions {
			if c.key == k && c.peer.Addr == from && c.s != nil {
				e = c
				break
			}
		}
	}
	if e == nil || e.key != k || e.peer.Addr != from || e.s == nil {
		r.drops[DropUnknown]++
		r.mu.Unlock()
		return
	}
	now := r.now()
	var changed []string
	if e.s.Receive(p, now) {
		changed = append(changed, r.updateLocked(e, now, p.State == AdminDown))
	}
	r.sendDueLocked(e, now)
	r.mu.Unlock()
	r.kick()
	r.notify(changed)
}

// updateLocked records a session's new state.
func (r *Runner) updateLocked(e *entry, now time.Time, remoteAdmin bool) string {
	st, diag := e.s.State()
	e.status = Status{State: st, Diag: diag, Since: now, RemoteAdminDown: st == Down && remoteAdmin}
	r.log.Info("BFD session", "peer", e.peer.Name, "address", e.peer.Addr, "state", st.String(), "diag", diag.String())
	return e.peer.Name
}

func (r *Runner) sendDueLocked(e *entry, now time.Time) {
	if p, ok := e.s.Due(now); ok {
		if sc := r.conns[e.key]; sc != nil {
			if err := sc.c.Send(p, e.peer.Addr); err != nil {
				r.log.V(1).Info("BFD send", "peer", e.peer.Name, "error", err.Error())
			}
		}
	}
}

func (r *Runner) notify(names []string) {
	if r.onChange == nil {
		return
	}
	for _, n := range names {
		r.mu.Lock()
		e, ok := r.sessions[n]
		var st Status
		if ok {
			st = e.status
		}
		r.mu.Unlock()
		if ok {
			r.onChange(n, st)
		}
	}
}

// tick expires and sends what is due at now, and returns when to look
// again.
func (r *Runner) tick() time.Time {
	r.mu.Lock()
	now := r.now()
	next := now.Add(time.Second)
	var changed []string
	for _, e := range r.sessions {
		if e.s == nil {
			continue
		}
		if e.s.Expire(now) {
			changed = append(changed, r.updateLocked(e, now, false))
		}
		r.sendDueLocked(e, now)
		if t := e.s.NextTx(); t.Before(next) {
			next = t
		}
		if t := e.s.Deadline(); !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	r.mu.Unlock()
	r.notify(changed)
	return next
}

func (r *Runner) loop() {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		case <-r.wake:
		}
		next := r.tick()
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		// A millisecond past the deadline: Expire wants it exceeded.
		t.Reset(max(time.Until(next)+time.Millisecond, 0))
	}
}

// String describes a status for a BGPPeer's status and Events.
func (s Status) String() string {
	switch {
	case s.Err != "":
		return fmt.Sprintf("BFD cannot run: %s", s.Err)
	case s.State != Up && s.BadTTL > 0:
		return fmt.Sprintf("BFD %s: the peer's packets arrive with TTL %d, below the %d this session requires (single hop: 255, multihop: minimumTTL)", s.State, s.BadTTL, s.MinTTL)
	case s.State == Down && s.RemoteAdminDown:
		return "BFD Down: the peer took the session down administratively"
	case s.State == Down && s.Diag != DiagNone:
		return "BFD Down: " + s.Diag.String()
	default:
		return "BFD " + s.State.String()
	}
}
