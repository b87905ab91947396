package bgp

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
)

// helperEnv makes the test binary a speaker process for
// TestGracefulRestart: its value is the graceful restart time in seconds
// (0: none).
const helperEnv = "IRONLB_BGP_TEST_SPEAKER"

var grPrefix = netip.MustParsePrefix("10.210.0.1/32")

func grPeer(restart time.Duration) Peer {
	p := peerOf(nil, "")
	p.GracefulRestart = restart
	return p
}

// speakerProcess is the speaker process of TestGracefulRestart (the test
// binary run again with helperEnv set to the graceful restart time in
// seconds): it advertises grPrefix to BIRD, says "established" once the
// session is up, and on "leave" on its stdin leaves as a speaker that
// restarts does (Leave, then exit). It returns the exit code.
func speakerProcess(restartSecs string) int {
	var secs int
	if _, err := fmt.Sscan(restartSecs, &secs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx := context.Background()
	srv := New(logr.Discard(), netip.MustParseAddr("10.200.0.1"), nil)
	if err := srv.Apply(ctx, []Peer{grPeer(time.Duration(secs) * time.Second)}, []Route{{Prefix: grPrefix, Peers: []string{"bird"}}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// The parent gives up after 20 s and kills this process.
	for srv.States()["bird"].State != Established {
		time.Sleep(10 * time.Millisecond)
	}
	// Graceful restart is read once the session is up.
	for secs > 0 && srv.GracefulRestart(ctx)["bird"] == "" {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("established", srv.GracefulRestart(ctx)["bird"])
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if strings.TrimSpace(line) == "leave" {
		kept, err := srv.Leave(ctx)
		fmt.Println("left", kept, err)
	}
	return 0
}

type speakerProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func startSpeakerProc(t *testing.T, restart time.Duration) *speakerProc {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", helperEnv, int(restart/time.Second)))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	p := &speakerProc{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	got := make(chan string, 1)
	go func() { l, _ := p.out.ReadString('\n'); got <- l }()
	select {
	case l := <-got:
		if !strings.HasPrefix(l, "established") {
			t.Fatalf("the speaker process said %q", l)
		}
		if restart > 0 && !strings.Contains(l, GRNegotiated) {
			t.Fatalf("graceful restart not negotiated with BIRD: %q", l)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the speaker process's session did not come up in 20 s")
	}
	return p
}

// watchRoute polls BIRD every 10 ms for grPrefix until stop, and counts
// the polls that did not find it.
func watchRoute(b *bird) (stop func() (missing, polls int)) {
	var missing, polls atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			out, err := b.birdc("show", "route", "for", grPrefix.String())
			if err != nil && !strings.Contains(out, "Network not found") {
				continue // birdc failed: no verdict
			}
			polls.Add(1)
			if !strings.Contains(out, grPrefix.String()) {
				missing.Add(1)
			}
		}
	}()
	return func() (int, int) { close(done); wg.Wait(); return int(missing.Load()), int(polls.Load()) }
}

// TestGracefulRestart: with graceful restart negotiated, a speaker that
// restarts (Leave and exit, or kill -9) leaves its route at BIRD, which
// keeps it through the gap; the next speaker refreshes it, and BIRD never
// loses it. Without graceful restart, the same Leave withdraws it.
func TestGracefulRestart(t *testing.T) {
	b := startBird(t, 64512, "")
	hasRoute := func(want bool) func() error {
		return func() error {
			out, err := b.birdc("show", "route", "for", grPrefix.String())
			if err != nil && !strings.Contains(out, "Network not found") {
				return err
			}
			if strings.Contains(out, grPrefix.String()) != want {
				return fmt.Errorf("BIRD has the route: %v, want %v:\n%s", !want, want, out)
			}
			return nil
		}
	}
	// next starts the next speaker and returns what stops it, which the
	// watch of BIRD's route must end before (a stop withdraws).
	restart := func(how string, next func() (stopNext func())) {
		t.Helper()
		p := startSpeakerProc(t, 30*time.Second)
		b.eventually(10*time.Second, "route from the first speaker", hasRoute(true))
		stop := watchRoute(b)
		switch how {
		case "leave":
			if _, err := fmt.Fprintln(p.stdin, "leave"); err != nil {
				t.Fatal(err)
			}
			l, _ := p.out.ReadString('\n')
			if !strings.HasPrefix(l, "left [bird] <nil>") {
				t.Fatalf("Leave: %q, want bird left to graceful restart", l)
			}
		case "kill":
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
		}
		_ = p.cmd.Wait()
		b.eventually(5*time.Second, "BIRD sees the session closed", func() error {
			if b.established() {
				return fmt.Errorf("still established")
			}
			return nil
		})
		// The gap: BIRD holds the route as stale.
		if err := hasRoute(true)(); err != nil {
			t.Fatalf("%s: the route went with the session: %v", how, err)
		}
		stopNext := next()
		missing, polls := stop()
		stopNext()
		if missing > 0 {
			t.Fatalf("%s: BIRD lacked the route in %d of %d polls through the restart", how, missing, polls)
		}
		t.Logf("%s: BIRD had the route in all %d polls (every 10 ms) through the restart", how, polls)
	}
	for _, how := range []string{"leave", "kill"} {
		restart(how, func() func() {
			ctx := context.Background()
			srv := New(testr.New(t), netip.MustParseAddr("10.200.0.1"), nil)
			stopNext := func() { _ = srv.Stop(ctx) }
			t.Cleanup(stopNext) // when a check below fails first
			if err := srv.Apply(ctx, []Peer{grPeer(30 * time.Second)}, []Route{{Prefix: grPrefix, Peers: []string{"bird"}}}); err != nil {
				t.Fatal(err)
			}
			b.eventually(20*time.Second, "the next speaker's session", func() error {
				if !b.established() {
					return fmt.Errorf("not established")
				}
				return nil
			})
			// The next speaker opened as a restarting one whose
			// forwarding state survived: BIRD saw the Restart State bit
			// and the family's Forwarding State bit.
			out, err := b.birdc("show", "protocols", "all", "node")
			if err != nil {
				t.Fatal(err)
			}
			caps := out[max(strings.Index(out, "Neighbor capabilities"), 0):]
			if !strings.Contains(caps, "Restart recovery") || !strings.Contains(caps, "AF preserved: ipv4") {
				t.Errorf("%s: the next speaker did not open as restarting with its forwarding preserved:\n%s", how, caps)
			}
			// Refreshed: after the End-of-RIB no stale route is left.
			b.eventually(5*time.Second, "route refreshed", func() error {
				out, err := b.birdc("show", "route", "for", grPrefix.String(), "all")
				if err != nil {
					return err
				}
				if strings.Contains(out, "stale") || !strings.Contains(out, grPrefix.String()) {
					return fmt.Errorf("not refreshed:\n%s", out)
				}
				return nil
			})
			return stopNext
		})
	}

	// Without graceful restart Leave closes the session with a Cease,
	// and BIRD drops the route.
	p := startSpeakerProc(t, 0)
	b.eventually(10*time.Second, "route without graceful restart", hasRoute(true))
	if _, err := fmt.Fprintln(p.stdin, "leave"); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	b.eventually(5*time.Second, "route withdrawn without graceful restart", hasRoute(false))
}

// TestGracefulRestartLateSession: a session with graceful restart that
// opens after another has exchanged End-of-RIB (GoBGP then ends its
// restarting state for every neighbour) still offers the Forwarding State
// bit, so that after a restart the router keeps its stale routes until
// this speaker's End-of-RIB instead of dropping them as the session opens.
func TestGracefulRestartLateSession(t *testing.T) {
	b := startBirdConf(t, `
protocol bgp node {
	local 10.200.0.2 as 64512;
	neighbor 10.200.0.1 as 64512;
	passive on;
	hold time 9;
	ipv4 { import all; export none; };
}
protocol bgp late {
	disabled yes;
	local fd20::2 as 64512;
	neighbor fd20::1 as 64512;
	passive on;
	hold time 9;
	ipv6 { import all; export none; };
}
`)
	first := grPeer(30 * time.Second)
	late := Peer{Name: "late", Address: netip.MustParseAddr("fd20::2"), ASN: 64512, MyASN: 64512, HoldTime: 9 * time.Second, GracefulRestart: 30 * time.Second}
	srv := New(testr.New(t), netip.MustParseAddr("10.200.0.1"), nil)
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	routes := []Route{{Prefix: grPrefix, Peers: []string{"bird"}}, {Prefix: netip.MustParsePrefix("fd20:210::1/128"), Peers: []string{"late"}}}
	if err := srv.Apply(t.Context(), []Peer{first, late}, routes); err != nil {
		t.Fatal(err)
	}
	// The first session is up and done with End-of-RIB: GoBGP sends its
	// routes only then, as a restarting speaker.
	b.eventually(20*time.Second, "the route over the first session", func() error {
		if b.route(grPrefix.String()) == "" {
			return fmt.Errorf("BIRD has no %s", grPrefix)
		}
		return nil
	})
	if out, err := b.birdc("enable", "late"); err != nil {
		t.Fatalf("birdc enable late: %v: %s", err, out)
	}
	b.eventually(20*time.Second, "the late session", func() error {
		if !b.up("late") {
			return fmt.Errorf("late not Established")
		}
		return nil
	})
	out, err := b.birdc("show", "protocols", "all", "late")
	if err != nil {
		t.Fatal(err)
	}
	_, neighbor, ok := strings.Cut(out, "Neighbor capabilities")
	if !ok {
		t.Fatalf("no neighbor capabilities in:\n%s", out)
	}
	if !strings.Contains(neighbor, "AF preserved: ipv6") {
		t.Errorf("the late session opened without the Forwarding State bit for ipv6:\n%s", out)
	}
}
