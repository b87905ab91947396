package bfd

import (
	"time"
)

// Config is one session's parameters.
type Config struct {
	// DesiredMinTx is how often this end would like to send once Up.
	DesiredMinTx time.Duration
	// RequiredMinRx is the fastest this end accepts packets.
	RequiredMinRx time.Duration
	// DetectMult: the peer is declared down after this many intervals
	// without a packet.
	DetectMult uint8
	// MyDiscriminator identifies the session at this end; not zero, and
	// unique on the node.
	MyDiscriminator uint32
}

// slowTx is the transmit interval a session uses while not Up (RFC 5880
// section 6.8.3: at least one second).
const slowTx = time.Second

// Session is one BFD session in asynchronous mode. It holds no timer or
// socket: the caller feeds it received packets and the time, and sends
// what Due says, at the times it says.
type Session struct {
	cfg Config
	// prev is the configuration before the last SetConfig: until the
	// peer acknowledges the change (a poll sequence), this end keeps
	// sending at least as often, and waits at least as long, as it did.
	prev Config

	state      State
	remote     State
	diag       Diag
	yourDisc   uint32
	remoteMult uint8
	// The peer's last advertised intervals.
	remoteMinTx, remoteMinRx time.Duration
	// pollPending: this end started a poll sequence (a parameter
	// change) and waits for a packet with Final. finalDue: the peer polled
	// and the next packet carries Final.
	pollPending, finalDue bool
	// lastRx is when the last valid packet arrived; nextTx when the next
	// periodic packet is due.
	lastRx, nextTx time.Time
	// jitter returns a fraction in [0, 1) (RFC 5880 section 6.8.7).
	jitter func() float64
}

// New returns a session in Down, due to send at now.
func New(cfg Config, now time.Time, jitter func() float64) *Session {
	if cfg.DetectMult == 0 {
		cfg.DetectMult = 3
	}
	return &Session{cfg: cfg, prev: cfg, state: Down, remote: Down, nextTx: now, jitter: jitter, remoteMinRx: time.Microsecond}
}

// State returns the session's state and the diagnostic of its last
// change.
func (s *Session) State() (State, Diag) { return s.state, s.diag }

// txInterval is the periodic transmit interval: the larger of what this
// end desires (a second while not Up) and what the peer requires.
func (s *Session) txInterval() time.Duration {
	tx := s.cfg.DesiredMinTx
	if s.pollPending {
		tx = min(tx, s.prev.DesiredMinTx)
	}
	if s.state != Up && tx < slowTx {
		tx = slowTx
	}
	return max(tx, s.remoteMinRx)
}

// DetectionTime is how long without a packet declares the peer down:
// the peer's multiplier times the larger of this end's required receive
// interval and the peer's desired transmit interval (RFC 5880 section
// 6.8.4, asynchronous mode).
func (s *Session) DetectionTime() time.Duration {
	if s.remoteMult == 0 {
		return 0
	}
	rx := s.cfg.RequiredMinRx
	if s.pollPending {
		rx = max(rx, s.prev.RequiredMinRx)
	}
	return time.Duration(s.remoteMult) * max(rx, s.remoteMinTx)
}

// Receive applies a valid packet (from Parse, already matched to this
// session) at now, and tells whether the state changed.
func (s *Session) Receive(p Packet, now time.Time) bool {
	if p.YourDiscriminator != 0 && p.YourDiscriminator != s.cfg.MyDiscriminator {
		return false // for another session
	}
	s.yourDisc = p.MyDiscriminator
	s.remote = p.State
	s.remoteMult = p.DetectMult
	s.remoteMinTx = time.Duration(p.DesiredMinTx) * time.Microsecond
	s.remoteMinRx = time.Duration(p.RequiredMinRx) * time.Microsecond
	s.lastRx = now
	if p.Final {
		s.pollPending = false
		s.prev = s.cfg
	}
	if p.Poll {
		s.finalDue = true
		s.nextTx = now // answer a poll at once
	}
	if s.state == AdminDown {
		return false
	}
	old := s.state
	switch {
	case p.State == AdminDown:
		if s.state != Down {
			s.down(DiagNeighborDown)
		}
	case s.state == Down && p.State == Down:
		s.state = Init
	case s.state == Down && p.State == Init:
		s.state = Up
	case s.state == Init && (p.State == Init || p.State == Up):
		s.state = Up
	case s.state == Up && p.State == Down:
		s.down(DiagNeighborDown)
	}
	if s.state != old {
		if s.state == Up {
			s.diag = DiagNone
			// The advertised transmit interval changes from the slow
			// one to the configured one: a poll sequence (RFC 5880
			// section 6.8.3).
			s.pollPending = true
		}
		// The transmit interval changes with Up: say so at once.
		s.nextTx = now
		return true
	}
	return false
}

func (s *Session) down(d Diag) {
	s.state, s.diag = Down, d
	s.yourDisc = 0
	s.remoteMult = 0
}

// Expire checks the detection time at now: a session past it goes Down
// (ControlDetectionTimeExpired). It tells whether the state changed.
func (s *Session) Expire(now time.Time) bool {
	if s.state != Init && s.state != Up {
		return false
	}
	if dt := s.DetectionTime(); dt > 0 && now.Sub(s.lastRx) > dt {
		s.down(DiagDetectionExpired)
		s.nextTx = now
		return true
	}
	return false
}

// Deadline is when Expire could next change the state (zero when it
// cannot).
func (s *Session) Deadline() time.Time {
	if (s.state != Init && s.state != Up) || s.DetectionTime() == 0 {
		return time.Time{}
	}
	return s.lastRx.Add(s.DetectionTime())
}

// Due returns the packet to send at now, if one is due, and schedules the
// next one with jitter: 75 to 100 % of the interval, 75 to 90 % with a
// multiplier of one (RFC 5880 section 6.8.7).
func (s *Session) Due(now time.Time) (Packet, bool) {
	if now.Before(s.nextTx) {
		return Packet{}, false
	}
	p := s.packet()
	s.finalDue = false
	span := 0.25
	if s.cfg.DetectMult == 1 {
		span = 0.15
	}
	f := 0.75 + span*s.jitter()
	s.nextTx = now.Add(time.Duration(float64(s.txInterval()) * f))
	return p, true
}

// NextTx is when Due will next return a packet.
func (s *Session) NextTx() time.Time { return s.nextTx }

func (s *Session) packet() Packet {
	tx := s.cfg.DesiredMinTx
	if s.state != Up && tx < slowTx {
		tx = slowTx
	}
	return Packet{
		Diag: s.diag, State: s.state,
		// A packet never carries both (RFC 5880 section 6.5): the answer
		// to the peer's poll goes out with Final alone, and this end's
		// own poll goes on in the packets after it. Both ends poll at
		// once when they come Up together.
		Poll: s.pollPending && !s.finalDue, Final: s.finalDue,
		DetectMult:        s.cfg.DetectMult,
		MyDiscriminator:   s.cfg.MyDiscriminator,
		YourDiscriminator: s.yourDisc,
		DesiredMinTx:      uint32(tx / time.Microsecond),
		RequiredMinRx:     uint32(s.cfg.RequiredMinRx / time.Microsecond),
	}
}

// SetConfig changes the session's intervals and multiplier (the
// discriminator stays). An Up session tells the peer with a poll sequence
// (RFC 5880 section 6.8.3) and, until the peer's Final, sends at the
// faster and waits for the longer of the old and new intervals, so that
// neither end declares the other down over the change.
func (s *Session) SetConfig(cfg Config, now time.Time) {
	if cfg.DetectMult == 0 {
		cfg.DetectMult = 3
	}
	cfg.MyDiscriminator = s.cfg.MyDiscriminator
	if !s.pollPending {
		s.prev = s.cfg
	}
	s.cfg = cfg
	if s.state == Up {
		s.pollPending = true
	} else {
		s.prev = cfg
	}
	s.nextTx = now
}

// Shutdown puts the session in AdminDown (the BGP peer is removed or the
// speaker stops): the peer is told, and does not count it as a failure.
func (s *Session) Shutdown(now time.Time) {
	s.state, s.diag = AdminDown, DiagAdminDown
	s.nextTx = now
}
