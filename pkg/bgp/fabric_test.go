package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// listening returns the TCP sockets listening on port 179 in the test's
// namespace, as ss prints their local addresses.
func listening(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ss", "-Hltn", "sport", "= :179").CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	var addrs []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) >= 4 {
			addrs = append(addrs, f[3])
		}
	}
	return addrs
}

// TestDynamicPeer: a peer given as a prefix makes the node listen on TCP
// 179, on its own address only, and only while it has such a peer; a
// router from the prefix that knows the password gets a session and the
// routes; one from the same prefix without the password gets nothing.
func TestDynamicPeer(t *testing.T) {
	// fabric: BIRD connects (passive off) from 10.200.0.2 with the
	// password; rogue from 10.200.0.3 without one.
	b := startBirdConf(t, `
protocol bgp fabric {
	local 10.200.0.2 as 64512;
	neighbor 10.200.0.1 as 64512;
	password "fabric-secret";
	connect retry time 1;
	hold time 9;
	ipv4 { import all; export none; };
}
protocol bgp rogue {
	local 10.200.0.3 as 64512;
	neighbor 10.200.0.1 as 64512;
	connect retry time 1;
	hold time 9;
	ipv4 { import all; export none; };
}
`)
	ctx := context.Background()
	srv := New(testr.New(t), netip.MustParseAddr("10.200.0.1"), nil)
	t.Cleanup(func() { _ = srv.Stop(ctx) })
	vip := Route{Prefix: netip.MustParsePrefix("10.89.100.1/32"), Peers: []string{"fabric"}}

	// A static peer alone: nothing listens.
	static := Peer{Name: "static", Address: netip.MustParseAddr("10.200.0.9"), ASN: 64512, MyASN: 64512, HoldTime: 9 * time.Second}
	if err := srv.Apply(ctx, []Peer{static}, []Route{vip}); err != nil {
		t.Fatal(err)
	}
	if l := listening(t); len(l) > 0 {
		t.Fatalf("listening on %v without a dynamic peer", l)
	}

	dyn := Peer{Name: "fabric", Dynamic: netip.MustParsePrefix("10.200.0.0/24"), Listen: netip.MustParseAddr("10.200.0.1"),
		ASN: 64512, MyASN: 64512, HoldTime: 9 * time.Second, Password: "fabric-secret"}
	if err := srv.Apply(ctx, []Peer{dyn, static}, []Route{vip}); err != nil {
		t.Fatal(err)
	}
	if l := listening(t); !slices.Equal(l, []string{"10.200.0.1:179"}) {
		t.Errorf("listening on %v, want 10.200.0.1:179 only", l)
	}
	b.eventually(15*time.Second, "BIRD's session from the prefix", func() error {
		if !b.up("fabric") {
			return fmt.Errorf("not established")
		}
		if b.route("10.89.100.1/32") == "" {
			return fmt.Errorf("no route")
		}
		return nil
	})
	if st := srv.States()["fabric"]; st.State != Established {
		t.Errorf("state %q, want established", st.State)
	}
	if r := srv.Routers()["fabric"]; !slices.Equal(r, []string{"10.200.0.2"}) {
		t.Errorf("routers %v, want [10.200.0.2]", r)
	}
	// The rogue has had several tries (connect retry 1 s) meanwhile.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if b.up("rogue") {
			t.Fatal("a router without the password got a session")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := srv.Routers()["fabric"]; slices.Contains(r, "10.200.0.3") {
		t.Errorf("routers %v include the rogue", r)
	}

	// Without the dynamic peer the listener goes, and so does the session.
	if err := srv.Apply(ctx, []Peer{static}, []Route{vip}); err != nil {
		t.Fatal(err)
	}
	if l := listening(t); len(l) > 0 {
		t.Errorf("still listening on %v", l)
	}
	b.eventually(10*time.Second, "session closed", func() error {
		if b.up("fabric") || b.route("10.89.100.1/32") != "" {
			return fmt.Errorf("still up")
		}
		return nil
	})
}

// TestRouterID: the router ID a peer asks for is the one BIRD sees; a
// change restarts the session with the new one.
func TestRouterID(t *testing.T) {
	b := startBird(t, 64512, "")
	ctx := context.Background()
	srv := New(testr.New(t), netip.MustParseAddr("10.200.0.1"), nil)
	t.Cleanup(func() { _ = srv.Stop(ctx) })
	peer := peerOf(b, "")
	neighborID := func(want string) func() error {
		return func() error {
			out, err := b.birdc("show", "protocols", "all", "node")
			if err != nil {
				return err
			}
			if !strings.Contains(out, "Established") || !strings.Contains(out, "Neighbor ID:      "+want) {
				return fmt.Errorf("want neighbor ID %s:\n%s", want, out)
			}
			return nil
		}
	}
	if err := srv.Apply(ctx, []Peer{peer}, nil); err != nil {
		t.Fatal(err)
	}
	b.eventually(15*time.Second, "default router ID", neighborID("10.200.0.1"))
	peer.RouterID = netip.MustParseAddr("192.0.2.7")
	if err := srv.Apply(ctx, []Peer{peer}, nil); err != nil {
		t.Fatal(err)
	}
	b.eventually(15*time.Second, "router ID override", neighborID("192.0.2.7"))
}

// TestExtendedNextHop: over an IPv6 session, an IPv4 route goes with the
// session's IPv6 address as next hop (RFC 8950) when the router offers
// the capability, and with the node's IPv4 address when it does not.
func TestExtendedNextHop(t *testing.T) {
	for _, tc := range []struct {
		name, channel, nextHop, status string
	}{
		{"offered", "extended next hop on;", "fd20::1", GRNegotiated},
		{"not offered", "", "10.200.0.1", GRNotSupportedByPeer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBirdConf(t, fmt.Sprintf(`
protocol bgp node {
	local fd20::2 as 64512;
	neighbor fd20::1 as 64512;
	passive on;
	hold time 9;
	ipv4 { import all; export none; %s };
	ipv6 { import all; export none; };
}
`, tc.channel))
			ctx := context.Background()
			srv := New(testr.New(t), netip.MustParseAddr("10.200.0.1"), nil)
			defer func() { _ = srv.Stop(ctx) }()
			peer := Peer{Name: "enh", Address: netip.MustParseAddr("fd20::2"), ASN: 64512, MyASN: 64512, HoldTime: 9 * time.Second,
				IPv4: true, IPv6: true, NextHop4: netip.MustParseAddr("10.200.0.1"), ExtendedNextHop: true}
			vip := Route{Prefix: netip.MustParsePrefix("10.89.100.1/32"), Peers: []string{"enh"}}
			b.eventually(15*time.Second, "IPv4 route with next hop "+tc.nextHop, func() error {
				// As the speaker's syncs do: apply, then refresh the
				// capabilities the next apply uses.
				if err := srv.Apply(ctx, []Peer{peer}, []Route{vip}); err != nil {
					return err
				}
				srv.GracefulRestart(ctx)
				r := b.route("10.89.100.1/32")
				if !strings.Contains(r, "BGP.next_hop: "+tc.nextHop+"\n") && !strings.Contains(r, "BGP.next_hop: "+tc.nextHop+" ") {
					return fmt.Errorf("route %q", r)
				}
				if got := srv.ExtendedNextHop()["enh"]; got != tc.status {
					return fmt.Errorf("ExtendedNextHop %q, want %s", got, tc.status)
				}
				return nil
			})
		})
	}
}

// TestBindInterface: a session whose peer the node reaches only through
// one device (no route: as in a VRF, whose routes the main table does not
// have) comes up when bound to that device, as a BGPPeer's vrf binds it,
// and not without.
func TestBindInterface(t *testing.T) {
	b := startBirdConf(t, `
protocol bgp bound {
	local 10.201.0.2 as 64512;
	neighbor 10.201.0.1 as 64512;
	passive on;
	hold time 9;
	ipv4 { import all; export none; };
}
`)
	ctx := context.Background()
	srv := New(testr.New(t), netip.MustParseAddr("10.200.0.1"), nil)
	t.Cleanup(func() { _ = srv.Stop(ctx) })
	peer := Peer{Name: "bound", Address: netip.MustParseAddr("10.201.0.2"), ASN: 64512, MyASN: 64512, HoldTime: 9 * time.Second}
	vip := Route{Prefix: netip.MustParsePrefix("10.89.100.1/32"), Peers: []string{"bound"}}
	if err := srv.Apply(ctx, []Peer{peer}, []Route{vip}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if b.up("bound") {
			t.Fatal("established without the binding: the test's premise (no route) does not hold")
		}
		time.Sleep(100 * time.Millisecond)
	}
	peer.VRF = "v2"
	if err := srv.Apply(ctx, []Peer{peer}, []Route{vip}); err != nil {
		t.Fatal(err)
	}
	b.eventually(15*time.Second, "session bound to v2", func() error {
		if !b.up("bound") || !strings.Contains(b.route("10.89.100.1/32"), "BGP.next_hop: 10.201.0.1") {
			return fmt.Errorf("not established, or no route")
		}
		return nil
	})
}
