package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/pkg/announce"
	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/lab"
)

// macOf returns a node's eth0 MAC.
func macOf(t *testing.T, node string) string {
	t.Helper()
	macs, err := cfg.MACs()
	if err != nil {
		t.Fatal(err)
	}
	for mac, n := range macs {
		if n.Name == node {
			return mac
		}
	}
	t.Fatalf("no MAC for node %s", node)
	return ""
}

// udpEcho sends one datagram to VIP:7 from the client and returns the answer.
func udpEcho(ctx context.Context, vip netip.Addr, msg string) (string, error) {
	conn, err := lab.DialIn(ctx, lab.ClientNS, "udp", net.JoinHostPort(vip.String(), "7"))
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

var arpReply = regexp.MustCompile(`bytes from ([0-9a-f:]{17}) \(`)

// arpingMACs runs the real arping from lab-client and returns the distinct
// MACs that answered.
func arpingMACs(t *testing.T, vip netip.Addr) []string {
	t.Helper()
	macs, err := tryArping(t.Context(), vip)
	if err != nil {
		t.Fatal(err)
	}
	return macs
}

// tryArping is arpingMACs for polling: a failure is an error to retry on.
func tryArping(ctx context.Context, vip netip.Addr) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", lab.ClientNS, "arping", "-c", "3", "-w", "1", "-I", "eth0", vip.String()).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("arping %s: %v\n%s", vip, err, out)
	}
	var macs []string
	for _, m := range arpReply.FindAllStringSubmatch(string(out), -1) {
		if !slices.Contains(macs, m[1]) {
			macs = append(macs, m[1])
		}
	}
	return macs, nil
}

// expectedOwner ranks the eligible nodes the way every speaker does.
func expectedOwner(ip netip.Addr, nodes []string) string {
	n := slices.Clone(nodes)
	announce.Rank(ip, n)
	return n[0]
}

func allNodes() []string {
	var out []string
	for _, n := range cfg.NodeList() {
		out = append(out, n.Name)
	}
	return out
}

func TestAssignedAndAnnounced(t *testing.T) {
	if !netip.MustParsePrefix(lab.PoolIPv4).Contains(vip4) {
		t.Errorf("IPv4 VIP %s is outside the pool %s", vip4, lab.PoolIPv4)
	}
	if !netip.MustParsePrefix(lab.PoolIPv6).Contains(vip6) {
		t.Errorf("IPv6 VIP %s is outside the pool %s", vip6, lab.PoolIPv6)
	}
	for _, ip := range []netip.Addr{vip4, vip6} {
		want := expectedOwner(ip, allNodes())
		oneAnnouncer(t, lab.DemoService, ip, func(got string) error {
			if got != want {
				return fmt.Errorf("%s announced by %s, want the rendezvous owner %s", ip, got, want)
			}
			return nil
		})
	}
}

func TestReachableOverTCPAndUDP(t *testing.T) {
	ctx := t.Context()
	body, err := cfg.WaitHTTP(ctx, vip4, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(body, "demo-") {
		t.Errorf("http://%s/ answered %q, want a backend's name", vip4, body)
	}
	// TCP echo keeps the connection and answers each line.
	conn, err := lab.DialIn(ctx, lab.ClientNS, "tcp", net.JoinHostPort(vip4.String(), "7"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	var pod string
	for i := range 3 {
		if _, err := fmt.Fprintf(conn, "line %d\n", i); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("TCP echo: %v", err)
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[1] != "line" || f[2] != fmt.Sprint(i) {
			t.Fatalf("TCP echo answered %q", line)
		}
		if pod != "" && f[0] != pod {
			t.Errorf("one connection answered by %s then %s", pod, f[0])
		}
		pod = f[0]
	}
	for _, vip := range []netip.Addr{vip4, vip6} {
		eventually(t, 10*time.Second, func() error {
			got, err := udpEcho(ctx, vip, "ping")
			if err != nil {
				return err
			}
			if !strings.HasPrefix(got, "demo-") || !strings.HasSuffix(got, " ping") {
				return fmt.Errorf("UDP echo from %s answered %q", vip, got)
			}
			return nil
		})
	}
}

func TestARPAnsweredByOwnerOnly(t *testing.T) {
	owner := oneAnnouncer(t, lab.DemoService, vip4, nil)
	macs := arpingMACs(t, vip4)
	if want := macOf(t, owner); len(macs) != 1 || macs[0] != want {
		t.Errorf("arping %s saw MACs %v, want only %s of %s", vip4, macs, want, owner)
	}
}

func TestNDPAnsweredByOwner(t *testing.T) {
	ctx := t.Context()
	owner := oneAnnouncer(t, lab.DemoService, vip6, nil)
	eventually(t, 10*time.Second, func() error {
		_, err := udpEcho(ctx, vip6, "v6")
		return err
	})
	out, err := exec.CommandContext(ctx, "ip", "-n", lab.ClientNS, "-6", "neigh", "show", vip6.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ip neigh: %v: %s", err, out)
	}
	if want := macOf(t, owner); !strings.Contains(string(out), "lladdr "+want) {
		t.Errorf("the client's neighbour entry for %s is %q, want lladdr %s of %s", vip6, strings.TrimSpace(string(out)), want, owner)
	}
}

func testFailover(t *testing.T, death lab.Death) {
	ctx := t.Context()
	p, err := cfg.StartProbe(ctx, vip4)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r, err := cfg.Failover(ctx, p, death)
	if err != nil {
		t.Fatal(err)
	}
	if r.To.Name == "" || r.To.Name == r.From.Name {
		t.Fatalf("after %s of %s the VIP answered through %q, want another node", death, r.From.Name, r.To.Name)
	}
	t.Logf("%s of %s: answers through %s after %s", death, r.From.Name, r.To.Name, r.Took.Round(time.Millisecond))
	// A functional bound, not a speed target (make bench measures that):
	// the tuned failure detection, not memberlist's multi-second LAN
	// defaults, and on SIGTERM the leaving message, not detection.
	bound := 3 * time.Second
	if death == lab.StopSpeaker {
		bound = time.Second
	}
	if r.Took > bound {
		t.Errorf("%s of %s: the VIP answered again after %s, over the %s bound", death, r.From.Name, r.Took.Round(time.Millisecond), bound)
	}
	// The dead part is back: the rendezvous owner answers again, and the
	// Announcement objects agree with the wire.
	settled, err := cfg.WaitSettled(ctx, p, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := expectedOwner(vip4, allNodes())
	oneAnnouncer(t, lab.DemoService, vip4, func(got string) error {
		if got != want {
			return fmt.Errorf("announced by %s, want %s", got, want)
		}
		return nil
	})
	eventually(t, 10*time.Second, func() error {
		if n, _ := cfg.WaitSettled(ctx, p, 5*time.Second); n.Name != want {
			return fmt.Errorf("answers come through %s (settled %s), want %s", n.Name, settled.Name, want)
		}
		return nil
	})
}

func TestFailoverKillSpeaker(t *testing.T) { testFailover(t, lab.KillSpeaker) }

func TestFailoverLinkDown(t *testing.T) { testFailover(t, lab.CutLink) }

func TestFailoverSIGTERM(t *testing.T) { testFailover(t, lab.StopSpeaker) }

func TestExcludedNodeNeverAnnounces(t *testing.T) {
	ctx := t.Context()
	owner := oneAnnouncer(t, lab.DemoService, vip4, nil)
	setLabel := func(node string, on bool) {
		t.Helper()
		var n corev1.Node
		if err := cl.Get(ctx, types.NamespacedName{Name: node}, &n); err != nil {
			t.Fatal(err)
		}
		if on {
			n.Labels[ironlbv1alpha1.ExcludeLabel] = ""
		} else {
			delete(n.Labels, ironlbv1alpha1.ExcludeLabel)
		}
		if err := cl.Update(ctx, &n); err != nil {
			t.Fatal(err)
		}
	}
	setLabel(owner, true)
	defer setLabel(owner, false)
	rest := slices.DeleteFunc(allNodes(), func(s string) bool { return s == owner })
	want := expectedOwner(vip4, rest)
	oneAnnouncer(t, lab.DemoService, vip4, func(got string) error {
		if got != want {
			return fmt.Errorf("announced by %s, want %s while %s is excluded", got, want, owner)
		}
		return nil
	})
	eventually(t, 10*time.Second, func() error {
		macs, err := tryArping(t.Context(), vip4)
		if err != nil {
			return err
		}
		if w := macOf(t, want); len(macs) != 1 || macs[0] != w {
			return fmt.Errorf("arping saw %v, want only %s of %s", macs, w, want)
		}
		return nil
	})
}

func TestLocalPolicyFollowsReadyEndpoints(t *testing.T) {
	ctx := t.Context()
	const name = "local"
	err := cfg.CreateDemoService(ctx, cl, name, func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.IPFamilyPolicy = new(corev1.IPFamilyPolicySingleStack)
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cl.Delete(context.WithoutCancel(ctx), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}})
	}()
	ips, err := lab.WaitServiceIPs(ctx, cl, types.NamespacedName{Namespace: "default", Name: name}, 1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ip := ips[0]
	// Only one node at a time has ready endpoints: the IP follows it, even
	// against the rendezvous order.
	for _, only := range []string{"node-c", "node-a"} {
		ready := map[string]bool{}
		for _, p := range cfg.Pods() {
			ready[p.Name] = p.Node.Name == only
		}
		if err := cfg.SetEndpointsReady(ctx, cl, name, ready); err != nil {
			t.Fatal(err)
		}
		oneAnnouncer(t, name, ip, func(got string) error {
			if got != only {
				return fmt.Errorf("announced by %s, want %s, the only node with a ready endpoint", got, only)
			}
			return nil
		})
		body, err := cfg.WaitHTTP(ctx, ip, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		// Local keeps the client's address and serves from the node itself.
		if !strings.HasPrefix(body, "demo-"+strings.TrimPrefix(only, "node-")+"-") || !strings.HasSuffix(body, lab.ClientIPv4) {
			t.Errorf("http://%s/ answered %q, want a pod of %s seeing %s", ip, body, only, lab.ClientIPv4)
		}
	}
	// No ready endpoint anywhere: nobody announces.
	none := map[string]bool{}
	for _, p := range cfg.Pods() {
		none[p.Name] = false
	}
	if err := cfg.SetEndpointsReady(ctx, cl, name, none); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		got, err := announcers(ctx, name, ip)
		if err != nil {
			return err
		}
		if len(got) != 0 {
			return fmt.Errorf("%s without ready endpoints is announced by %v", ip, got)
		}
		return nil
	})
}

func TestSharedIPHasOneAnnouncer(t *testing.T) {
	ctx := t.Context()
	names := []string{"share-http", "share-udp"}
	ports := [][]corev1.ServicePort{{lab.DemoPorts[0]}, {lab.DemoPorts[2]}}
	for i, name := range names {
		err := cfg.CreateDemoService(ctx, cl, name, func(s *corev1.Service) {
			s.Annotations = map[string]string{ironlbv1alpha1.AnnotationSharingKey: "e2e"}
			s.Spec.Ports = ports[i]
			s.Spec.IPFamilyPolicy = new(corev1.IPFamilyPolicySingleStack)
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
			if i == 1 {
				s.Annotations[ironlbv1alpha1.AnnotationIPs] = "10.89.100.200"
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = cl.Delete(context.WithoutCancel(ctx), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}})
		}()
	}
	// The first Service asks for the same IP by annotation after the fact.
	var first corev1.Service
	if err := cl.Get(ctx, types.NamespacedName{Namespace: "default", Name: names[0]}, &first); err != nil {
		t.Fatal(err)
	}
	first.Annotations[ironlbv1alpha1.AnnotationIPs] = "10.89.100.200"
	if err := cl.Update(ctx, &first); err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("10.89.100.200")
	for _, name := range names {
		eventually(t, 20*time.Second, func() error {
			ips, err := lab.WaitServiceIPs(ctx, cl, types.NamespacedName{Namespace: "default", Name: name}, 1, time.Second)
			if err != nil {
				return err
			}
			if ips[0] != ip {
				return fmt.Errorf("%s has %v, want %s", name, ips, ip)
			}
			return nil
		})
	}
	want := expectedOwner(ip, allNodes())
	for _, name := range names {
		oneAnnouncer(t, name, ip, func(got string) error {
			if got != want {
				return fmt.Errorf("%s: %s announced by %s, want %s for both Services", name, ip, got, want)
			}
			return nil
		})
	}
	if macs := arpingMACs(t, ip); len(macs) != 1 || macs[0] != macOf(t, want) {
		t.Errorf("arping %s saw %v, want only %s", ip, macs, macOf(t, want))
	}
	if _, err := udpEcho(ctx, ip, "shared"); err != nil {
		t.Errorf("UDP through the shared IP: %v", err)
	}
}

func TestAnnouncingEvent(t *testing.T) {
	owner := oneAnnouncer(t, lab.DemoService, vip4, nil)
	eventually(t, 10*time.Second, func() error {
		var list eventsv1.EventList
		if err := cl.List(t.Context(), &list, client.InNamespace("default")); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Regarding.Name == lab.DemoService && e.Reason == "Announcing" &&
				strings.Contains(e.Note, vip4.String()) && strings.Contains(e.Note, owner) && strings.Contains(e.Note, "eth0") {
				return nil
			}
		}
		return fmt.Errorf("no Announcing event for %s naming %s and eth0 among %d events", vip4, owner, len(list.Items))
	})
}

// TestInterfaceMissing: an L2Advertisement naming an interface that one
// node lacks never makes that node the owner (on every IP, including those
// it would rank first for); one naming an interface no node has leaves the
// IP unannounced, says so with one Warning Event and metric, and no
// Announcement claims it.
func TestInterfaceMissing(t *testing.T) {
	ctx := t.Context()
	mkPool := func(name, addrs, iface string) {
		t.Helper()
		pool := &ironlbv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: ironlbv1alpha1.IPPoolSpec{Addresses: []ironlbv1alpha1.AddressRange{ironlbv1alpha1.AddressRange(addrs)}}}
		adv := &ironlbv1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: ironlbv1alpha1.L2AdvertisementSpec{PoolSelection: ironlbv1alpha1.PoolSelection{IPPools: []string{name}}, Interfaces: []string{iface}}}
		for _, o := range []client.Object{pool, adv} {
			if err := cl.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cl.Delete(context.WithoutCancel(ctx), o) })
		}
	}
	// lbtest0 on node-a and node-b only.
	for _, n := range []string{"node-a", "node-b"} {
		ns := nodeNamed(t, n).NS
		// A veth pair (the lab's kernel may lack the dummy driver).
		for _, args := range [][]string{{"link", "add", "lbtest0", "type", "veth", "peer", "name", "lbtest0p"},
			{"link", "set", "lbtest0p", "up"}, {"link", "set", "lbtest0", "up"}} {
			if out, err := exec.CommandContext(ctx, "ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v in %s: %v: %s", args, ns, err, out)
			}
		}
		t.Cleanup(func() { _ = exec.Command("ip", "-n", ns, "link", "del", "lbtest0").Run() })
	}
	mkPool("ifaces-some", "10.89.102.0/29", "lbtest0")
	inPool := func(pool string) func(*corev1.Service) {
		return func(s *corev1.Service) {
			s.Annotations = map[string]string{ironlbv1alpha1.AnnotationPool: pool}
			s.Spec.IPFamilyPolicy = new(corev1.IPFamilyPolicySingleStack)
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		}
	}
	cRanksFirst := 0
	for i := range 6 {
		name := fmt.Sprintf("ifaces-%d", i)
		ip := demoService(t, name, 1, inPool("ifaces-some"))[0]
		if expectedOwner(ip, allNodes()) == "node-c" {
			cRanksFirst++
		}
		var ann []string
		oneAnnouncer(t, name, ip, func(node string) error {
			if node == "node-c" {
				return fmt.Errorf("%s is announced by node-c, which has no lbtest0", ip)
			}
			var list ironlbv1alpha1.AnnouncementList
			if err := cl.List(ctx, &list, client.InNamespace("default")); err != nil {
				return err
			}
			for _, a := range list.Items {
				if a.Spec.IP == ip.String() {
					ann = a.Spec.Interfaces
				}
			}
			if !slices.Equal(ann, []string{"lbtest0"}) {
				return fmt.Errorf("%s announced on %v, want lbtest0", ip, ann)
			}
			return nil
		})
	}
	if cRanksFirst == 0 {
		t.Fatal("the test proves nothing: node-c ranks first for none of the IPs")
	}

	// Nobody has eht0.
	mkPool("ifaces-none", "10.89.102.64/29", "eht0")
	ip := demoService(t, "ifaces-none", 1, inPool("ifaces-none"))[0]
	eventually(t, 20*time.Second, func() error {
		var list eventsv1.EventList
		if err := cl.List(ctx, &list, client.InNamespace("default")); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Regarding.Name == "ifaces-none" && e.Type == corev1.EventTypeWarning && e.Reason == "NoInterface" &&
				strings.Contains(e.Note, "eht0") && strings.Contains(e.Note, ip.String()) {
				return nil
			}
		}
		return fmt.Errorf("no NoInterface Warning Event for %s", ip)
	})
	reports := 0.0
	for _, n := range cfg.NodeList() {
		v, _ := value(scrape(t, n.NS, "127.0.0.1:7473"), "ironlb_unannounced_ips", `reason="NoInterface"`)
		reports += v
	}
	if reports != 1 {
		t.Errorf("ironlb_unannounced_ips{reason=NoInterface} adds up to %v over the speakers, want 1 (one reporter)", reports)
	}
	for range 20 {
		if got, err := announcers(ctx, "ifaces-none", ip); err != nil || len(got) != 0 {
			t.Fatalf("%s is claimed by %v (%v) though no node can answer for it", ip, got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestIPv6Failover: the IPv6 VIP's owner is killed; another node takes it
// over by NDP (the client's neighbour entry moves to its MAC) and, with
// the XDP data plane, IPv6 connections opened before go on.
func TestIPv6Failover(t *testing.T) {
	ctx := t.Context()
	waitMembers(t)
	owner := oneAnnouncer(t, lab.DemoService, vip6, nil)
	var conns []*echoConn
	if cfg.Dataplane == "xdp" {
		conns = openEchoes(t, vip6, 10)
	}
	n := nodeNamed(t, owner)
	rest := slices.DeleteFunc(allNodes(), func(s string) bool { return s == owner })
	want := expectedOwner(vip6, rest)
	if err := cfg.Kill(lab.SpeakerName(n)); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	defer func() {
		if err := cfg.StartSpeaker(n); err != nil {
			t.Fatal(err)
		}
		waitMembers(t)
	}()
	eventually(t, 10*time.Second, func() error {
		if _, err := udpExchange(ctx, vip6, "ndp", 1); err != nil {
			return err
		}
		out, err := exec.CommandContext(ctx, "ip", "-n", lab.ClientNS, "-6", "neigh", "show", vip6.String()).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if m := macOf(t, want); !strings.Contains(string(out), "lladdr "+m) {
			return fmt.Errorf("the client's neighbour entry for %s is %q, want %s's %s", vip6, strings.TrimSpace(string(out)), want, m)
		}
		return nil
	})
	t.Logf("kill -9 of %s's speaker: %s answers through %s after %s", owner, vip6, want, time.Since(killed).Round(time.Millisecond))
	oneAnnouncer(t, lab.DemoService, vip6, func(got string) error {
		if got != want {
			return fmt.Errorf("announced by %s, want %s", got, want)
		}
		return nil
	})
	if conns != nil {
		checkEchoes(t, conns, "an IPv6 failover")
	}
}
