package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/lab"
)

// The far router: a BIRD two hops from the nodes, behind lab-router.
const (
	farNS     = lab.Prefix + "far"
	farRouter = "10.89.9.1" // lab-router's side
	farAddr   = "10.89.9.2"
	farASN    = 64600
)

// farProtocols is the far router's default: eBGP (AS 64600) with node-a,
// passive, multihop 2, with BFD, importing what node-a sends.
func farProtocols() string {
	return fmt.Sprintf(`protocol bgp far {
	local %s as %d;
	neighbor %s as %d;
	multihop 2;
	passive on;
	bfd on;
	hold time 3;
	error wait time 1, 5;
	ipv4 { import all; export none; gateway recursive; };
}
`, farAddr, farASN, cfg.NodeList()[0].IPv4, lab.BGPASN)
}

// startFarRouter builds lab-far behind lab-router and runs a second BIRD
// there with the given BGP protocols (farProtocols: node-a's session).
// Everything goes with the test.
func startFarRouter(t *testing.T, protocols string) (birdc func(args ...string) (string, error)) {
	t.Helper()
	ctx := t.Context()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("netns", "add", farNS)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", farNS).Run() })
	run("-n", farNS, "link", "set", "lo", "up")
	run("-n", lab.RouterNS, "link", "add", "far0", "type", "veth", "peer", "name", "eth0", "netns", farNS)
	run("-n", lab.RouterNS, "addr", "add", farRouter+"/30", "dev", "far0")
	run("-n", lab.RouterNS, "link", "set", "far0", "up")
	run("-n", farNS, "addr", "add", farAddr+"/30", "dev", "eth0")
	run("-n", farNS, "link", "set", "eth0", "up")
	run("-n", farNS, "route", "add", "default", "via", farRouter)
	t.Cleanup(func() { _ = exec.Command("ip", "-n", lab.RouterNS, "link", "delete", "far0").Run() })

	conf := filepath.Join(cfg.Dir, "bird-far.conf")
	sock := filepath.Join(cfg.Dir, "bird-far.ctl")
	body := fmt.Sprintf(`log stderr all;
router id %s;
protocol device {}
protocol static { ipv4; route 0.0.0.0/0 via %s; }
protocol bfd {
	multihop {
		min rx interval 100 ms;
		min tx interval 100 ms;
		multiplier 3;
	};
}
%s`, farAddr, farRouter, protocols)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Start("bird-far", farNS, "bird", "-f", "-c", conf, "-s", sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cfg.Stop("bird-far", 3*time.Second); _ = os.Remove(sock) })
	birdc = func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", sock}, args...)...).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("birdc %v: %w: %s", args, err, out)
		}
		return string(out), nil
	}
	eventually(t, 10*time.Second, func() error { _, err := birdc("show", "status"); return err })
	return birdc
}

// TestBGPMultihop: an eBGP router two hops away (behind lab-router)
// peers with node-a only when the BGPPeer allows multihop: without it the
// speaker's packets leave with a TTL of 1 and die at lab-router, and no
// session comes up in eight seconds; with it the session is Established
// and the router learns the Service's route, from AS 64512 with node-a as
// next hop. Multihop BFD (RFC 5883, UDP 4784, one router between: TTL 254
// on arrival) then comes Up on both sides.
func TestBGPMultihop(t *testing.T) {
	ctx := t.Context()
	birdc := startFarRouter(t, farProtocols())
	node := cfg.NodeList()[0]
	peer := &ironlbv1alpha1.BGPPeer{
		ObjectMeta: metav1.ObjectMeta{Name: "far"},
		Spec: ironlbv1alpha1.BGPPeerSpec{
			PeerAddress: farAddr, PeerASN: farASN, MyASN: lab.BGPASN,
			HoldTime:      &metav1.Duration{Duration: 3 * time.Second},
			KeepaliveTime: &metav1.Duration{Duration: time.Second},
			NodeSelector:  &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/hostname": node.Name}},
		},
	}
	if err := cl.Create(ctx, peer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Delete(context.WithoutCancel(ctx), peer) })
	established := func() (bool, error) {
		out, err := birdc("show", "protocols", "far")
		return strings.Contains(out, "Established"), err
	}
	// Without multihop: nothing for eight seconds (BIRD retries after 1 s,
	// the speaker every few seconds).
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		up, err := established()
		if err != nil {
			t.Fatal(err)
		}
		if up {
			t.Fatal("the far router's session came up without ebgpMultiHop: the TTL of 1 should not cross lab-router")
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err := cl.Get(ctx, client.ObjectKeyFromObject(peer), peer); err != nil {
		t.Fatal(err)
	}
	peer.Spec.EBGPMultiHop = true
	if err := cl.Update(ctx, peer); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, 30*time.Second, func() error {
		up, err := established()
		if err != nil || !up {
			return fmt.Errorf("the far router's session is not Established (%v)", err)
		}
		return nil
	})
	t.Logf("with ebgpMultiHop the session two hops away came up in %s", time.Since(start).Round(100*time.Millisecond))
	ips := bgpService(t, "bgp-far", nil)
	prefix := hostPrefix(ips[0])
	eventually(t, 20*time.Second, func() error {
		out, err := birdc("show", "route", "for", prefix, "all")
		if err != nil {
			return err
		}
		for _, want := range []string{"BGP.as_path: " + fmt.Sprint(lab.BGPASN), "BGP.next_hop: " + node.IPv4.String()} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("the far router's route to %s lacks %q:\n%s", prefix, want, out)
			}
		}
		return nil
	})
	eventually(t, 10*time.Second, func() error {
		if err := cl.Get(ctx, client.ObjectKeyFromObject(peer), peer); err != nil {
			return err
		}
		for _, s := range peer.Status.Nodes {
			if s.Node == node.Name && s.State == "Established" {
				return nil
			}
		}
		return fmt.Errorf("BGPPeer far status: %+v", peer.Status.Nodes)
	})

	// BFD with minimumTTL 254, what FRR and MetalLB expect: BIRD sends
	// multihop BFD with the system's default TTL, so its packets arrive
	// below 254, are dropped, and the status says why.
	d := &metav1.Duration{Duration: lab.BFDInterval}
	setBFD := func(minTTL int32) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := cl.Get(ctx, client.ObjectKeyFromObject(peer), peer); err != nil {
				return err
			}
			peer.Spec.BFD = &ironlbv1alpha1.BFDSpec{ReceiveInterval: d, TransmitInterval: d, DetectMultiplier: 3, MinimumTTL: new(minTTL)}
			return cl.Update(ctx, peer)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	nodeStatus := func() (ironlbv1alpha1.BGPSessionStatus, error) {
		if err := cl.Get(ctx, client.ObjectKeyFromObject(peer), peer); err != nil {
			return ironlbv1alpha1.BGPSessionStatus{}, err
		}
		for _, s := range peer.Status.Nodes {
			if s.Node == node.Name {
				return s, nil
			}
		}
		return ironlbv1alpha1.BGPSessionStatus{}, fmt.Errorf("BGPPeer far has no status from %s: %+v", node.Name, peer.Status.Nodes)
	}
	setBFD(254)
	eventually(t, 20*time.Second, func() error {
		s, err := nodeStatus()
		if err != nil {
			return err
		}
		if s.BFD == "Up" || !strings.Contains(s.Message, "arrive with TTL") || !strings.Contains(s.Message, "below the 254") {
			return fmt.Errorf("BGPPeer far on %s: BFD %q, message %q; want BFD not Up and the TTL named", node.Name, s.BFD, s.Message)
		}
		t.Logf("minimumTTL 254: %s", s.Message)
		return nil
	})
	// With a minimum TTL BIRD's packets meet, BFD comes Up on both sides.
	setBFD(32)
	eventually(t, 20*time.Second, func() error {
		out, err := birdc("show", "bfd", "sessions")
		if err != nil {
			return err
		}
		if !strings.Contains(out, node.IPv4.String()) || !strings.Contains(out, " Up ") {
			return fmt.Errorf("the far router's BFD session with %s is not Up:\n%s", node.IPv4, out)
		}
		s, err := nodeStatus()
		if err != nil {
			return err
		}
		if s.BFD != "Up" || s.State != "Established" {
			return fmt.Errorf("BGPPeer far on %s: %+v", node.Name, s)
		}
		return nil
	})
}

// TestBGPPerNodeASN: one BGPPeer whose nodes take their AS numbers from a
// label (a per-rack ASN): the far router expects node-a as AS 64701 and
// node-b as AS 64702, and both sessions come up with routes from those
// ASes; node-c, which lacks the label, keeps no session, and its status
// entry says why.
func TestBGPPerNodeASN(t *testing.T) {
	ctx := t.Context()
	const label = "lab.ironlb.dev/asn"
	nodes := cfg.NodeList()
	asn := map[string]int{nodes[0].Name: 64701, nodes[1].Name: 64702}
	var protocols strings.Builder
	for i, n := range nodes[:2] {
		fmt.Fprintf(&protocols, `protocol bgp rack%d {
	local %s as %d;
	neighbor %s as %d;
	multihop 2;
	passive on;
	hold time 3;
	error wait time 1, 5;
	ipv4 { import all; export none; gateway recursive; };
}
`, i, farAddr, farASN, n.IPv4, asn[n.Name])
	}
	birdc := startFarRouter(t, protocols.String())
	setLabel := func(node, value string) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var n corev1.Node
			if err := cl.Get(context.WithoutCancel(ctx), client.ObjectKey{Name: node}, &n); err != nil {
				return err
			}
			if value == "" {
				delete(n.Labels, label)
			} else {
				n.Labels[label] = value
			}
			return cl.Update(context.WithoutCancel(ctx), &n)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for node, a := range asn {
		setLabel(node, fmt.Sprint(a))
		t.Cleanup(func() { setLabel(node, "") })
	}
	peer := &ironlbv1alpha1.BGPPeer{
		ObjectMeta: metav1.ObjectMeta{Name: "far-racks"},
		Spec: ironlbv1alpha1.BGPPeerSpec{
			PeerAddress: farAddr, PeerASN: farASN, MyASNFromLabel: label, EBGPMultiHop: true,
			HoldTime:      &metav1.Duration{Duration: 3 * time.Second},
			KeepaliveTime: &metav1.Duration{Duration: time.Second},
		},
	}
	if err := cl.Create(ctx, peer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Delete(context.WithoutCancel(ctx), peer) })
	ips := bgpService(t, "bgp-racks", nil)
	prefix := hostPrefix(ips[0])
	eventually(t, 30*time.Second, func() error {
		out, err := birdc("show", "route", "for", prefix, "all")
		if err != nil {
			return err
		}
		for _, a := range asn {
			if !strings.Contains(out, fmt.Sprintf("BGP.as_path: %d", a)) {
				return fmt.Errorf("the far router has no route to %s from AS %d:\n%s", prefix, a, out)
			}
		}
		return nil
	})
	eventually(t, 20*time.Second, func() error {
		if err := cl.Get(ctx, client.ObjectKeyFromObject(peer), peer); err != nil {
			return err
		}
		for _, s := range peer.Status.Nodes {
			if s.Node == nodes[2].Name {
				if s.State == "Established" || !strings.Contains(s.Message, "has no label "+label) {
					return fmt.Errorf("%s without the label: %+v", s.Node, s)
				}
				return nil
			}
		}
		return fmt.Errorf("BGPPeer far-racks has no status from %s: %+v", nodes[2].Name, peer.Status.Nodes)
	})
}
