package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/internal/nsrun"
	"github.com/ironlb/ironlb/pkg/lab"
)

// The data plane's own tests; they need the xdp data plane (the lab's
// default) and are skipped on a lab brought up with the kernel one.
func needXDP(t *testing.T) {
	t.Helper()
	if cfg.Dataplane != "xdp" {
		t.Skipf("the lab runs --dataplane=%s", cfg.Dataplane)
	}
}

// demoService creates a copy of the demo Service (adjusted by mutate),
// deletes it when the test ends, and returns its n IPs once assigned.
func demoService(t *testing.T, name string, n int, mutate func(*corev1.Service)) []netip.Addr {
	t.Helper()
	ctx := t.Context()
	if err := cfg.CreateDemoService(ctx, cl, name, mutate); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cl.Delete(context.WithoutCancel(ctx), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}})
	})
	ips, err := lab.WaitServiceIPs(ctx, cl, types.NamespacedName{Namespace: "default", Name: name}, n, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return ips
}

// labService creates a single-stack IPv4 copy of the demo Service and
// returns its VIP; it is deleted when the test ends.
func labService(t *testing.T, name string, mutate func(*corev1.Service)) netip.Addr {
	t.Helper()
	ips := demoService(t, name, 1, func(s *corev1.Service) {
		s.Spec.IPFamilyPolicy = new(corev1.IPFamilyPolicySingleStack)
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		if mutate != nil {
			mutate(s)
		}
	})
	ctx := t.Context()
	oneAnnouncer(t, name, ips[0], nil)
	if _, err := cfg.WaitHTTP(ctx, ips[0], 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return ips[0]
}

// clientHTTP is an HTTP client in lab-client that opens a new connection
// for every request.
func clientHTTP() *http.Client {
	return &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return lab.DialIn(ctx, lab.ClientNS, network, addr)
			},
		},
	}
}

// get returns the pod that served one new connection and the client
// address it saw.
func get(t *testing.T, hc *http.Client, vip netip.Addr) (pod, client string) {
	t.Helper()
	pod, client, err := tryGet(hc, vip)
	if err != nil {
		t.Fatal(err)
	}
	return pod, client
}

// tryGet is get for polling: a failure is an error to retry on.
func tryGet(hc *http.Client, vip netip.Addr) (pod, client string, err error) {
	resp, err := hc.Get("http://" + netip.AddrPortFrom(vip, 80).String() + "/")
	if err != nil {
		return "", "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "", err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return "", "", fmt.Errorf("answer %q, want <pod> <client>", b)
	}
	return f[0], f[1], nil
}

// TestDataplaneDistributionAndClientAddress: 1 000 new connections spread
// over the six endpoints of three nodes about evenly, and every backend
// sees the client's own address.
func TestDataplaneDistributionAndClientAddress(t *testing.T) {
	needXDP(t)
	hc := clientHTTP()
	const n = 1000
	count := map[string]int{}
	for range n {
		pod, client := get(t, hc, vip4)
		if client != lab.ClientIPv4 {
			t.Fatalf("the backend saw %s, want the client's %s", client, lab.ClientIPv4)
		}
		count[pod]++
	}
	pods := cfg.Pods()
	mean := float64(n) / float64(len(pods))
	for _, p := range pods {
		if c := float64(count[p.Name]); c < 0.6*mean || c > 1.4*mean {
			t.Errorf("%s served %d of %d connections, want about %.0f (all: %v)", p.Name, count[p.Name], n, mean, count)
		}
	}
	t.Logf("connections per endpoint: %v", count)

	// The lab runs --xdp-endpoint-redirect: each speaker lists the veths
	// in front of its node's endpoints, and nothing else.
	for _, n := range cfg.NodeList() {
		want := map[uint32]bool{}
		for _, p := range pods {
			if p.Node.Name != n.Name {
				continue
			}
			err := nsrun.In(n.NS, func() error {
				l, err := netlink.LinkByName(p.HostLink)
				if err == nil {
					want[uint32(l.Attrs().Index)] = true
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(cfg.PinDir(n), "endpoint_links"), nil)
		if err != nil {
			t.Fatal(err)
		}
		got := map[uint32]bool{}
		var k, v uint32
		it := m.Iterate()
		for it.Next(&k, &v) {
			got[k] = true
		}
		_ = m.Close()
		if it.Err() != nil || !maps.Equal(got, want) {
			t.Errorf("%s: endpoint_links %v (%v), want its pods' veths %v", n.Name, got, it.Err(), want)
		}
	}
}

// TestDataplaneAffinity: with sessionAffinity ClientIP every connection of
// the client reaches one endpoint.
func TestDataplaneAffinity(t *testing.T) {
	needXDP(t)
	vip := labService(t, "affinity", func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	})
	hc := clientHTTP()
	seen := map[string]int{}
	for range 50 {
		pod, _ := get(t, hc, vip)
		seen[pod]++
	}
	if len(seen) != 1 {
		t.Errorf("50 connections of one client reached %v, want one endpoint", seen)
	}
}

// TestDataplaneUDP: datagrams from many source ports are answered, by
// several endpoints.
func TestDataplaneUDP(t *testing.T) {
	needXDP(t)
	pods := map[string]bool{}
	for i := range 30 {
		// UDP may lose a datagram: each exchange is tried three times,
		// on the same flow.
		msg := fmt.Sprintf("flow %d", i)
		got, err := udpExchange(t.Context(), vip4, msg, 3)
		if err != nil {
			t.Fatal(err)
		}
		if f := strings.Fields(got); len(f) < 2 || strings.Join(f[1:], " ") != msg {
			t.Fatalf("answer %q, want <pod> %s", got, msg)
		}
		pods[strings.Fields(got)[0]] = true
	}
	if len(pods) < 3 {
		t.Errorf("30 UDP flows reached only %v", pods)
	}
}

// udpExchange sends msg to VIP:7 from one client socket (one flow) and
// returns the first answer, sending again up to tries times.
func udpExchange(ctx context.Context, vip netip.Addr, msg string, tries int) (string, error) {
	conn, err := lab.DialIn(ctx, lab.ClientNS, "udp", net.JoinHostPort(vip.String(), "7"))
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close() }()
	buf := make([]byte, 512)
	for i := 0; ; i++ {
		_ = conn.SetDeadline(time.Now().Add(time.Second))
		if _, err = conn.Write([]byte(msg)); err == nil {
			var n int
			if n, err = conn.Read(buf); err == nil {
				return string(buf[:n]), nil
			}
		}
		if i+1 == tries {
			return "", fmt.Errorf("%d tries: %w", tries, err)
		}
	}
}

// echoConn is a long-lived connection to the line echo on TCP 7.
type echoConn struct {
	conn net.Conn
	r    *bufio.Reader
	pod  string
	n    int
}

func (e *echoConn) roundTrip(limit time.Duration) error {
	e.n++
	line := "line " + strconv.Itoa(e.n)
	_ = e.conn.SetDeadline(time.Now().Add(limit))
	if _, err := e.conn.Write([]byte(line + "\n")); err != nil {
		return err
	}
	got, err := e.r.ReadString('\n')
	if err != nil {
		return err
	}
	f := strings.Fields(got)
	if len(f) < 2 || strings.Join(f[1:], " ") != line {
		return fmt.Errorf("echo %q, want <pod> %s", got, line)
	}
	if e.pod == "" {
		e.pod = f[0]
	} else if f[0] != e.pod {
		return fmt.Errorf("answered by %s, was %s", f[0], e.pod)
	}
	return nil
}

// openEchoes opens n connections to vip:7 and makes one round trip on each.
func openEchoes(t *testing.T, vip netip.Addr, n int) []*echoConn {
	t.Helper()
	var out []*echoConn
	for range n {
		c, err := lab.DialIn(t.Context(), lab.ClientNS, "tcp", net.JoinHostPort(vip.String(), "7"))
		if err != nil {
			t.Fatal(err)
		}
		e := &echoConn{conn: c, r: bufio.NewReader(c)}
		t.Cleanup(func() { _ = c.Close() })
		if err := e.roundTrip(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// checkEchoes asserts every connection still works, on its endpoint, with
// nothing lost: no reset, and each line comes back whole. It returns how
// many broke.
func checkEchoes(t *testing.T, conns []*echoConn, event string) int {
	t.Helper()
	failed := 0
	for i, e := range conns {
		if err := e.roundTrip(10 * time.Second); err != nil {
			failed++
			if failed <= 3 {
				t.Errorf("after %s, connection %d (to %s): %v", event, i, e.pod, err)
			}
		}
	}
	if failed > 0 {
		t.Errorf("after %s: %d of %d connections broke", event, failed, len(conns))
	}
	return failed
}

func nodeNamed(t *testing.T, name string) lab.Node {
	t.Helper()
	for _, n := range cfg.NodeList() {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("no node %s", name)
	return lab.Node{}
}

// waitMembers waits until every speaker sees every node.
func waitMembers(t *testing.T) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		for _, n := range cfg.NodeList() {
			m, err := cfg.Members(t.Context(), n)
			if err != nil || m != cfg.Nodes {
				return fmt.Errorf("speaker on %s sees %d members (%v)", n.Name, m, err)
			}
		}
		return nil
	})
}

// TestConnectionsSurvive: 50 long-lived TCP connections opened before
// each event all survive it, on the same endpoint, with no byte lost.
func TestConnectionsSurvive(t *testing.T) {
	needXDP(t)
	const name = "survive"
	// node-c's endpoints start unready, so one can be added.
	ready := map[string]bool{}
	for _, p := range cfg.Pods() {
		ready[p.Name] = p.Node.Name != "node-c"
	}
	vip := labService(t, name, nil)
	if err := cfg.SetEndpointsReady(t.Context(), cl, name, ready); err != nil {
		t.Fatal(err)
	}
	// Every node must know before connections open: a flow on a node
	// that then leaves the ring survives a ring change but not, on top of
	// it, a change of director (docs/architecture.md, known limits).
	eventually(t, 20*time.Second, func() error {
		for range 40 {
			p, _, err := tryGet(clientHTTP(), vip)
			if err != nil {
				return err
			}
			if strings.HasPrefix(p, "demo-c-") {
				return fmt.Errorf("%s, on node-c, still takes new connections", p)
			}
		}
		return nil
	})
	const n = 50

	t.Run("kill -9 of the announcing node's speaker", func(t *testing.T) {
		conns := openEchoes(t, vip, n)
		owner := oneAnnouncer(t, name, vip, nil)
		if err := cfg.Kill(lab.SpeakerName(nodeNamed(t, owner))); err != nil {
			t.Fatal(err)
		}
		oneAnnouncer(t, name, vip, func(got string) error {
			if got == owner {
				return fmt.Errorf("still announced by %s", owner)
			}
			return nil
		})
		checkEchoes(t, conns, "the announcer's speaker was killed")
		if err := cfg.StartSpeaker(nodeNamed(t, owner)); err != nil {
			t.Fatal(err)
		}
		waitMembers(t)
		// The IP goes back to its first owner: one more change of
		// director, which the connections survive too. (Later events
		// start from this steady state: a flow whose director changed
		// while it was idle is pinned on the new director only by its
		// next packet, so a ring change before that could move it.)
		oneAnnouncer(t, name, vip, func(got string) error {
			if got != owner {
				return fmt.Errorf("announced by %s, want %s back", got, owner)
			}
			return nil
		})
		checkEchoes(t, conns, "the killed speaker came back")
	})

	t.Run("adding an endpoint", func(t *testing.T) {
		conns := openEchoes(t, vip, n)
		ready["demo-c-0"] = true
		if err := cfg.SetEndpointsReady(t.Context(), cl, name, ready); err != nil {
			t.Fatal(err)
		}
		// The new endpoint takes new connections once every node knows.
		eventually(t, 20*time.Second, func() error {
			for range 40 {
				p, _, err := tryGet(clientHTTP(), vip)
				if err != nil {
					return err
				}
				if p == "demo-c-0" {
					return nil
				}
			}
			return fmt.Errorf("demo-c-0 takes no new connection")
		})
		checkEchoes(t, conns, "an endpoint was added")
	})

	t.Run("removing an endpoint other than theirs", func(t *testing.T) {
		conns := openEchoes(t, vip, n)
		used := map[string]int{}
		for _, c := range conns {
			used[c.pod]++
		}
		var gone string
		for _, p := range cfg.Pods() {
			if ready[p.Name] && (gone == "" || used[p.Name] < used[gone]) {
				gone = p.Name
			}
		}
		ready[gone] = false
		if err := cfg.SetEndpointsReady(t.Context(), cl, name, ready); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, func() error {
			for range 40 {
				p, _, err := tryGet(clientHTTP(), vip)
				if err != nil {
					return err
				}
				if p == gone {
					return fmt.Errorf("%s still takes new connections", gone)
				}
			}
			return nil
		})
		// Those on the removed endpoint drain: they keep it (its pod
		// still runs), as a terminating endpoint's connections do.
		checkEchoes(t, conns, gone+" was removed")
	})

	t.Run("restarting every speaker one by one", func(t *testing.T) {
		conns := openEchoes(t, vip, n)
		for _, node := range cfg.NodeList() {
			if err := cfg.Stop(lab.SpeakerName(node), 10*time.Second); err != nil {
				t.Fatal(err)
			}
			checkEchoes(t, conns, "the speaker of "+node.Name+" stopped")
			if err := cfg.StartSpeaker(node); err != nil {
				t.Fatal(err)
			}
			waitMembers(t)
			checkEchoes(t, conns, "the speaker of "+node.Name+" restarted")
		}
	})
}
