package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"k8s.io/client-go/util/retry"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
)

// The lab's BGP side: BIRD 2 in lab-router peers with every node over
// IPv4 and IPv6 (iBGP, AS 64512, TCP MD5), installs the VIP routes with
// all their next hops (ECMP, hashed on ports too), and the client reaches
// the BGP pool through the router.
const (
	BGPPool      = "lab-bgp"
	BGPPoolIPv4  = "10.89.200.0/24"
	BGPPoolIPv6  = "fd89:200::/120"
	bgpRangeIPv6 = "fd89:200::1-fd89:200::ff"
	BGPASN       = 64512
	BGPPeerV4    = "router-v4"
	BGPPeerV6    = "router-v6"
	BGPAdvert    = "lab-bgp"
	BGPSecret    = "router-md5"
	BGPPassword  = "lab-router-secret" //nolint:gosec // G101: the lab router's throwaway password, on its own bridge
	BGPCommunity = "64512:100"
	BGPLarge     = "large:64512:1:2"
	BGPLocalPref = 150
	BGPHoldTime  = 3 * time.Second
	// BFDInterval and BFDMultiplier are the lab router's BFD timers; a
	// BGPPeer with the same bfd timers is declared down after 300 ms.
	BFDInterval   = 100 * time.Millisecond
	BFDMultiplier = 3
	birdProcName  = "bird"
	birdSocket    = "bird.ctl"
	birdConfig    = "bird.conf"
)

// BirdSocket is the control socket of the lab's BIRD.
func (c Config) BirdSocket() string { return c.path(birdSocket) }

func (c Config) birdConf() string {
	var b strings.Builder
	fmt.Fprintf(&b, `# The lab's router (written by ironlb-lab).
log stderr all;
router id %s;
protocol device {}
protocol kernel {
	ipv4 { export all; import none; };
	merge paths yes limit 16;
}
protocol kernel {
	ipv6 { export all; import none; };
	merge paths yes limit 16;
}
# BFD towards every node, at 100 ms x 3. A node whose BGPPeer has no
# bfd never brings its BFD session Up, and BIRD then runs the BGP session
# on its hold time alone (BIRD acts only on Up -> Down).
protocol bfd {
	interface "*" {
		min rx interval %d ms;
		min tx interval %d ms;
		multiplier %d;
	};
}
template bgp nodes {
	local as %d;
	passive on;
	direct;
	bfd on;
	# A lab router takes a node back at once after a failure (BIRD's
	# default holds off for a minute and more).
	error wait time 1, 5;
	error forget time 10;
	hold time %d;
	password "%s";
}
`, RouterIPv4, BFDInterval.Milliseconds(), BFDInterval.Milliseconds(), BFDMultiplier, BGPASN, int(BGPHoldTime/time.Second), BGPPassword)
	for _, n := range c.NodeList() {
		// Each session can carry both families (MP-BGP); a BGPPeer
		// without addressFamilies offers only its own. The IPv6 ones
		// take IPv4 routes with IPv6 next hops (RFC 8950), which a node
		// sends only with extendedNextHop.
		fmt.Fprintf(&b, "protocol bgp node_%s_4 from nodes { local %s; neighbor %s as %d; ipv4 { import all; export none; }; ipv6 { import all; export none; }; }\n",
			n.Letter, RouterIPv4, n.IPv4, BGPASN)
		fmt.Fprintf(&b, "protocol bgp node_%s_6 from nodes { local %s; neighbor %s as %d; ipv6 { import all; export none; }; ipv4 { import all; export none; extended next hop on; }; }\n",
			n.Letter, RouterIPv6, n.IPv6, BGPASN)
	}
	return b.String()
}

// startBird writes BIRD's configuration and runs it in lab-router, with
// ECMP hashing on ports so that flows spread over the nodes.
func (c Config) startBird(ctx context.Context) error {
	if _, err := exec.LookPath("bird"); err != nil {
		return fmt.Errorf("bird (Debian's bird2) is not installed: run hack/deps.sh: %w", err)
	}
	if err := sysctl(ctx, RouterNS, "net.ipv4.fib_multipath_hash_policy=1", "net.ipv6.fib_multipath_hash_policy=1"); err != nil {
		return err
	}
	if err := os.WriteFile(c.path(birdConfig), []byte(c.birdConf()), 0o600); err != nil {
		return err
	}
	if err := c.Start(birdProcName, RouterNS, "bird", "-f", "-c", c.path(birdConfig), "-s", c.BirdSocket()); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := c.Birdc(ctx, "show", "status"); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("BIRD did not open %s", c.BirdSocket())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Birdc runs a birdc command against the lab's BIRD.
func (c Config) Birdc(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", c.BirdSocket()}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// BirdRoute returns BIRD's "show route for PREFIX all", empty when it has
// no route.
func (c Config) BirdRoute(ctx context.Context, prefix string) string {
	out, err := c.Birdc(ctx, "show", "route", "for", prefix, "all")
	if err != nil || strings.Contains(out, "Network not found") {
		return ""
	}
	return out
}

// createBGPObjects makes the BGP pool (not auto-assigned: a Service asks
// for it with the ironlb.dev/ip-pool annotation), the MD5 Secret, a peer
// per family and the advertisement.
func (c Config) createBGPObjects(ctx context.Context, cl client.Client) error {
	objs := []client.Object{
		&ironlbv1alpha1.IPPool{
			ObjectMeta: metav1.ObjectMeta{Name: BGPPool},
			Spec: ironlbv1alpha1.IPPoolSpec{
				Addresses:  []ironlbv1alpha1.AddressRange{BGPPoolIPv4, bgpRangeIPv6},
				AutoAssign: new(false), AvoidBuggyIPs: true,
			},
		},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: SystemNS, Name: BGPSecret},
			Data:       map[string][]byte{"password": []byte(BGPPassword)},
		},
		c.bgpPeer(BGPPeerV4, RouterIPv4),
		c.bgpPeer(BGPPeerV6, RouterIPv6),
		&ironlbv1alpha1.BGPAdvertisement{
			ObjectMeta: metav1.ObjectMeta{Name: BGPAdvert},
			Spec: ironlbv1alpha1.BGPAdvertisementSpec{
				PoolSelection: ironlbv1alpha1.PoolSelection{IPPools: []string{BGPPool}},
				LocalPref:     new(int64(BGPLocalPref)),
				Communities:   []ironlbv1alpha1.Community{BGPCommunity, "no-export", BGPLarge},
			},
		},
	}
	for _, o := range objs {
		if err := cl.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

func (c Config) bgpPeer(name, addr string) *ironlbv1alpha1.BGPPeer {
	return &ironlbv1alpha1.BGPPeer{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: ironlbv1alpha1.BGPPeerSpec{
			PeerAddress: addr, PeerASN: BGPASN, MyASN: BGPASN,
			HoldTime:          &metav1.Duration{Duration: BGPHoldTime},
			KeepaliveTime:     &metav1.Duration{Duration: time.Second},
			PasswordSecretRef: &ironlbv1alpha1.SecretKeyRef{Namespace: SystemNS, Name: BGPSecret, Key: "password"},
		},
	}
}

// WaitBirdSessions waits until BIRD has every node's IPv4 and IPv6 session
// Established.
func (c Config) WaitBirdSessions(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		out, err := c.Birdc(ctx, "show", "protocols")
		if err == nil && strings.Count(out, "Established") == 2*c.Nodes {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("BGP sessions not all Established after %s:\n%s", limit, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// SetBFD gives the lab's BGPPeers BFD with the lab router's timers, or
// takes it away (on false).
func (c Config) SetBFD(ctx context.Context, cl client.Client, on bool) error {
	var spec *ironlbv1alpha1.BFDSpec
	if on {
		d := &metav1.Duration{Duration: BFDInterval}
		spec = &ironlbv1alpha1.BFDSpec{ReceiveInterval: d, TransmitInterval: d, DetectMultiplier: BFDMultiplier}
	}
	for _, name := range []string{BGPPeerV4, BGPPeerV6} {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var p ironlbv1alpha1.BGPPeer
			if err := cl.Get(ctx, client.ObjectKey{Name: name}, &p); err != nil {
				return err
			}
			p.Spec.BFD = spec.DeepCopy()
			return cl.Update(ctx, &p)
		})
		if err != nil {
			return fmt.Errorf("BGPPeer %s: %w", name, err)
		}
	}
	return nil
}
