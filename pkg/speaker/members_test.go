package speaker

import (
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/memberlist"

	"github.com/ironlb/ironlb/internal/netnstest"
)

// TestGoneSpeakerDownOrDead: a speaker that leaves the member list while
// its node answers is down (its data plane forwards on, it stays in the
// rings); one whose node does not answer is dead; a down node that stops
// answering becomes dead; a node whose speaker comes back is neither.
func TestGoneSpeakerDownOrDead(t *testing.T) {
	var mu sync.Mutex
	answering := map[netip.Addr]bool{netip.MustParseAddr("10.0.0.12"): true}
	changes := make(chan struct{}, 16)
	m := &members{log: logr.Discard(), changed: func() { changes <- struct{}{} },
		alive: map[string]bool{"a": true}, down: map[string]time.Time{}, dead: map[string]bool{}, leavers: map[string]bool{}, checking: map[string]bool{},
		probe: func(a netip.Addr) bool { mu.Lock(); defer mu.Unlock(); return answering[a] }}
	m.addrs.Store(map[string]net.Addr{
		"b": &net.UDPAddr{IP: net.ParseIP("10.0.0.12"), Port: 7946},
		"c": &net.UDPAddr{IP: net.ParseIP("10.0.0.13"), Port: 7946},
	})
	m.set("b", true)
	m.set("c", true)
	m.set("b", false)
	m.set("c", false)
	deadline := time.Now().Add(5 * time.Second)
	for !m.Dead()["c"] {
		if time.Now().After(deadline) {
			t.Fatalf("c does not answer but is not dead: %v", m.Dead())
		}
		<-changes
	}
	if m.Dead()["b"] || m.Alive()["b"] {
		t.Errorf("b answers: want down (not alive, not dead); alive %v dead %v", m.Alive(), m.Dead())
	}
	// b's node stops answering: dead at its next probe.
	mu.Lock()
	answering[netip.MustParseAddr("10.0.0.12")] = false
	mu.Unlock()
	m.mu.Lock()
	m.down["b"] = time.Time{} // due now
	m.mu.Unlock()
	m.checkDown()
	if !m.Dead()["b"] {
		t.Errorf("b stopped answering but is not dead: %v", m.Dead())
	}
	m.set("c", true)
	if m.Dead()["c"] || !m.Alive()["c"] {
		t.Errorf("c's speaker is back: alive %v dead %v", m.Alive(), m.Dead())
	}
}

// TestReachable probes with real ICMP echoes, in a network namespace of
// the test's own: its loopback answers, an address with no route does not.
func TestReachable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("raw ICMP sockets and namespaces need root; CI runs as root")
	}
	netnstest.Enter(t)
	for addr, want := range map[string]bool{"127.0.0.1": true, "::1": true, "10.255.0.1": false} {
		got, err := reachable(netip.MustParseAddr(addr), 2, 100*time.Millisecond)
		if err != nil || got != want {
			t.Errorf("%s: reachable %v (%v), want %v", addr, got, err, want)
		}
	}
}

// TestNotifyAlive: memberlist admits a member only under a Node's name and
// from that Node's InternalIP.
func TestNotifyAlive(t *testing.T) {
	m := &members{self: "a"}
	m.learn(map[string]string{"b": "10.0.0.12"}, 7947)
	tests := map[string]struct {
		name string
		addr string
		ok   bool
	}{
		"a Node from its InternalIP":      {"b", "10.0.0.12", true},
		"a Node's name from elsewhere":    {"b", "10.0.0.99", false},
		"a name that is no Node":          {"mallory", "10.0.0.12", false},
		"a Node's address, another port":  {"b", "10.0.0.12:7", false},
		"itself (memberlist's own entry)": {"a", "10.0.0.11", true},
	}
	for name, tc := range tests {
		host, port := tc.addr, 7947
		if h, p, err := net.SplitHostPort(tc.addr); err == nil {
			host, port = h, atoi(p)
		}
		err := m.NotifyAlive(&memberlist.Node{Name: tc.name, Addr: net.ParseIP(host), Port: uint16(port)})
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want admitted %v", name, err, tc.ok)
		}
	}
}

// leavingMeta is a memberlist delegate that says "leaving" about its node.
type leavingMeta struct{}

func (leavingMeta) NodeMeta(int) []byte             { return []byte(metaLeaving) }
func (leavingMeta) NotifyMsg([]byte)                {}
func (leavingMeta) GetBroadcasts(int, int) [][]byte { return nil }
func (leavingMeta) LocalState(bool) []byte          { return nil }
func (leavingMeta) MergeRemoteState([]byte, bool)   {}

// TestForgedLeaving runs real member lists on loopback, encrypted with a
// shared key: a key holder that speaks as node b and says b is leaving
// (from b's own address, so the alive check passes) makes nobody hand b
// over while b answers; b's own leaving hands it over at once.
func TestForgedLeaving(t *testing.T) {
	port := freePort(t)
	key := derived("the cluster's memberlist key")
	ring := func() *memberlist.Keyring {
		r, err := memberlist.NewKeyring(nil, key)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	opts := DefaultMemberOptions()
	opts.Port = port
	peers := map[string]string{"a": "127.0.0.1", "b": "127.0.0.2"}
	start := func(name, addr string) (*members, chan struct{}) {
		o := opts
		o.keyring = ring()
		changes := make(chan struct{}, 64)
		m, err := startMembers(logr.Discard(), name, addr, peers, o, func() {
			select {
			case changes <- struct{}{}:
			default:
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		m.probe = func(netip.Addr) bool { return true }
		return m, changes
	}
	a, _ := start("a", "127.0.0.1")
	defer func() { _ = a.list.Shutdown() }()
	b, _ := start("b", "127.0.0.2")
	defer func() { _ = b.list.Shutdown() }()
	b.join([]string{"127.0.0.1"}, port)
	waitFor(t, "a sees b", func() bool { return a.Alive()["b"] })

	// The forger: b's name and address in its messages, its own socket.
	c := memberlist.DefaultLANConfig()
	c.Name = "b"
	c.BindAddr, c.BindPort = "127.0.0.3", port
	c.AdvertiseAddr, c.AdvertisePort = "127.0.0.2", port
	c.Keyring = ring()
	c.Delegate = leavingMeta{}
	c.LogOutput = io.Discard
	f, err := memberlist.Create(c)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Shutdown() }()
	if _, err := f.Join([]string{net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}); err != nil {
		t.Fatalf("the forger holds the key and should reach a: %v", err)
	}
	// a must have heard "b is leaving" (else the test proves nothing),
	// and still count b.
	// The forged metadata may be refuted by b within milliseconds: what
	// counts is that a heard it.
	waitFor(t, "a hears the forged leaving", func() bool { return a.leavingClaims.Load() > 0 })
	// And the direct message a stopping speaker sends.
	for _, n := range f.Members() {
		if n.Name == "a" {
			if err := f.SendBestEffort(n, []byte(msgLeaving+"b")); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 30 {
		if !a.Alive()["b"] {
			t.Fatal("a forged leaving made a hand b over while b answers")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = f.Shutdown()

	// b really leaves: handed over.
	b.leave()
	waitFor(t, "a hands b over when b leaves", func() bool { return !a.Alive()["b"] })
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freePort is a port free on loopback for both TCP and UDP, at the time.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			_ = u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }
