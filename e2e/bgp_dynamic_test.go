package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/lab"
)

// listeners returns the addresses node n listens on for BGP (TCP 179).
func listeners(t *testing.T, n lab.Node) []string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "ip", "netns", "exec", n.NS, "ss", "-Hltn", "sport", "= :179").CombinedOutput()
	if err != nil {
		t.Fatalf("ss in %s: %v: %s", n.NS, err, out)
	}
	var addrs []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) >= 4 {
			addrs = append(addrs, f[3])
		}
	}
	return addrs
}

// dynamicPassword is the TCP MD5 password of the far router's session to
// node n: one per node.
func dynamicPassword(n lab.Node) string { return "lab-dynamic-" + n.Name }

// TestBGPDynamic: a BGPPeer with dynamicPeerPrefix makes every node listen
// on its own address, TCP 179, and nowhere else; the router opens the
// sessions (the far BIRD initiating, two hops away, with a password per
// node from one Secret), learns the VIP routes over them, and each node's
// status names the router. Without the peer, nothing listens and the
// sessions go.
func TestBGPDynamic(t *testing.T) {
	ctx := t.Context()
	nodes := cfg.NodeList()
	var protocols strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&protocols, `protocol bgp dyn_%s {
	disabled;
	local %s as %d;
	neighbor %s as %d;
	multihop 2;
	password "%s";
	connect retry time 1;
	error wait time 1, 5;
	hold time 3;
	ipv4 { import all; export none; gateway recursive; };
}
`, n.Letter, farAddr, farASN, n.IPv4, lab.BGPASN, dynamicPassword(n))
	}
	birdc := startFarRouter(t, protocols.String())
	for _, n := range nodes {
		if l := listeners(t, n); len(l) > 0 {
			t.Fatalf("%s listens on %v without a dynamic peer", n.Name, l)
		}
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: lab.SystemNS, Name: "dynamic-md5"}, Data: map[string][]byte{}}
	for _, n := range nodes {
		secret.Data[n.Name] = []byte(dynamicPassword(n))
	}
	if err := cl.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Delete(context.WithoutCancel(ctx), secret) })
	peer := &ironlbv1alpha1.BGPPeer{
		ObjectMeta: metav1.ObjectMeta{Name: "fabric"},
		Spec: ironlbv1alpha1.BGPPeerSpec{
			DynamicPeerPrefix: farAddr + "/32", PeerASN: farASN, MyASN: lab.BGPASN, EBGPMultiHop: true,
			PasswordSecretRef: &ironlbv1alpha1.SecretKeyRef{Namespace: lab.SystemNS, Name: secret.Name},
			PasswordPerNode:   true,
			HoldTime:          &metav1.Duration{Duration: lab.BGPHoldTime},
			KeepaliveTime:     &metav1.Duration{Duration: time.Second},
		},
	}
	if err := cl.Create(ctx, peer); err != nil {
		t.Fatal(err)
	}
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			_ = cl.Delete(context.WithoutCancel(ctx), peer)
		}
	})
	for _, n := range nodes {
		want := []string{n.IPv4.String() + ":179"}
		eventually(t, 20*time.Second, func() error {
			if l := listeners(t, n); !slices.Equal(l, want) {
				return fmt.Errorf("%s listens on %v, want %v", n.Name, l, want)
			}
			return nil
		})
	}
	ips := bgpService(t, "bgp-dynamic", nil)
	for _, n := range nodes {
		if _, err := birdc("enable", "dyn_"+n.Letter); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, func() error {
		for _, n := range nodes {
			out, err := birdc("show", "route", "for", hostPrefix(ips[0]), "protocol", "dyn_"+n.Letter)
			if err != nil {
				return err
			}
			if !strings.Contains(out, "dyn_"+n.Letter) {
				proto, _ := birdc("show", "protocols", "all", "dyn_"+n.Letter)
				return fmt.Errorf("BIRD has no route to %s over its session to %s:\n%s\n%s", ips[0], n.Name, out, proto)
			}
		}
		return nil
	})
	eventually(t, 20*time.Second, func() error {
		if err := cl.Get(ctx, client.ObjectKeyFromObject(peer), peer); err != nil {
			return err
		}
		up := 0
		for _, s := range peer.Status.Nodes {
			if s.State == "Established" && slices.Equal(s.Routers, []string{farAddr}) && s.Prefixes >= 1 {
				up++
			}
		}
		if up != len(nodes) {
			return fmt.Errorf("%d of %d nodes report the router's session: %+v", up, len(nodes), peer.Status.Nodes)
		}
		return nil
	})

	if err := cl.Delete(ctx, peer); err != nil {
		t.Fatal(err)
	}
	deleted = true
	for _, n := range nodes {
		eventually(t, 20*time.Second, func() error {
			if l := listeners(t, n); len(l) > 0 {
				return fmt.Errorf("%s still listens on %v", n.Name, l)
			}
			out, err := birdc("show", "protocols", "dyn_"+n.Letter)
			if err != nil {
				return err
			}
			if strings.Contains(out, "Established") {
				return fmt.Errorf("BIRD's session to %s is still up:\n%s", n.Name, out)
			}
			return nil
		})
	}
}
