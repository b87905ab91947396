package bfd

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/ironlb/ironlb/internal/netnstest"
)

// mutable is a Conn whose sending can be cut, as a pulled cable would.
type mutable struct {
	*Conn
	mute *atomic.Bool
}

func (m mutable) Send(p Packet, to netip.Addr) error {
	if m.mute.Load() {
		return nil
	}
	return m.Conn.Send(p, to)
}

// end is one end of a test session: a Runner and what it reported.
type end struct {
	r    *Runner
	mute atomic.Bool
	mu   sync.Mutex
	log  []Status
}

func newEnd() *end {
	e := &end{}
	e.r = newRunner(logr.Discard(), func(_ string, st Status) {
		e.mu.Lock()
		e.log = append(e.log, st)
		e.mu.Unlock()
	}, func(local netip.Addr, multihop bool, minTTL int) (packetConn, error) {
		c, err := Listen(local, multihop, minTTL)
		if err != nil {
			return nil, err
		}
		return mutable{Conn: c, mute: &e.mute}, nil
	})
	go e.r.loop()
	return e
}

func (e *end) status(t *testing.T) Status {
	t.Helper()
	st, ok := e.r.Statuses()["peer"]
	if !ok {
		t.Fatal("no session named peer")
	}
	return st
}

func waitState(t *testing.T, what string, e *end, want State, within time.Duration) Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := e.status(t)
		if st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after %s, want %s", what, st, within, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var (
	addrA = netip.MustParseAddr("127.0.0.1")
	addrB = netip.MustParseAddr("127.0.0.2")
)

func pair(t *testing.T) (*end, *end) {
	t.Helper()
	a, b := newEnd(), newEnd()
	t.Cleanup(a.r.Close)
	t.Cleanup(b.r.Close)
	peer := Peer{Name: "peer", DesiredMinTx: 50 * time.Millisecond, RequiredMinRx: 50 * time.Millisecond, DetectMult: 3}
	pa, pb := peer, peer
	pa.Addr, pa.Local = addrB, addrA
	pb.Addr, pb.Local = addrA, addrB
	a.r.Set([]Peer{pa})
	b.r.Set([]Peer{pb})
	return a, b
}

// TestRunnerUpAndSilence: two Runners on real sockets bring the session
// Up; when one goes silent (its link cut) the other declares it Down
// with "control detection time expired", and once it talks again the
// session comes back Up.
func TestRunnerUpAndSilence(t *testing.T) {
	netnstest.Enter(t)
	a, b := pair(t)
	waitState(t, "A", a, Up, 5*time.Second)
	waitState(t, "B", b, Up, 5*time.Second)

	b.mute.Store(true)
	cut := time.Now()
	st := waitState(t, "A after B went silent", a, Down, 5*time.Second)
	took := time.Since(cut)
	if st.Diag != DiagDetectionExpired || st.RemoteAdminDown {
		t.Fatalf("A went down with %s, want detection time expired", st)
	}
	// Never before the detection time: B's last packet left at most one
	// interval (50 ms) before the cut.
	if took < 3*50*time.Millisecond-50*time.Millisecond {
		t.Fatalf("A declared B down %s after it went silent, before 3 x 50 ms counted from B's last packet", took)
	}
	t.Logf("silence detected after %s (3 x 50 ms)", took.Round(time.Millisecond))

	b.mute.Store(false)
	waitState(t, "A after B came back", a, Up, 5*time.Second)
	waitState(t, "B after it came back", b, Up, 5*time.Second)
}

// TestRunnerAdminDown: a peer whose session is removed on purpose says
// AdminDown; the other end goes Down without counting it as a failure.
func TestRunnerAdminDown(t *testing.T) {
	netnstest.Enter(t)
	a, b := pair(t)
	waitState(t, "A", a, Up, 5*time.Second)
	b.r.Set(nil)
	st := waitState(t, "A after B removed the session", a, Down, 5*time.Second)
	if !st.RemoteAdminDown {
		t.Fatalf("A: %s, want the peer's AdminDown noted", st)
	}
}

// TestRunnerRefusesStrangers: packets from an address with no session,
// with a wrong TTL, or with an unknown discriminator are dropped and
// counted, and the session stays Up; a forged Down from a stranger that
// knows the discriminator takes nothing down.
func TestRunnerRefusesStrangers(t *testing.T) {
	netnstest.Enter(t)
	a, _ := pair(t)
	waitState(t, "A", a, Up, 5*time.Second)
	a.r.mu.Lock()
	disc := a.r.sessions["peer"].s.cfg.MyDiscriminator
	a.r.mu.Unlock()

	stranger, err := Listen(netip.MustParseAddr("127.0.0.3"), false, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stranger.Close() }()
	forged := Packet{State: Down, Diag: DiagNeighborDown, DetectMult: 3, MyDiscriminator: 99, YourDiscriminator: disc,
		DesiredMinTx: 50_000, RequiredMinRx: 50_000}
	unknownDisc := forged
	unknownDisc.YourDiscriminator = disc + 1
	for range 5 {
		if err := stranger.Send(forged, addrA); err != nil {
			t.Fatal(err)
		}
		if err := stranger.Send(unknownDisc, addrA); err != nil {
			t.Fatal(err)
		}
		sendWithTTL(t, forged.Marshal(), netip.AddrPortFrom(addrA, PortSingleHop), 64)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		d := a.r.Drops()
		if d[DropUnknown] >= 10 && d[DropTTL] >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("drops %v, want 10 from unknown peers and 5 with a wrong TTL", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := a.status(t); st.State != Up {
		t.Fatalf("A is %s after forged packets, want Up", st)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	up := slices.IndexFunc(a.log, func(st Status) bool { return st.State == Up })
	for _, st := range a.log[up+1:] {
		t.Errorf("A changed state after coming Up: %s", st)
	}
}

// TestRunnerSlowerKeepsSession: slowing a live session's intervals goes
// through a poll sequence without either end declaring the other down.
func TestRunnerSlowerKeepsSession(t *testing.T) {
	netnstest.Enter(t)
	a, b := pair(t)
	waitState(t, "A", a, Up, 5*time.Second)
	waitState(t, "B", b, Up, 5*time.Second)
	slow := Peer{Name: "peer", Addr: addrA, Local: addrB, DesiredMinTx: 400 * time.Millisecond, RequiredMinRx: 400 * time.Millisecond, DetectMult: 3}
	b.r.Set([]Peer{slow})
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if st := a.status(t); st.State != Up {
			t.Fatalf("A went %s while B slowed down", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.r.mu.Lock()
	pending := b.r.sessions["peer"].s.pollPending
	b.r.mu.Unlock()
	if pending {
		t.Fatal("B's poll sequence never ended")
	}
}
