package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/lab"
)

// BGP against BIRD 2 in lab-router: the lab always runs it, with the peers
// router-v4 and router-v6 (iBGP, TCP MD5) and the advertisement lab-bgp of
// the pool lab-bgp, which the client reaches through the router.

// bgpService creates a dual-stack Service in the BGP pool and returns its
// IPs (IPv4 first); it is deleted when the test ends.
func bgpService(t *testing.T, name string, mutate func(*corev1.Service)) []netip.Addr {
	t.Helper()
	ips := demoService(t, name, 2, func(s *corev1.Service) {
		s.Annotations = map[string]string{ironlbv1alpha1.AnnotationPool: lab.BGPPool}
		if mutate != nil {
			mutate(s)
		}
	})
	if ips[0].Is6() {
		ips[0], ips[1] = ips[1], ips[0]
	}
	return ips
}

func hostPrefix(ip netip.Addr) string { return netip.PrefixFrom(ip, ip.BitLen()).String() }

// birdNextHops returns the nodes BIRD has a route to prefix from, by their
// addresses' last byte turned into node names (node-a is .11 / ::11).
func birdNextHops(ctx context.Context, prefix string) (map[string]string, error) {
	out := map[string]string{}
	r := cfg.BirdRoute(ctx, prefix)
	if r == "" {
		return out, nil
	}
	// Routes are separated by lines starting with the prefix or with
	// spaces then "unicast"; each has a "BGP.next_hop:" line.
	var cur strings.Builder
	flush := func() {
		block := cur.String()
		cur.Reset()
		for _, line := range strings.Split(block, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "BGP.next_hop: "); ok {
				a, err := netip.ParseAddr(strings.Fields(v)[0])
				if err != nil {
					continue
				}
				for _, n := range cfg.NodeList() {
					if n.IPv4 == a || n.IPv6 == a {
						out[n.Name] = block
					}
				}
			}
		}
	}
	for _, line := range strings.Split(r, "\n") {
		if strings.Contains(line, "unicast [") {
			flush()
		}
		cur.WriteString(line + "\n")
	}
	flush()
	return out, nil
}

// waitBirdNodes waits until BIRD's routes to prefix come from exactly the
// given nodes.
func waitBirdNodes(t *testing.T, prefix string, limit time.Duration, want ...string) map[string]string {
	t.Helper()
	var got map[string]string
	eventually(t, limit, func() error {
		var err error
		got, err = birdNextHops(t.Context(), prefix)
		if err != nil {
			return err
		}
		if len(got) != len(want) {
			return fmt.Errorf("BIRD has %s from %v, want %v", prefix, keys(got), want)
		}
		for _, w := range want {
			if _, ok := got[w]; !ok {
				return fmt.Errorf("BIRD has %s from %v, want %v", prefix, keys(got), want)
			}
		}
		return nil
	})
	return got
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// waitSessions waits until BIRD has every node's IPv4 and IPv6 session
// Established.
func waitSessions(t *testing.T, limit time.Duration) {
	t.Helper()
	if err := cfg.WaitBirdSessions(t.Context(), limit); err != nil {
		t.Fatal(err)
	}
}

// TestBGPAdvertise: every node advertises the Service's /32 and /128 with
// the advertisement's communities and local preference; the router
// installs them as ECMP routes and the client reaches the Service through
// it; Announcements and the BGPPeers' status say so.
func TestBGPAdvertise(t *testing.T) {
	waitSessions(t, 30*time.Second)
	ips := bgpService(t, "bgp-demo", nil)
	for _, ip := range ips {
		routes := waitBirdNodes(t, hostPrefix(ip), 20*time.Second, allNodes()...)
		for node, r := range routes {
			for _, want := range []string{"BGP.local_pref: 150", "(64512,100)", "(65535,65281)", "(64512, 1, 2)"} {
				if !strings.Contains(r, want) {
					t.Errorf("%s from %s: no %q in\n%s", ip, node, want, r)
				}
			}
		}
	}
	raw, err := exec.CommandContext(t.Context(), "ip", "-n", lab.RouterNS, "route", "show", ips[0].String()).CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	out := string(raw)
	if n := strings.Count(out, "nexthop via"); n != cfg.Nodes {
		t.Errorf("the router's route to %s has %d next hops, want %d:\n%s", ips[0], n, cfg.Nodes, out)
	}
	for _, ip := range ips {
		pod, client := getSoon(t, ip)
		// kube-proxy (--dataplane=kernel) masquerades a Cluster
		// Service's traffic to another node, as it does everywhere: the
		// client's address is kept by the XDP data plane only.
		keeps := cfg.Dataplane == "xdp"
		if !strings.HasPrefix(pod, "demo-") || (keeps && client != lab.ClientIPv4 && client != lab.ClientIPv6) {
			t.Errorf("%s through the router: %s saw %s", ip, pod, client)
		}
		// The client's next packets still go through the router: it
		// took no redirect straight to the node that answered.
		router := lab.RouterIPv4
		if ip.Is6() {
			router = lab.RouterIPv6
		}
		raw, err := exec.CommandContext(t.Context(), "ip", "-n", lab.ClientNS, "route", "get", ip.String()).CombinedOutput()
		if err != nil {
			t.Fatal(err)
		}
		if r := string(raw); !strings.Contains(r, " via "+router+" ") || strings.Contains(r, "redirected") {
			t.Errorf("after a request through the router, lab-client's route to %s goes around it:\n%s", ip, r)
		}
	}
	// Who announces what: one BGP Announcement per node and IP.
	eventually(t, 20*time.Second, func() error {
		var list ironlbv1alpha1.AnnouncementList
		if err := cl.List(t.Context(), &list, client.InNamespace("default")); err != nil {
			return err
		}
		n := 0
		for _, a := range list.Items {
			if a.Spec.Service == "bgp-demo" && a.Spec.Protocol == ironlbv1alpha1.ProtocolBGP {
				n++
				want := lab.BGPPeerV4
				if netip.MustParseAddr(a.Spec.IP).Is6() {
					want = lab.BGPPeerV6
				}
				if len(a.Spec.Peers) != 1 || a.Spec.Peers[0] != want {
					return fmt.Errorf("%s by %s to %v, want %s", a.Spec.IP, a.Spec.Node, a.Spec.Peers, want)
				}
			}
		}
		if n != 2*cfg.Nodes {
			return fmt.Errorf("%d BGP Announcements, want %d", n, 2*cfg.Nodes)
		}
		return nil
	})
	eventually(t, 20*time.Second, func() error {
		for _, name := range []string{lab.BGPPeerV4, lab.BGPPeerV6} {
			var p ironlbv1alpha1.BGPPeer
			if err := cl.Get(t.Context(), client.ObjectKey{Name: name}, &p); err != nil {
				return err
			}
			up := 0
			for _, s := range p.Status.Nodes {
				if s.State == "Established" && s.Prefixes >= 1 {
					up++
				}
			}
			if up != cfg.Nodes {
				return fmt.Errorf("%s status: %+v", name, p.Status.Nodes)
			}
		}
		return nil
	})
}

// TestBGPLocal: with externalTrafficPolicy Local only the nodes with a
// ready endpoint advertise.
func TestBGPLocal(t *testing.T) {
	waitSessions(t, 30*time.Second)
	const name = "bgp-local"
	ips := bgpService(t, name, func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(pathReport(name, ips[0]))
		}
	})
	ready := map[string]bool{}
	for _, p := range cfg.Pods() {
		ready[p.Name] = p.Node.Name == "node-b"
	}
	if err := cfg.SetEndpointsReady(t.Context(), cl, name, ready); err != nil {
		t.Fatal(err)
	}
	waitBirdNodes(t, hostPrefix(ips[0]), 20*time.Second, "node-b")
	waitBirdNodes(t, hostPrefix(ips[1]), 20*time.Second, "node-b")
	for _, p := range cfg.Pods() {
		ready[p.Name] = p.Node.Name != "node-a"
	}
	if err := cfg.SetEndpointsReady(t.Context(), cl, name, ready); err != nil {
		t.Fatal(err)
	}
	waitBirdNodes(t, hostPrefix(ips[0]), 20*time.Second, "node-b", "node-c")
	// Five answers in a row from node-b's and node-c's pods, each a new
	// connection hashed by the router's ECMP: one alone could come
	// from the right node by chance.
	getSoon(t, ips[0])
	eventually(t, 20*time.Second, func() error {
		for range 5 {
			pod, _, err := tryGet(clientHTTP(), ips[0])
			if err != nil {
				return err
			}
			if strings.HasPrefix(pod, "demo-a-") {
				return fmt.Errorf("%s answered a Local Service from a node without a ready endpoint", pod)
			}
		}
		return nil
	})
}

// TestBGPSpeakerDeath: SIGTERM withdraws a node's routes before the
// speaker exits; kill -9 leaves them until the router's hold time (3 s)
// expires. 50 connections through the router survive the node leaving the
// ECMP set and joining it again.
func TestBGPSpeakerDeath(t *testing.T) {
	needXDP(t)
	waitSessions(t, 30*time.Second)
	ips := bgpService(t, "bgp-death", nil)
	pfx := hostPrefix(ips[0])
	waitBirdNodes(t, pfx, 20*time.Second, allNodes()...)
	const n = 50
	conns := openEchoes(t, ips[0], n)

	node := nodeNamed(t, "node-b")
	start := time.Now()
	if err := cfg.Stop(lab.SpeakerName(node), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The speaker has exited: its routes must already be gone (BIRD
	// processes the withdrawal within milliseconds of receiving it).
	waitBirdNodes(t, pfx, 2*time.Second, "node-a", "node-c")
	t.Logf("SIGTERM of node-b's speaker: its route gone from BIRD once the process had exited, %s after the signal (ironlb-lab bench bgp times the route alone)", time.Since(start).Round(time.Millisecond))
	checkEchoes(t, conns, "node-b left the ECMP set (SIGTERM)")

	if err := cfg.StartSpeaker(node); err != nil {
		t.Fatal(err)
	}
	waitBirdNodes(t, pfx, 30*time.Second, allNodes()...)
	checkEchoes(t, conns, "node-b joined the ECMP set again")

	// kill -9: the speaker withdraws nothing, but the kernel closes its
	// sessions, and BIRD drops the routes at once.
	victim := nodeNamed(t, "node-c")
	start = time.Now()
	if err := cfg.Kill(lab.SpeakerName(victim)); err != nil {
		t.Fatal(err)
	}
	waitBirdNodes(t, pfx, lab.BGPHoldTime, "node-a", "node-b")
	t.Logf("kill -9 of node-c's speaker: its route gone from BIRD after %s (the kernel closed the session)", time.Since(start).Round(time.Millisecond))
	checkEchoes(t, conns, "node-c left the ECMP set (kill -9)")
	if err := cfg.StartSpeaker(victim); err != nil {
		t.Fatal(err)
	}
	waitBirdNodes(t, pfx, 30*time.Second, allNodes()...)
	waitMembers(t)
	checkEchoes(t, conns, "node-c joined the ECMP set again")
}

// cutUntilWithdrawn cuts victim's link and returns how long BIRD took to
// drop its route to pfx; the link comes back with the returned restore.
func cutUntilWithdrawn(t *testing.T, victim lab.Node, pfx string, limit time.Duration, others ...string) (time.Duration, func()) {
	t.Helper()
	start := time.Now()
	if err := cfg.CutLink(t.Context(), victim); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := cfg.RestoreLink(context.WithoutCancel(t.Context()), victim); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(restore)
	waitBirdNodes(t, pfx, limit, others...)
	return time.Since(start), restore
}

// updatePeers changes the spec of the named BGPPeers.
func updatePeers(t *testing.T, mutate func(*ironlbv1alpha1.BGPPeerSpec), names ...string) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	for _, name := range names {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var p ironlbv1alpha1.BGPPeer
			if err := cl.Get(ctx, client.ObjectKey{Name: name}, &p); err != nil {
				return err
			}
			mutate(&p.Spec)
			return cl.Update(ctx, &p)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// onEveryNode tells whether every node's entry in the lab BGPPeers'
// status satisfies ok (what describes it in the error).
func onEveryNode(ctx context.Context, what string, ok func(ironlbv1alpha1.BGPSessionStatus) bool) error {
	for _, name := range []string{lab.BGPPeerV4, lab.BGPPeerV6} {
		var p ironlbv1alpha1.BGPPeer
		if err := cl.Get(ctx, client.ObjectKey{Name: name}, &p); err != nil {
			return err
		}
		n := 0
		for _, s := range p.Status.Nodes {
			if ok(s) {
				n++
			}
		}
		if n != cfg.Nodes {
			return fmt.Errorf("BGPPeer %s: %s on %d of %d nodes: %+v", name, what, n, cfg.Nodes, p.Status.Nodes)
		}
	}
	return nil
}

// TestBGPLinkCut: a node that vanishes without a word (its link cut: no
// FIN, no notification) keeps its routes until the router's hold time
// (3 s) expires; with BFD (100 ms x 3) the router drops them once BFD
// declares the node down, an order of magnitude sooner, and says BFD did
// it. Back, the node advertises again. Both are measured in the same run.
func TestBGPLinkCut(t *testing.T) {
	waitSessions(t, 30*time.Second)
	ips := bgpService(t, "bgp-hold", nil)
	pfx := hostPrefix(ips[0])
	waitBirdNodes(t, pfx, 20*time.Second, allNodes()...)
	victim := nodeNamed(t, "node-a")
	proto := "node_" + victim.Letter + "_4"

	hold, restore := cutUntilWithdrawn(t, victim, pfx, lab.BGPHoldTime+3*time.Second, "node-b", "node-c")
	t.Logf("node-a cut off: its route gone from BIRD after %s (hold time %s)", hold.Round(time.Millisecond), lab.BGPHoldTime)
	if hold < lab.BGPHoldTime-time.Second {
		t.Errorf("the route went after %s, before the hold time could expire", hold)
	}
	restore()
	waitBirdNodes(t, pfx, 30*time.Second, allNodes()...)
	waitMembers(t)

	if err := cfg.SetBFD(t.Context(), cl, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cfg.SetBFD(context.WithoutCancel(t.Context()), cl, false); err != nil {
			t.Error(err)
		}
	})
	// Every node reports BFD Up with both router addresses, and BIRD
	// has the session to node-a Up.
	eventually(t, 30*time.Second, func() error {
		if err := onEveryNode(t.Context(), "BFD Up", func(s ironlbv1alpha1.BGPSessionStatus) bool {
			return s.BFD == "Up" && s.State == "Established"
		}); err != nil {
			return err
		}
		out, err := cfg.Birdc(t.Context(), "show", "bfd", "sessions")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == victim.IPv4.String() {
				if f[2] != "Up" {
					return fmt.Errorf("BIRD's BFD session with %s: %s", victim.IPv4, l)
				}
				return nil
			}
		}
		return fmt.Errorf("BIRD has no BFD session with %s:\n%s", victim.IPv4, out)
	})
	out, errOut, code := ironlbctl(t, "", "status")
	for _, name := range []string{lab.BGPPeerV4, lab.BGPPeerV6} {
		n := 0
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) >= 7 && f[0] == name && f[3] == "Established" && f[6] == "Up" {
				n++
			}
		}
		if n != cfg.Nodes {
			t.Errorf("ironlbctl status (exit %d) shows BFD Up for %s on %d nodes, want %d:\n%s%s", code, name, n, cfg.Nodes, out, errOut)
		}
	}

	metric := func(name string) float64 {
		t.Helper()
		var v float64
		eventually(t, 20*time.Second, func() error {
			sp, err := tryScrape(victim.NS, "127.0.0.1:7473")
			if err != nil {
				return err
			}
			var ok bool
			if v, ok = value(sp, name, `peer="`+lab.BGPPeerV4+`"`); !ok {
				return fmt.Errorf("node-a's speaker exports no %s{peer=%s}", name, lab.BGPPeerV4)
			}
			return nil
		})
		return v
	}
	if v := metric("ironlb_bfd_session_up"); v != 1 {
		t.Errorf("node-a: ironlb_bfd_session_up{peer=router-v4} = %v with BFD Up", v)
	}
	downs := metric("ironlb_bfd_session_down_total")
	withBFD, restore := cutUntilWithdrawn(t, victim, pfx, lab.BGPHoldTime+3*time.Second, "node-b", "node-c")
	out, err := cfg.Birdc(t.Context(), "show", "protocols", "all", proto)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "BFD session down") {
		t.Errorf("BIRD's %s did not go down by BFD:\n%s", proto, out)
	}
	if withBFD >= hold {
		t.Errorf("with BFD the route went after %s, no sooner than by the hold time (%s)", withBFD, hold)
	}
	t.Logf("FIGURE link cut to route gone at BIRD: %s by the hold time (%s), %s with BFD (%s x %d): %.1fx sooner",
		hold.Round(time.Millisecond), lab.BGPHoldTime, withBFD.Round(time.Millisecond), lab.BFDInterval, lab.BFDMultiplier,
		float64(hold)/float64(withBFD))
	restore()
	// Back: BFD comes Up again, the node lets its BGP session open, and
	// the route returns.
	waitBirdNodes(t, pfx, 30*time.Second, allNodes()...)
	waitMembers(t)
	// node-a's own BFD saw the router go silent while it was cut off,
	// and closed its BGP session (reopened once BFD was Up again).
	if v := metric("ironlb_bfd_session_down_total"); v < downs+1 {
		t.Errorf("node-a: ironlb_bfd_session_down_total{peer=router-v4} went from %v to %v over the cut, want one more", downs, v)
	}
}

// TestBGPPassword: a wrong TCP MD5 password keeps the sessions down and
// the BGPPeer's status says what to check; the right one brings them up.
// (Last of the BGP tests: it takes every session down for a while.)
func TestBGPPassword(t *testing.T) {
	waitSessions(t, 30*time.Second)
	ctx := context.WithoutCancel(t.Context())
	setPassword := func(pw string) {
		t.Helper()
		var s corev1.Secret
		if err := cl.Get(ctx, client.ObjectKey{Namespace: lab.SystemNS, Name: lab.BGPSecret}, &s); err != nil {
			t.Error(err)
			return
		}
		s.Data = map[string][]byte{"password": []byte(pw)}
		if err := cl.Update(ctx, &s); err != nil {
			t.Error(err)
		}
	}
	setPassword("a wrong one")
	t.Cleanup(func() { setPassword(lab.BGPPassword) })
	eventually(t, 20*time.Second, func() error {
		out, err := cfg.Birdc(t.Context(), "show", "protocols")
		if err != nil {
			return err
		}
		if n := strings.Count(out, "Established"); n != 0 {
			return fmt.Errorf("%d sessions still Established", n)
		}
		return nil
	})
	eventually(t, 40*time.Second, func() error {
		var p ironlbv1alpha1.BGPPeer
		if err := cl.Get(t.Context(), client.ObjectKey{Name: lab.BGPPeerV4}, &p); err != nil {
			return err
		}
		if len(p.Status.Nodes) != cfg.Nodes {
			return fmt.Errorf("status %+v", p.Status.Nodes)
		}
		for _, s := range p.Status.Nodes {
			if s.State == "Established" || !strings.Contains(s.Message, "MD5 password") {
				return fmt.Errorf("%s: %s %q", s.Node, s.State, s.Message)
			}
		}
		return nil
	})
	var events corev1.EventList
	if err := cl.List(t.Context(), &events, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range events.Items {
		if e.InvolvedObject.Kind == "BGPPeer" && e.Type == corev1.EventTypeWarning &&
			(e.Reason == "SessionDown" || e.Reason == "SessionNotEstablished") {
			found = true
		}
	}
	if !found {
		t.Error("no Warning Event on the BGPPeer for the session that went down")
	}
	setPassword(lab.BGPPassword)
	waitSessions(t, 30*time.Second)
}

// bgpOutage prepares the BGP half of TestAPIServerOutage (which stops the
// API server once, last of all: the controller exits when it loses its
// lease, as it should, and nothing in the lab restarts it): a Service in
// the BGP pool advertised by every node. The returned check, called during
// the outage, asserts that every node keeps advertising it for three hold
// times.
func bgpOutage(t *testing.T) func() {
	waitSessions(t, 30*time.Second)
	ips := bgpService(t, "bgp-outage", nil)
	pfx := hostPrefix(ips[0])
	waitBirdNodes(t, pfx, 20*time.Second, allNodes()...)
	return func() {
		t.Helper()
		// Three hold times, and at least one full resync (10 s): a sync
		// without the API server must keep each session's TCP MD5
		// password (read before the outage), or BIRD, which wants it,
		// would drop the session and its routes.
		until := time.Now().Add(max(3*lab.BGPHoldTime, 12*time.Second))
		for time.Now().Before(until) {
			got, err := birdNextHops(t.Context(), pfx)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != cfg.Nodes {
				t.Fatalf("without an API server BIRD has %s from %v only", pfx, keys(got))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if pod, _ := get(t, clientHTTP(), ips[0]); !strings.HasPrefix(pod, "demo-") {
			t.Errorf("without an API server %s answered %q", ips[0], pod)
		}
	}
}

// getSoon is get through the router, retried for a few seconds: with
// --dataplane=kernel the route can reach the router before kube-proxy has
// written the Service's rules (the XDP data plane is programmed before a
// node announces).
func getSoon(t *testing.T, ip netip.Addr) (pod, client string) {
	t.Helper()
	// With --dataplane=kernel the first answer waits for kube-proxy to
	// program the new Service, which took over 10 s once in CI.
	eventually(t, 30*time.Second, func() error {
		var err error
		pod, client, err = tryGet(clientHTTP(), ip)
		return err
	})
	return pod, client
}
