package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/pkg/lab"
)

// ChurnResult is one drain-with-failover: how many of the connections
// held through it broke.
type ChurnResult struct {
	History         bool
	Conns, Broken   int
	Drained         string
	From, To        string
	OnDrained       int
	Opened, Checked time.Duration
}

// PerTenThousand is the connections broken per 10 000 held.
func (r ChurnResult) PerTenThousand() float64 {
	return float64(r.Broken) * 10000 / float64(r.Conns)
}

func (r ChurnResult) String() string {
	h := "without ring history"
	if r.History {
		h = "with ring history   "
	}
	return fmt.Sprintf("drain + failover, %s: %d of %d connections reset (%.0f per 10 000; %d were on the drained %s; announcer %s -> %s)",
		h, r.Broken, r.Conns, r.PerTenThousand(), r.OnDrained, r.Drained, r.From, r.To)
}

// MaxChurnConns bounds one run.
const MaxChurnConns = 20000

// Churn holds conns TCP connections to a copy of the demo Service (line
// echo, TCP 7) from lab-client, then at the same moment drains a node
// other than the announcer (its endpoints unready: it leaves the ring,
// its connections stay with their pods) and kills the announcer's speaker
// (an L2 failover: a new receiving node with no tier-1 entries), and
// counts the connections that no longer make a round trip. The speakers
// run with --ring-history 0 when history is false. The lab is left as it
// was (speakers restarted with the lab's flags).
func Churn(ctx context.Context, c lab.Config, conns int, history bool, log io.Writer) (ChurnResult, error) {
	if conns < 1 || conns > MaxChurnConns {
		return ChurnResult{}, fmt.Errorf("%d connections: want 1 to %d", conns, MaxChurnConns)
	}
	var extra []string
	if !history {
		extra = []string{"--ring-history", "0"}
	}
	if err := restartSpeakers(ctx, c, extra...); err != nil {
		return ChurnResult{}, err
	}
	defer func() { _ = restartSpeakers(ctx, c) }()

	cl, err := c.Client()
	if err != nil {
		return ChurnResult{}, err
	}
	name := "churn"
	if history {
		name = "churn-history"
	}
	vip, remove, err := demoCopy(ctx, c, cl, name)
	if err != nil {
		return ChurnResult{}, err
	}
	defer remove()
	if _, err := c.WaitHTTP(ctx, vip, 30*time.Second); err != nil {
		return ChurnResult{}, err
	}

	res := ChurnResult{History: history, Conns: conns}
	start := time.Now()
	held, err := openHeld(ctx, vip, conns)
	defer func() {
		for _, h := range held {
			_ = h.conn.Close()
		}
	}()
	if err != nil {
		return ChurnResult{}, err
	}
	res.Opened = time.Since(start)
	nodeOf := map[string]string{}
	for _, p := range c.Pods() {
		nodeOf[p.Name] = p.Node.Name
	}
	owner, err := announcer(c, vip)
	if err != nil {
		return ChurnResult{}, err
	}
	byNode := map[string]int{}
	for _, h := range held {
		byNode[nodeOf[h.pod]]++
	}
	for n, k := range byNode {
		if n != owner.Name && (res.Drained == "" || k > byNode[res.Drained]) {
			res.Drained = n
		}
	}
	res.From, res.OnDrained = owner.Name, byNode[res.Drained]
	ready := map[string]bool{}
	for _, p := range c.Pods() {
		ready[p.Name] = p.Node.Name != res.Drained
	}
	if err := c.SetEndpointsReady(ctx, cl, name, ready); err != nil {
		return ChurnResult{}, err
	}
	if err := c.Kill(lab.SpeakerName(owner)); err != nil {
		return ChurnResult{}, err
	}
	defer func() { _ = c.StartSpeaker(owner) }()
	// The new announcer, as the client sees it.
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, err := announcer(c, vip)
		if err == nil && n.Name != owner.Name {
			res.To = n.Name
			break
		}
		if time.Now().After(deadline) {
			return ChurnResult{}, fmt.Errorf("the VIP did not move from %s within 15s (%v)", owner.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Every node has taken the drained one out of its ring: 30 new
	// connections in a row reach other nodes.
	deadline = time.Now().Add(20 * time.Second)
	for ok := 0; ok < 30; {
		pod, err := c.Get(ctx, vip)
		switch {
		case err != nil || nodeOf[pod] == res.Drained:
			ok = 0
		default:
			ok++
		}
		if time.Now().After(deadline) {
			return ChurnResult{}, fmt.Errorf("%s still takes new connections after 20s", res.Drained)
		}
	}
	start = time.Now()
	broken := checkHeld(held)
	res.Checked = time.Since(start)
	brokenBy := map[string]int{}
	for _, h := range broken {
		brokenBy[nodeOf[h.pod]]++
	}
	res.Broken = len(broken)
	_, _ = fmt.Fprintf(log, "%s: %d connections opened in %s (by the node of their endpoint %v), checked in %s; reset by node %v\n",
		vip, conns, res.Opened.Round(time.Millisecond), byNode, res.Checked.Round(time.Millisecond), brokenBy)
	return res, nil
}

// announcer is the node whose MAC lab-client sends to for vip.
func announcer(c lab.Config, vip netip.Addr) (lab.Node, error) {
	_, dst, _, err := clientLink(vip)
	if err != nil {
		return lab.Node{}, err
	}
	macs, err := c.MACs()
	if err != nil {
		return lab.Node{}, err
	}
	n, ok := macs[dst.String()]
	if !ok {
		return lab.Node{}, fmt.Errorf("no node has the MAC %s", dst)
	}
	return n, nil
}

// heldConn is a connection to the line echo, and the pod that answers it.
type heldConn struct {
	conn net.Conn
	r    *bufio.Reader
	pod  string
	n    int
}

// roundTrip sends a numbered line and expects it back from the same pod.
func (h *heldConn) roundTrip(limit time.Duration) error {
	h.n++
	line := "line " + strconv.Itoa(h.n)
	_ = h.conn.SetDeadline(time.Now().Add(limit))
	if _, err := io.WriteString(h.conn, line+"\n"); err != nil {
		return err
	}
	got, err := h.r.ReadString('\n')
	if err != nil {
		return err
	}
	f := strings.Fields(got)
	if len(f) < 2 || strings.Join(f[1:], " ") != line {
		return fmt.Errorf("echo %q, want <pod> %s", got, line)
	}
	if h.pod == "" {
		h.pod = f[0]
	} else if f[0] != h.pod {
		return fmt.Errorf("answered by %s, was %s", f[0], h.pod)
	}
	return nil
}

// parallel is how many connections open or check at once.
const parallel = 64

// openHeld opens n connections to vip:7 from lab-client, with a round
// trip on each.
func openHeld(ctx context.Context, vip netip.Addr, n int) ([]*heldConn, error) {
	out := make([]*heldConn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			conn, err := lab.DialIn(ctx, lab.ClientNS, "tcp", net.JoinHostPort(vip.String(), "7"))
			if err != nil {
				errs[i] = err
				return
			}
			h := &heldConn{conn: conn, r: bufio.NewReader(conn)}
			out[i] = h
			errs[i] = h.roundTrip(5 * time.Second)
		}()
	}
	wg.Wait()
	held := out[:0]
	var first error
	for i, h := range out {
		if h != nil {
			held = append(held, h)
		}
		if errs[i] != nil && first == nil {
			first = fmt.Errorf("connection %d: %w", i, errs[i])
		}
	}
	return held, first
}

// checkHeld makes a round trip on every connection and returns those that
// fail.
func checkHeld(held []*heldConn) []*heldConn {
	var mu sync.Mutex
	var broken []*heldConn
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for _, h := range held {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if h.roundTrip(5*time.Second) != nil {
				mu.Lock()
				broken = append(broken, h)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return broken
}

// restartSpeakers restarts every node's speaker with extra flags (none:
// the lab's own) and waits until they all see each other.
func restartSpeakers(ctx context.Context, c lab.Config, extra ...string) error {
	for _, n := range c.NodeList() {
		if err := c.Stop(lab.SpeakerName(n), 10*time.Second); err != nil {
			return err
		}
		if err := c.StartSpeakerWith(n, c.Dataplane, extra...); err != nil {
			return err
		}
	}
	return c.WaitAllMembers(ctx, 60*time.Second)
}

// demoCopy creates name, an IPv4 copy of the demo Service with every
// endpoint ready (whatever an earlier run left), and returns its VIP and
// what removes it again.
func demoCopy(ctx context.Context, c lab.Config, cl client.Client, name string) (netip.Addr, func(), error) {
	if err := c.CreateDemoService(ctx, cl, name, func(s *corev1.Service) {
		s.Spec.IPFamilyPolicy = new(corev1.IPFamilyPolicySingleStack)
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	}); err != nil {
		return netip.Addr{}, nil, err
	}
	remove := func() {
		bg := context.WithoutCancel(ctx)
		_ = cl.Delete(bg, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}})
		// The lab has no EndpointSlice controller to delete them.
		_ = cl.DeleteAllOf(bg, &discoveryv1.EndpointSlice{}, client.InNamespace("default"),
			client.MatchingLabels{discoveryv1.LabelServiceName: name})
	}
	if err := c.SetEndpointsReady(ctx, cl, name, nil); err != nil {
		remove()
		return netip.Addr{}, nil, err
	}
	ips, err := lab.WaitServiceIPs(ctx, cl, types.NamespacedName{Namespace: "default", Name: name}, 1, 30*time.Second)
	if err != nil {
		remove()
		return netip.Addr{}, nil, err
	}
	return ips[0], remove, nil
}
