package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The test binary runs in a network namespace of its own (it re-executes
// itself under unshare), so GoBGP's sockets, whichever thread opens them,
// are there; BIRD runs in another namespace (ironlb-bgptest-PID), reached
// over a veth: 10.200.0.1 is ours, 10.200.0.2 BIRD's. The machine's own
// namespace is never touched.
const netnsEnv = "IRONLB_BGP_TEST_NETNS"

var birdNS string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("bgp: the tests need root (network namespaces); CI runs as root")
		os.Exit(m.Run())
	}
	if v := os.Getenv(helperEnv); v != "" {
		// A speaker process of TestGracefulRestart: in the test's
		// namespace already, next to its BIRD.
		os.Exit(speakerProcess(v))
	}
	if os.Getenv(netnsEnv) == "" {
		cmd := exec.Command("unshare", append([]string{"--net", "--", os.Args[0]}, os.Args[1:]...)...)
		cmd.Env = append(os.Environ(), netnsEnv+"=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				os.Exit(exit.ExitCode())
			}
			fmt.Println("bgp: unshare:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	birdNS = fmt.Sprintf("ironlb-bgptest-%d", os.Getpid())
	setup := [][]string{
		{"link", "set", "lo", "up"},
		{"netns", "add", birdNS},
		{"link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", birdNS},
		{"addr", "add", "10.200.0.1/24", "dev", "v0"},
		{"link", "set", "v0", "up"},
		{"-n", birdNS, "addr", "add", "10.200.0.2/24", "dev", "v1"},
		{"-n", birdNS, "link", "set", "v1", "up"},
		{"-n", birdNS, "link", "set", "lo", "up"},
		// fabric_test.go: IPv6 on the same link, a second address for
		// BIRD (a router that does not know the password), and a link
		// reached only by a socket bound to its device (v2: no route).
		{"addr", "add", "fd20::1/64", "dev", "v0", "nodad"},
		{"-n", birdNS, "addr", "add", "fd20::2/64", "dev", "v1", "nodad"},
		{"-n", birdNS, "addr", "add", "10.200.0.3/24", "dev", "v1"},
		{"link", "add", "v2", "type", "veth", "peer", "name", "v3", "netns", birdNS},
		{"addr", "add", "10.201.0.1/32", "dev", "v2"},
		{"link", "set", "v2", "up"},
		{"-n", birdNS, "addr", "add", "10.201.0.2/24", "dev", "v3"},
		{"-n", birdNS, "link", "set", "v3", "up"},
	}
	code := 1
	for _, args := range setup {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			fmt.Printf("bgp: ip %v: %v: %s\n", args, err, out)
			goto done
		}
	}
	code = m.Run()
done:
	_ = exec.Command("ip", "netns", "del", birdNS).Run()
	os.Exit(code)
}

// bird runs BIRD 2, a BGP implementation of its own, as the peer.
type bird struct {
	t    *testing.T
	dir  string
	sock string
	cmd  *exec.Cmd
}

func startBird(t *testing.T, asn uint32, password string) *bird {
	t.Helper()
	pw := ""
	if password != "" {
		pw = fmt.Sprintf("password %q;", password)
	}
	return startBirdConf(t, fmt.Sprintf(`
protocol bgp node {
	local 10.200.0.2 as %d;
	neighbor 10.200.0.1 as 64512;
	passive on;
	%s
	hold time 9;
	ipv4 { import all; export none; };
}
`, asn, pw))
}

// startBirdConf runs BIRD with the given protocols.
func startBirdConf(t *testing.T, protocols string) *bird {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces); CI runs as root")
	}
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatal("bird (Debian's bird2) is not installed: make deps installs it")
	}
	b := &bird{t: t, dir: t.TempDir()}
	b.sock = filepath.Join(b.dir, "bird.ctl")
	conf := `
log stderr all;
router id 10.200.0.2;
protocol device {}
` + protocols
	if err := os.WriteFile(filepath.Join(b.dir, "bird.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b.cmd = exec.Command("ip", "netns", "exec", birdNS, "bird", "-f", "-c", filepath.Join(b.dir, "bird.conf"), "-s", b.sock)
	b.cmd.Stdout, b.cmd.Stderr = os.Stderr, os.Stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.cmd.Process.Kill(); _ = b.cmd.Wait() })
	b.eventually(5*time.Second, "BIRD's control socket", func() error { _, err := b.birdc("show", "status"); return err })
	return b
}

func (b *bird) birdc(args ...string) (string, error) {
	out, err := exec.Command("birdc", append([]string{"-s", b.sock}, args...)...).CombinedOutput()
	return string(out), err
}

// route returns BIRD's "show route all" for a prefix, "" when it has none.
// A birdc that fails is the test's failure, never "no route".
func (b *bird) route(pfx string) string {
	b.t.Helper()
	out, err := b.birdc("show", "route", "for", pfx, "all")
	if strings.Contains(out, "Network not found") {
		return ""
	}
	if err != nil {
		b.t.Fatalf("birdc show route for %s: %v: %s", pfx, err, out)
	}
	return out
}

// established tells whether BIRD's session with the node is up; a birdc
// that fails is the test's failure, never "down".
func (b *bird) established() bool {
	b.t.Helper()
	return b.up("node")
}

// up tells whether BIRD's protocol proto is Established.
func (b *bird) up(proto string) bool {
	b.t.Helper()
	out, err := b.birdc("show", "protocols", proto)
	if err != nil || !strings.Contains(out, proto) {
		b.t.Fatalf("birdc show protocols %s: %v: %s", proto, err, out)
	}
	return strings.Contains(out, "Established")
}

func (b *bird) eventually(limit time.Duration, what string, cond func() error) {
	b.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: %v after %s", what, err, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func peerOf(b *bird, password string) Peer {
	return Peer{
		Name: "bird", Address: netip.MustParseAddr("10.200.0.2"),
		ASN: 64512, MyASN: 64512, Source: netip.MustParseAddr("10.200.0.1"),
		HoldTime: 9 * time.Second, Password: password,
	}
}

// TestAdvertiseToBIRD: routes reach BIRD with their communities and local
// preference, only for the peers they name, and go when withdrawn or when
// the router stops.
func TestAdvertiseToBIRD(t *testing.T) {
	b := startBird(t, 64512, "")
	ctx := context.Background()
	srv := New(testr.New(t), netip.MustParseAddr("10.200.0.1"), nil)
	t.Cleanup(func() { _ = srv.Stop(ctx) })
	peer := peerOf(b, "")
	vip := Route{
		Prefix: netip.MustParsePrefix("10.89.100.1/32"), Peers: []string{"bird"},
		Communities: []string{"64512:100", "no-export"}, LargeCommunities: []string{"64512:1:2"}, LocalPref: 200,
	}
	other := Route{Prefix: netip.MustParsePrefix("10.89.100.2/32"), Peers: []string{"elsewhere"}}
	if err := srv.Apply(ctx, []Peer{peer}, []Route{vip, other}); err != nil {
		t.Fatal(err)
	}
	b.eventually(15*time.Second, "session", func() error {
		if !b.established() {
			return fmt.Errorf("not established")
		}
		return nil
	})
	b.eventually(5*time.Second, "route", func() error {
		r := b.route("10.89.100.1/32")
		for _, want := range []string{"BGP.local_pref: 200", "(64512,100)", "(65535,65281)", "(64512, 1, 2)", "BGP.next_hop: 10.200.0.1"} {
			if !strings.Contains(r, want) {
				return fmt.Errorf("no %q in %q", want, r)
			}
		}
		return nil
	})
	if r := b.route("10.89.100.2/32"); r != "" {
		t.Errorf("a route for another peer reached BIRD: %s", r)
	}
	if s := srv.States()["bird"]; s.State != Established {
		t.Errorf("state %q, want established", s.State)
	}
	if err := testutil.CollectAndCompare(srv, strings.NewReader(`
# HELP ironlb_bgp_prefixes_advertised Routes this node offers the peer.
# TYPE ironlb_bgp_prefixes_advertised gauge
ironlb_bgp_prefixes_advertised{peer="bird"} 1
# HELP ironlb_bgp_session_up 1 when the session with the peer is Established, else 0.
# TYPE ironlb_bgp_session_up gauge
ironlb_bgp_session_up{peer="bird"} 1
`), "ironlb_bgp_session_up", "ironlb_bgp_prefixes_advertised"); err != nil {
		t.Error(err)
	}
	if n := srv.Counters(ctx)["bird"]; n < 1 {
		t.Errorf("%d updates sent, want at least one", n)
	}

	// New attributes: the route is sent again with them.
	vip.Communities, vip.LocalPref = []string{"64512:300"}, 300
	if err := srv.Apply(ctx, []Peer{peer}, []Route{vip}); err != nil {
		t.Fatal(err)
	}
	b.eventually(5*time.Second, "new attributes", func() error {
		r := b.route("10.89.100.1/32")
		if !strings.Contains(r, "BGP.local_pref: 300") || !strings.Contains(r, "(64512,300)") || strings.Contains(r, "(64512,100)") {
			return fmt.Errorf("route %q", r)
		}
		return nil
	})

	// The same when the policy changes before the session's Established
	// event has reached States (as when the router's capabilities are
	// read first): GoBGP's own state decides what is sent again.
	srv.mu.Lock()
	srv.states["bird"] = State{State: Active, Since: time.Now()}
	srv.mu.Unlock()
	vip.LocalPref = 400
	if err := srv.Apply(ctx, []Peer{peer}, []Route{vip}); err != nil {
		t.Fatal(err)
	}
	b.eventually(5*time.Second, "new attributes before the Established event", func() error {
		if r := b.route("10.89.100.1/32"); !strings.Contains(r, "BGP.local_pref: 400") {
			return fmt.Errorf("route %q", r)
		}
		return nil
	})

	// Withdrawn.
	if err := srv.Apply(ctx, []Peer{peer}, nil); err != nil {
		t.Fatal(err)
	}
	b.eventually(5*time.Second, "withdrawal", func() error {
		if r := b.route("10.89.100.1/32"); r != "" {
			return fmt.Errorf("still %q", r)
		}
		return nil
	})

	// Stop: BIRD loses the session and the routes.
	if err := srv.Apply(ctx, []Peer{peer}, []Route{vip}); err != nil {
		t.Fatal(err)
	}
	b.eventually(5*time.Second, "route again", func() error {
		if b.route("10.89.100.1/32") == "" {
			return fmt.Errorf("none")
		}
		return nil
	})
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	b.eventually(5*time.Second, "stop", func() error {
		if r := b.route("10.89.100.1/32"); r != "" || b.established() {
			return fmt.Errorf("route %q after stop", r)
		}
		return nil
	})
}

// TestMD5: a wrong password keeps the session down; the right one brings
// it up.
func TestMD5(t *testing.T) {
	b := startBird(t, 64500, "lab-secret")
	ctx := context.Background()
	srv := New(testr.New(t), netip.MustParseAddr("10.200.0.1"), nil)
	t.Cleanup(func() { _ = srv.Stop(ctx) })
	peer := peerOf(b, "wrong")
	peer.ASN = 64500
	if err := srv.Apply(ctx, []Peer{peer}, nil); err != nil {
		t.Fatal(err)
	}
	// Long enough for several connection attempts (ConnectRetry 2 s).
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b.established() || srv.States()["bird"].State == Established {
			t.Fatal("established with a wrong password")
		}
		time.Sleep(100 * time.Millisecond)
	}
	peer.Password = "lab-secret"
	if err := srv.Apply(ctx, []Peer{peer}, nil); err != nil {
		t.Fatal(err)
	}
	b.eventually(15*time.Second, "session with the right password", func() error {
		if !b.established() {
			return fmt.Errorf("not established")
		}
		return nil
	})
}

// TestHold: a held session closes at once, with the reason sent to BIRD
// in the Cease notification, stays closed across a change of its peer,
// and opens again when released.
func TestHold(t *testing.T) {
	b := startBird(t, 64512, "")
	ctx := context.Background()
	srv := New(testr.New(t), netip.MustParseAddr("10.200.0.1"), nil)
	t.Cleanup(func() { _ = srv.Stop(ctx) })
	peer := peerOf(b, "")
	if err := srv.Apply(ctx, []Peer{peer}, nil); err != nil {
		t.Fatal(err)
	}
	up := func(want bool) func() error {
		return func() error {
			if b.established() != want {
				return fmt.Errorf("BIRD's session established: %v, want %v", !want, want)
			}
			return nil
		}
	}
	b.eventually(15*time.Second, "session up", up(true))
	if err := srv.Hold(ctx, "bird", "BFD session down: ControlDetectionTimeExpired"); err != nil {
		t.Fatal(err)
	}
	b.eventually(5*time.Second, "session closed by Hold", up(false))
	out, _ := b.birdc("show", "protocols", "all", "node")
	if !strings.Contains(out, "BFD session down") {
		t.Errorf("BIRD was not told why:\n%s", out)
	}
	// A changed peer is a new session: still held.
	peer.HoldTime = 12 * time.Second
	if err := srv.Apply(ctx, []Peer{peer}, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b.established() {
			t.Fatal("a held session opened again after its peer changed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := srv.Held()["bird"]; got == "" {
		t.Fatal("Held lost the session")
	}
	if err := srv.Hold(ctx, "bird", ""); err != nil {
		t.Fatal(err)
	}
	b.eventually(15*time.Second, "session up after release", up(true))

	// A held peer changed and released at once (as when its bfd is
	// removed): Apply adds it again disabled, and GoBGP drops an
	// admin-state request while the previous one is pending; the session
	// must open all the same (it once stayed closed for good).
	if err := srv.Hold(ctx, "bird", "BFD session down: NeighborSignaledSessionDown"); err != nil {
		t.Fatal(err)
	}
	b.eventually(5*time.Second, "session closed by Hold again", up(false))
	peer.HoldTime = 9 * time.Second
	if err := srv.Apply(ctx, []Peer{peer}, nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.Hold(ctx, "bird", ""); err != nil {
		t.Fatal(err)
	}
	b.eventually(15*time.Second, "session up after a change and a release at once", up(true))
}
