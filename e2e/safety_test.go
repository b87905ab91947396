package e2e

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/ironlb/ironlb/internal/nsrun"
	"github.com/ironlb/ironlb/pkg/lab"
)

// The data plane's kube-proxy duties, tried as an attacker or a fault
// would try them.

// dialOK reports whether a new TCP connection to vip:80 from lab-client
// opens within limit.
func dialOK(ctx context.Context, vip netip.Addr, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	c, err := lab.DialIn(ctx, lab.ClientNS, "tcp", netip.AddrPortFrom(vip, 80).String())
	if err != nil {
		return err
	}
	return c.Close()
}

// setSourceRanges edits a lab Service's loadBalancerSourceRanges.
func setSourceRanges(t *testing.T, name string, ranges ...string) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var svc corev1.Service
		if err := cl.Get(t.Context(), types.NamespacedName{Namespace: "default", Name: name}, &svc); err != nil {
			return err
		}
		svc.Spec.LoadBalancerSourceRanges = ranges
		return cl.Update(t.Context(), &svc)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// speakerMetric sums a data-plane metric over every speaker.
func speakerMetric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	var sum float64
	for _, n := range cfg.NodeList() {
		if v, ok := value(scrape(t, n.NS, "127.0.0.1:7473"), name, labels...); ok {
			sum += v
		}
	}
	return sum
}

// TestSourceRangesEnforced: loadBalancerSourceRanges that exclude the
// client refuse it, for new and already open connections, within about a
// second of the edit; ranges that include it serve it again, and the open
// connections carry on where they stopped.
func TestSourceRangesEnforced(t *testing.T) {
	needXDP(t)
	const name = "ranges"
	vip := labService(t, name, func(s *corev1.Service) {
		s.Spec.LoadBalancerSourceRanges = []string{"10.89.0.0/24"} // the client's subnet
	})
	conns := openEchoes(t, vip, 5)

	setSourceRanges(t, name, "198.51.100.0/24")
	edited := time.Now()
	eventually(t, 10*time.Second, func() error {
		if err := dialOK(t.Context(), vip, 300*time.Millisecond); err == nil {
			return errors.New("a new connection from outside the ranges opened")
		}
		return nil
	})
	t.Logf("new connections refused %s after the edit (one 300 ms dial attempt included)", time.Since(edited).Round(10*time.Millisecond))
	// The open connections get no answer.
	for i, e := range conns {
		_ = e.conn.SetDeadline(time.Now().Add(time.Second))
		if _, err := fmt.Fprintf(e.conn, "blocked %d\n", i); err != nil {
			t.Fatal(err)
		}
		if got, err := e.r.ReadString('\n'); err == nil {
			t.Errorf("connection %d was answered (%q) from outside the ranges", i, got)
		}
	}
	if n := speakerMetric(t, "ironlb_dataplane_source_range_drops_total", "service", "default/"+name); n == 0 {
		t.Error("no source-range drop counted for the Service")
	}
	if n := speakerMetric(t, "ironlb_dataplane_drops_total", "reason", "source_range"); n == 0 {
		t.Error("no drop counted under reason source_range")
	}

	setSourceRanges(t, name, " 203.0.113.0/24", "10.89.0.2/32 ")
	eventually(t, 10*time.Second, func() error { return dialOK(t.Context(), vip, 300*time.Millisecond) })
	for i, e := range conns {
		// TCP retransmits the line the ranges held back.
		_ = e.conn.SetDeadline(time.Now().Add(15 * time.Second))
		got, err := e.r.ReadString('\n')
		if err != nil || !strings.HasSuffix(strings.TrimSpace(got), fmt.Sprintf("blocked %d", i)) {
			t.Errorf("connection %d after the ranges admitted it again: %q, %v", i, got, err)
		}
	}
	checkEchoes(t, conns, "the ranges admitted the client again")
}

// TestForgedTunnelRefused: an IPIP packet from lab-client (no node) to a
// node, carrying a datagram for the VIP's UDP echo, is not opened: no
// backend ever answers through any node, and each node counts it. (A
// packet may be sent again, up to three times, until its node has counted
// one: the first packet to a neighbour not yet resolved can be lost.)
func TestForgedTunnelRefused(t *testing.T) {
	needXDP(t)
	client := netip.MustParseAddr(lab.ClientIPv4)
	counted := func(n lab.Node) float64 {
		v, _ := value(scrape(t, n.NS, "127.0.0.1:7473"), "ironlb_dataplane_drops_total", "reason", "untrusted_tunnel")
		return v
	}
	for i, n := range cfg.NodeList() {
		sport := uint16(40770 + i)
		// The answer, if any, would come to this socket.
		var reply net.PacketConn
		err := nsrun.In(lab.ClientNS, func() error {
			var err error
			reply, err = net.ListenPacket("udp4", netip.AddrPortFrom(client, sport).String())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		noMAC := make(net.HardwareAddr, 6)
		inner := lab.UDPFrame(noMAC, noMAC, client, vip4, sport, 7, []byte("forged"))[14:] // the IP packet
		before := counted(n)
		sent := 0
		for ; sent < 3 && counted(n) == before; sent++ {
			err = nsrun.In(lab.ClientNS, func() error {
				fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_IPIP)
				if err != nil {
					return err
				}
				defer func() { _ = syscall.Close(fd) }()
				return syscall.Sendto(fd, inner, 0, &syscall.SockaddrInet4{Addr: n.IPv4.As4()})
			})
			if err != nil {
				t.Fatal(err)
			}
			_ = reply.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 512)
			if k, _, err := reply.ReadFrom(buf); err == nil {
				t.Errorf("through %s: a backend answered the forged tunnel packet: %q", n.Name, buf[:k])
			} else if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal(err)
			}
		}
		_ = reply.Close()
		if after := counted(n); after == before {
			t.Errorf("%s counted no untrusted_tunnel drop for %d forged packets", n.Name, sent)
		}
	}
}

// TestNodeDeathLeavesRings: when a node's link is cut, every speaker takes
// it out of the rings as soon as memberlist declares it dead, so new
// connections from 200 source ports all succeed; its pods' EndpointSlices
// never change (no controller-manager in the lab, and a real one would
// take about 40 s).
func TestNodeDeathLeavesRings(t *testing.T) {
	needXDP(t)
	const name = "nodedeath"
	vip := labService(t, name, nil)
	owner := oneAnnouncer(t, name, vip, nil)
	var victim lab.Node
	for _, n := range cfg.NodeList() {
		if n.Name != owner {
			victim = n
			break
		}
	}
	watcher := nodeNamed(t, owner)
	if err := cfg.CutLink(t.Context(), victim); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	restored := false
	defer func() {
		if !restored {
			_ = cfg.RestoreLink(context.WithoutCancel(t.Context()), victim)
		}
	}()
	eventually(t, 10*time.Second, func() error {
		if m, err := cfg.Members(t.Context(), watcher); err != nil || m != cfg.Nodes-1 {
			return fmt.Errorf("%s sees %d members (%v)", owner, m, err)
		}
		return nil
	})
	t.Logf("%s declared %s dead %s after its link was cut", owner, victim.Name, time.Since(cut).Round(time.Millisecond))
	// The ring follows at once: every new connection succeeds, on a
	// surviving node's endpoint. 200 source ports, 20 at a time.
	var roundStart time.Time
	eventually(t, 3*time.Second, func() error {
		roundStart = time.Now()
		errs := make(chan error, 200)
		sem := make(chan struct{}, 20)
		for range 200 {
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				// Short dials, so that a round with failures ends
				// soon and the next measures again.
				errs <- dialOK(t.Context(), vip, 300*time.Millisecond)
			}()
		}
		failed := 0
		var first error
		for range 200 {
			if err := <-errs; err != nil {
				failed++
				first = cmp.Or(first, err)
			}
		}
		if failed > 0 {
			return fmt.Errorf("%d of 200 new connections failed %s after the cut, first: %v", failed, time.Since(cut).Round(time.Millisecond), first)
		}
		return nil
	})
	t.Logf("200 of 200 new connections succeeded in a round that began %s after the cut and took %s",
		roundStart.Sub(cut).Round(time.Millisecond), time.Since(roundStart).Round(time.Millisecond))
	if err := cfg.RestoreLink(t.Context(), victim); err != nil {
		t.Fatal(err)
	}
	restored = true
	waitMembers(t)
	// Back in the rings: its endpoints take new connections again.
	eventually(t, 10*time.Second, func() error {
		for range 40 {
			p, _, err := tryGet(clientHTTP(), vip)
			if err != nil {
				return err
			}
			if strings.HasPrefix(p, "demo-"+strings.TrimPrefix(victim.Name, "node-")+"-") {
				return nil
			}
		}
		return fmt.Errorf("%s's endpoints take no new connection after it came back", victim.Name)
	})
}

// TestUDPFixedPortReplaced: a UDP client that keeps its source port (a
// resolver, NTP, WireGuard) is answered by another endpoint within about
// a second of its own leaving the EndpointSlice, instead of staying
// pinned to the old pod forever.
func TestUDPFixedPortReplaced(t *testing.T) {
	needXDP(t)
	const name = "udpfixed"
	vip := labService(t, name, nil)
	conn, err := lab.DialIn(t.Context(), lab.ClientNS, "udp", net.JoinHostPort(vip.String(), "7"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ask := func() (string, error) {
		_ = conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := conn.Write([]byte("q")); err != nil {
			return "", err
		}
		buf := make([]byte, 256)
		n, err := conn.Read(buf)
		if err != nil {
			return "", err
		}
		return strings.Fields(string(buf[:n]))[0], nil
	}
	var first string
	eventually(t, 5*time.Second, func() error {
		first, err = ask()
		return err
	})
	ready := map[string]bool{first: false}
	if err := cfg.SetEndpointsReady(t.Context(), cl, name, ready); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	var now string
	eventually(t, 5*time.Second, func() error {
		pod, err := ask()
		if err != nil {
			return err
		}
		if pod == first {
			return fmt.Errorf("still answered by %s, which left the EndpointSlice", first)
		}
		now = pod
		return nil
	})
	t.Logf("answered by %s %s after %s left", now, time.Since(removed).Round(time.Millisecond), first)
	// It stays on its new endpoint.
	for range 5 {
		if pod, err := ask(); err != nil || pod != now {
			t.Errorf("then answered by %q (%v), want %s", pod, err, now)
		}
	}
}

// TestKernelModeDetaches: a speaker started with --dataplane=kernel on a
// node where an xdp run left its program attached and its maps pinned
// detaches and removes them, so nothing forwards by frozen rings.
func TestKernelModeDetaches(t *testing.T) {
	needXDP(t)
	n := nodeNamed(t, "node-c")
	attached := func() (bool, error) {
		var on bool
		err := nsrun.In(n.NS, func() error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			on = l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached
			return nil
		})
		return on, err
	}
	if on, err := attached(); err != nil || !on {
		t.Fatalf("node-c has no XDP program to begin with (%v)", err)
	}
	if err := cfg.Stop(lab.SpeakerName(n), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cfg.Stop(lab.SpeakerName(n), 10*time.Second)
		if err := cfg.StartSpeaker(n); err != nil {
			t.Fatal(err)
		}
		waitMembers(t)
	}()
	// Stopped, the program stays: the node forwards on.
	if on, err := attached(); err != nil || !on {
		t.Fatalf("the XDP program left with its speaker (%v)", err)
	}
	if err := cfg.StartSpeakerWith(n, "kernel"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		on, err := attached()
		if err != nil {
			return err
		}
		if on {
			return errors.New("the XDP program is still attached")
		}
		if _, err := os.Stat(cfg.PinDir(n)); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("the pins are still there (%v)", err)
		}
		return nil
	})
}

// TestMemberlistCoexistsWithMetalLB: with MetalLB's speakers holding port
// 7946 on a node (a migration), ironlb's speaker there still joins, and
// its member list listens on the node's InternalIP only.
func TestMemberlistCoexistsWithMetalLB(t *testing.T) {
	n := nodeNamed(t, "node-c")
	if err := cfg.Stop(lab.SpeakerName(n), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if !cfg.Running(lab.SpeakerName(n)) {
			_ = cfg.StartSpeaker(n)
		}
		waitMembers(t)
	}()
	var tcp net.Listener
	var udp net.PacketConn
	err := nsrun.In(n.NS, func() error {
		var err error
		if tcp, err = net.Listen("tcp", ":7946"); err != nil {
			return err
		}
		udp, err = net.ListenPacket("udp", ":7946")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tcp.Close(); _ = udp.Close() }()
	if err := cfg.StartSpeaker(n); err != nil {
		t.Fatal(err)
	}
	waitMembers(t)
	out, err := exec.CommandContext(t.Context(), "ip", "netns", "exec", n.NS, "ss", "-Htlnu").CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	want := netip.AddrPortFrom(n.IPv4, 7947).String()
	var mine []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 5 && strings.HasSuffix(f[4], ":7947") {
			mine = append(mine, f[0]+" "+f[4])
		}
	}
	if len(mine) != 2 || !strings.HasSuffix(mine[0], " "+want) || !strings.HasSuffix(mine[1], " "+want) {
		t.Errorf("the member list listens on %v, want UDP and TCP on %s only", mine, want)
	}
}

// TestCleanupLeavesNothing: ironlb-speaker --cleanup, as an uninstall runs
// it, leaves on the node no XDP or TC program of ours, no pinned map and
// no managed neighbour entry.
func TestCleanupLeavesNothing(t *testing.T) {
	needXDP(t)
	n := nodeNamed(t, "node-c")
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(t.Context(), "ip", append([]string{"netns", "exec", n.NS}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
		return string(out)
	}
	// bpftool names the TC program; ip link shows an attached XDP one.
	progs := func() string {
		return run("bpftool", "net", "show", "dev", "eth0") + run("ip", "-d", "link", "show", "dev", "eth0")
	}
	managed := func() string { return run("ip", "-d", "neigh", "show", "dev", "eth0") }
	if p := progs(); !strings.Contains(p, "ironlb") || !strings.Contains(p, "prog/xdp") {
		t.Fatalf("node-c's eth0 lacks our XDP or TC program to begin with:\n%s", p)
	}
	if m := managed(); !strings.Contains(m, "managed") {
		t.Fatalf("node-c has no managed neighbour entry to begin with:\n%s", m)
	}
	if err := cfg.Stop(lab.SpeakerName(n), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cfg.StartSpeaker(n); err != nil {
			t.Fatal(err)
		}
		waitMembers(t)
	}()
	run(filepath.Join(cfg.Bin, "ironlb-speaker"), "--cleanup", "--bpffs", filepath.Dir(cfg.PinDir(n)))
	if p := progs(); strings.Contains(p, "ironlb") || strings.Contains(p, "prog/xdp") {
		t.Errorf("a program is still attached after --cleanup:\n%s", p)
	}
	if m := managed(); strings.Contains(m, "managed") {
		t.Errorf("managed neighbour entries remain after --cleanup:\n%s", m)
	}
	if _, err := os.Stat(cfg.PinDir(n)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the pins are still there (%v)", err)
	}
}
