package bfd

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func valid() Packet {
	return Packet{State: Down, DetectMult: 3, MyDiscriminator: 7, DesiredMinTx: 1_000_000, RequiredMinRx: 100_000}
}

func TestParseRoundTrip(t *testing.T) {
	p := Packet{Diag: DiagNeighborDown, State: Up, Poll: true, DetectMult: 5, MyDiscriminator: 1, YourDiscriminator: 2,
		DesiredMinTx: 300_000, RequiredMinRx: 200_000, RequiredMinEchoRx: 0}
	got, err := Parse(p.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if got != p {
		t.Fatalf("round trip gave %+v, want %+v", got, p)
	}
}

// TestParseRejects: every check of RFC 5880 section 6.8.6 that needs no
// session discards the packet.
func TestParseRejects(t *testing.T) {
	mut := func(f func(b []byte)) []byte { b := valid().Marshal(); f(b); return b }
	cases := map[string]struct {
		in   []byte
		want error
	}{
		"short":                      {valid().Marshal()[:23], ErrShort},
		"trailing bytes":             {append(valid().Marshal(), 0), ErrLength},
		"version 0":                  {mut(func(b []byte) { b[0] &^= 0xe0 }), ErrVersion},
		"length field 25":            {mut(func(b []byte) { b[3] = 25 }), ErrLength},
		"authentication bit":         {mut(func(b []byte) { b[1] |= flagAuth }), ErrAuth},
		"detect multiplier 0":        {mut(func(b []byte) { b[2] = 0 }), ErrDetectMult},
		"multipoint bit":             {mut(func(b []byte) { b[1] |= flagMulti }), ErrMultipoint},
		"my discriminator 0":         {mut(func(b []byte) { b[4], b[5], b[6], b[7] = 0, 0, 0, 0 }), ErrMyDiscZero},
		"your discriminator 0 in Up": {func() []byte { p := valid(); p.State = Up; return p.Marshal() }(), ErrYourDiscZero},
		"demand while Up": {func() []byte {
			p := valid()
			p.State, p.YourDiscriminator, p.Demand = Up, 9, true
			return p.Marshal()
		}(), ErrDemandNotUsed},
		"poll and final": {func() []byte {
			p := valid()
			p.State, p.YourDiscriminator, p.Poll, p.Final = Up, 9, true, true
			return p.Marshal()
		}(), ErrPollFinal},
	}
	for name, c := range cases {
		if _, err := Parse(c.in); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if _, err := Parse(valid().Marshal()); err != nil {
		t.Errorf("a valid packet: %v", err)
	}
}

// FuzzParse: Parse never panics, and what it accepts encodes back to the
// same bytes (nothing in an accepted packet is ignored).
func FuzzParse(f *testing.F) {
	f.Add(valid().Marshal())
	p := valid()
	p.State, p.YourDiscriminator, p.Poll = Up, 3, true
	f.Add(p.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		if out := p.Marshal(); !bytes.Equal(out, b) {
			t.Fatalf("accepted %x, which encodes back as %x", b, out)
		}
	})
}

// link runs two sessions against each other on a simulated clock, each
// packet delivered after delay, until until.
type link struct {
	a, b  *Session
	now   time.Time
	delay time.Duration
	cutA  bool // a's packets are lost
}

func newLink(cfgA, cfgB Config) *link {
	t0 := time.Unix(1000, 0)
	half := func() float64 { return 0.5 }
	return &link{a: New(cfgA, t0, half), b: New(cfgB, t0, half), now: t0, delay: time.Millisecond}
}

// run steps the clock in 1 ms ticks for d.
func (l *link) run(d time.Duration) {
	type inflight struct {
		at time.Time
		to *Session
		p  Packet
	}
	var q []inflight
	end := l.now.Add(d)
	for ; !l.now.After(end); l.now = l.now.Add(time.Millisecond) {
		rest := q[:0]
		for _, m := range q {
			if !m.at.After(l.now) {
				p, err := Parse(m.p.Marshal())
				if err != nil {
					panic(err)
				}
				m.to.Receive(p, l.now)
			} else {
				rest = append(rest, m)
			}
		}
		q = rest
		for _, s := range []*Session{l.a, l.b} {
			s.Expire(l.now)
			if p, ok := s.Due(l.now); ok {
				to := l.b
				if s == l.b {
					to = l.a
				}
				if s == l.a && l.cutA {
					continue
				}
				q = append(q, inflight{at: l.now.Add(l.delay), to: to, p: p})
			}
		}
	}
}

func cfg(disc uint32) Config {
	return Config{DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond, DetectMult: 3, MyDiscriminator: disc}
}

// TestSessionsComeUp: two ends reach Up through Down and Init (three-way
// handshake), then send at the configured 100 ms, not the slow second.
func TestSessionsComeUp(t *testing.T) {
	l := newLink(cfg(1), cfg(2))
	l.run(50 * time.Millisecond)
	if sa, _ := l.a.State(); sa != Up {
		t.Fatalf("a is %s after the first exchanges, want Up", sa)
	}
	if sb, _ := l.b.State(); sb != Up {
		t.Fatalf("b is %s, want Up", sb)
	}
	l.run(2 * time.Second)
	if iv := l.a.NextTx().Sub(l.now); iv > 100*time.Millisecond {
		t.Errorf("a's next packet is %s away once Up, want at most the configured 100 ms", iv)
	}
	if dt := l.a.DetectionTime(); dt != 300*time.Millisecond {
		t.Errorf("detection time %s, want 3 x 100 ms", dt)
	}
	if l.a.pollPending || l.b.pollPending {
		t.Error("the poll sequence for the new interval did not finish")
	}
}

// TestDetection: when a's packets stop, b declares the session down
// within its detection time (3 x 100 ms) plus a tick, with the diagnostic
// that says so, and not before.
func TestDetection(t *testing.T) {
	l := newLink(cfg(1), cfg(2))
	l.run(2 * time.Second)
	l.cutA = true
	start := l.now
	var downAt time.Time
	for l.now.Sub(start) < time.Second {
		l.run(time.Millisecond)
		if s, _ := l.b.State(); s != Up && downAt.IsZero() {
			downAt = l.now
		}
	}
	if downAt.IsZero() {
		t.Fatal("b never noticed a's silence")
	}
	took := downAt.Sub(start)
	if took > 300*time.Millisecond+5*time.Millisecond || took < 200*time.Millisecond {
		t.Errorf("b went down %s after a's last packet could have left, want about the 300 ms detection time", took)
	}
	if _, d := l.b.State(); d != DiagDetectionExpired {
		t.Errorf("diagnostic %s, want %s", d, DiagDetectionExpired)
	}
}

// TestAdminDownIsNotAFailure: a peer that shuts its session down takes
// ours to Down with NeighborSignaledSessionDown, at once.
func TestAdminDown(t *testing.T) {
	l := newLink(cfg(1), cfg(2))
	l.run(time.Second)
	l.a.Shutdown(l.now)
	l.run(10 * time.Millisecond)
	s, d := l.b.State()
	if s != Down || d != DiagNeighborDown {
		t.Fatalf("b is %s (%s) after a's AdminDown, want Down (%s)", s, d, DiagNeighborDown)
	}
}

// TestForeignDiscriminator: a packet addressed to another session
// changes nothing.
func TestForeignDiscriminator(t *testing.T) {
	t0 := time.Unix(0, 0)
	s := New(cfg(1), t0, func() float64 { return 0 })
	p := Packet{State: Init, DetectMult: 3, MyDiscriminator: 9, YourDiscriminator: 42, DesiredMinTx: 1_000_000, RequiredMinRx: 1_000_000}
	if s.Receive(p, t0) {
		t.Fatal("a packet for discriminator 42 moved session 1")
	}
	if st, _ := s.State(); st != Down {
		t.Fatalf("state %s, want Down", st)
	}
}

// TestPollAnswered: a poll is answered with Final in the very next
// packet, sent at once.
func TestPollAnswered(t *testing.T) {
	t0 := time.Unix(0, 0)
	s := New(cfg(1), t0, func() float64 { return 0 })
	s.Due(t0)
	p := Packet{State: Down, Poll: true, DetectMult: 3, MyDiscriminator: 9, DesiredMinTx: 1_000_000, RequiredMinRx: 1_000_000}
	now := t0.Add(10 * time.Millisecond)
	s.Receive(p, now)
	out, ok := s.Due(now)
	if !ok || !out.Final {
		t.Fatalf("after a poll: due %v, final %v; want a packet with Final at once", ok, out.Final)
	}
}

// TestPollDuringPoll: a session whose own poll is pending answers the
// peer's poll with Final alone (never Poll and Final together, RFC 5880
// section 6.5, which BIRD discards), and polls again in the packet after.
// Both ends poll at once when they come Up together.
func TestPollDuringPoll(t *testing.T) {
	t0 := time.Unix(0, 0)
	s := New(cfg(1), t0, func() float64 { return 0 })
	s.Due(t0)
	peer := Packet{State: Init, DetectMult: 3, MyDiscriminator: 9, YourDiscriminator: 1, DesiredMinTx: 1_000_000, RequiredMinRx: 100_000}
	now := t0.Add(10 * time.Millisecond)
	s.Receive(peer, now) // Down -> Up: a poll for the faster interval
	if st, _ := s.State(); st != Up || !s.pollPending {
		t.Fatalf("state %s, poll pending %v; want Up with a poll pending", st, s.pollPending)
	}
	peer.State, peer.Poll = Up, true
	now = now.Add(time.Millisecond)
	s.Receive(peer, now)
	out, ok := s.Due(now)
	if !ok || !out.Final || out.Poll {
		t.Fatalf("answer to a poll while polling: due %v, poll %v, final %v; want Final alone", ok, out.Poll, out.Final)
	}
	if _, err := Parse(out.Marshal()); err != nil {
		t.Fatalf("the answer does not parse: %v", err)
	}
	next, ok := s.Due(s.NextTx())
	if !ok || !next.Poll || next.Final {
		t.Fatalf("the packet after: due %v, poll %v, final %v; want this end's poll again", ok, next.Poll, next.Final)
	}
}

// TestSlowWhileDown: a session not Up sends no faster than once a second
// (RFC 5880 section 6.8.3), with jitter between 75 and 100 %.
func TestSlowWhileDown(t *testing.T) {
	t0 := time.Unix(0, 0)
	for _, j := range []float64{0, 0.999} {
		s := New(cfg(1), t0, func() float64 { return j })
		s.Due(t0)
		iv := s.NextTx().Sub(t0)
		if iv < 750*time.Millisecond || iv > time.Second {
			t.Errorf("jitter %.3f: next packet after %s, want 750 ms to 1 s", j, iv)
		}
		if p := s.packet(); p.DesiredMinTx < 1_000_000 {
			t.Errorf("advertises a desired interval of %d us while Down", p.DesiredMinTx)
		}
	}
}
