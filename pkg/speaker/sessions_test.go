package speaker

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/pkg/bfd"
	"github.com/ironlb/ironlb/pkg/bgp"
)

// TestSessionsOf: a node's status entry says what holds a session and
// what BFD and graceful restart are doing, and says nothing of them for
// peers that do not use them.
func TestSessionsOf(t *testing.T) {
	peer := func(name string, gr time.Duration) bgp.Peer {
		return bgp.Peer{Name: name, Address: netip.MustParseAddr("192.0.2.1"), ASN: 64512, MyASN: 64512, GracefulRestart: gr}
	}
	dyn := func(name string) bgp.Peer {
		return bgp.Peer{Name: name, Dynamic: netip.MustParsePrefix("192.0.2.0/24"), Listen: netip.MustParseAddr("192.0.2.10"), ASN: 64512, MyASN: 64512}
	}
	now := time.Now()
	up := bgp.State{State: bgp.Established, Since: now}
	got := map[string]session{}
	for _, s := range sessionsOf(
		[]bgp.Peer{peer("plain", 0), peer("bfd-up", 0), peer("bfd-down", 0), peer("held", 0), peer("gr", time.Minute), peer("gr-no", time.Minute), peer("ttl", 0), dyn("fabric"), dyn("quiet")},
		map[string]string{"broken": "passwordSecretRef: not found"},
		map[string]bgp.State{"plain": up, "bfd-up": up, "bfd-down": up, "held": {State: bgp.Idle, Since: now}, "gr": up, "gr-no": up, "ttl": up, "fabric": up, "quiet": {State: bgp.Active, Since: now}},
		map[string]int{"plain": 2},
		map[string]bfd.Status{
			"bfd-up":   {State: bfd.Up},
			"bfd-down": {State: bfd.Down},
			"held":     {State: bfd.Down, Diag: bfd.DiagDetectionExpired},
			"ttl":      {State: bfd.Down, BadTTL: 63, MinTTL: 254},
		},
		map[string]string{"held": "BFD session down: ControlDetectionTimeExpired"},
		map[string]string{"gr": bgp.GRNegotiated, "gr-no": bgp.GRNotSupportedByPeer},
		map[string]string{"plain": bgp.GRNegotiated},
		map[string][]string{"fabric": {"192.0.2.1", "192.0.2.2"}},
	) {
		got[s.peer] = s
	}
	check := func(name, state, bfdState, gr, msg string) {
		t.Helper()
		s, ok := got[name]
		if !ok {
			t.Fatalf("no entry for %s", name)
		}
		if s.state != state || s.bfd != bfdState || s.gr != gr || !strings.Contains(s.message, msg) || (msg == "" && s.message != "") {
			t.Errorf("%s: %+v; want state %q, bfd %q, gr %q, message with %q", name, s, state, bfdState, gr, msg)
		}
	}
	check("plain", "Established", "", "", "")
	check("bfd-up", "Established", "Up", "", "")
	check("bfd-down", "Established", "Down", "", "BFD Down")
	check("held", "Idle", "Down", "", "closed by this node: BFD session down")
	check("gr", "Established", "", bgp.GRNegotiated, "")
	check("gr-no", "Established", "", bgp.GRNotSupportedByPeer, "")
	check("ttl", "Established", "Down", "", "arrive with TTL 63, below the 254")
	check("broken", "Idle", "", "", "passwordSecretRef: not found")
	check("fabric", "Established", "", "", "")
	check("quiet", "Active", "", "", "listening on 192.0.2.10 port 179 for routers in 192.0.2.0/24")
	// What is a failure worth a Warning, and what is not.
	for name, want := range map[string]bool{"plain": false, "held": true, "broken": true, "quiet": false, "fabric": false, "bfd-down": false} {
		if got[name].failing != want {
			t.Errorf("%s: failing %v, want %v (%q)", name, got[name].failing, want, got[name].message)
		}
	}
	if r := got["fabric"].routers; r != "192.0.2.1,192.0.2.2" {
		t.Errorf("fabric's routers %q", r)
	}
	if e := got["plain"].enh; e != bgp.GRNegotiated {
		t.Errorf("plain's extended next hop %q", e)
	}
	if got["plain"].prefixes != 2 {
		t.Errorf("plain offers %d routes, want 2", got["plain"].prefixes)
	}
}
