package speaker

import (
	"net"
	"net/netip"
	"os"
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
		alive: map[string]bool{"a": true}, down: map[string]time.Time{}, dead: map[string]bool{},
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
		"itself (memberlist's own entry)": {"a", "10.0.0.11", true},
	}
	for name, tc := range tests {
		err := m.NotifyAlive(&memberlist.Node{Name: tc.name, Addr: net.ParseIP(tc.addr)})
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want admitted %v", name, err, tc.ok)
		}
	}
}
