package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/lab"
)

// deletePeer deletes the lab BGPPeer name and returns what creates it
// again (also run when the test ends, if not before).
func deletePeer(t *testing.T, name string) (restore func()) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	var orig ironlbv1alpha1.BGPPeer
	if err := cl.Get(ctx, client.ObjectKey{Name: name}, &orig); err != nil {
		t.Fatal(err)
	}
	if err := cl.Delete(ctx, &orig); err != nil {
		t.Fatal(err)
	}
	done := false
	restore = func() {
		if done {
			return
		}
		done = true
		p := &ironlbv1alpha1.BGPPeer{Spec: *orig.Spec.DeepCopy()}
		p.Name = name
		// The deletion may still be going through (the speakers drop
		// their status entries first): create until it is.
		eventually(t, 20*time.Second, func() error { return cl.Create(ctx, p.DeepCopy()) })
	}
	t.Cleanup(restore)
	return restore
}

// waitBirdVia waits until BIRD's routes to prefix come from every node,
// over the session of the given family (node_X_4 or node_X_6), with the
// node's own address of the prefix's family as next hop.
func waitBirdVia(t *testing.T, prefix netip.Prefix, session string) {
	t.Helper()
	waitBirdViaNextHop(t, prefix, session, prefix.Addr().Is6())
}

// waitBirdViaNextHop is waitBirdVia with the next hop's family given: the
// node's IPv6 address (v6) or its IPv4 one.
func waitBirdViaNextHop(t *testing.T, prefix netip.Prefix, session string, v6 bool) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		got, err := birdNextHops(t.Context(), prefix.String())
		if err != nil {
			return err
		}
		if len(got) != cfg.Nodes {
			return fmt.Errorf("BIRD has %s from %v, want every node", prefix, keys(got))
		}
		for _, n := range cfg.NodeList() {
			block := got[n.Name]
			nh := n.IPv4
			if v6 {
				nh = n.IPv6
			}
			if !strings.Contains(block, "[node_"+n.Letter+"_"+session) || !strings.Contains(block, "BGP.next_hop: "+nh.String()) {
				return fmt.Errorf("%s from %s: not over node_%s_%s with next hop %s:\n%s", prefix, n.Name, n.Letter, session, nh, block)
			}
		}
		return nil
	})
}

// TestBGPMultiprotocol: one session per router carries both families
// (MP-BGP). With only router-v4, given addressFamilies IPv4 and IPv6, BIRD
// learns the IPv6 VIP over the IPv4 sessions, with each node's IPv6
// address as next hop, and the client reaches it through the router; the
// reverse with only router-v6.
func TestBGPMultiprotocol(t *testing.T) {
	waitSessions(t, 30*time.Second)
	ips := bgpService(t, "bgp-mp", nil)
	v4, v6 := hostPrefixOf(ips[0]), hostPrefixOf(ips[1])
	waitBirdNodes(t, v4.String(), 20*time.Second, allNodes()...)
	waitBirdNodes(t, v6.String(), 20*time.Second, allNodes()...)

	both := []ironlbv1alpha1.AddressFamily{ironlbv1alpha1.FamilyIPv4, ironlbv1alpha1.FamilyIPv6}
	for _, c := range []struct{ keep, drop, session string }{
		{lab.BGPPeerV4, lab.BGPPeerV6, "4"},
		{lab.BGPPeerV6, lab.BGPPeerV4, "6"},
	} {
		restore := deletePeer(t, c.drop)
		setFamilies := func(f []ironlbv1alpha1.AddressFamily) {
			updatePeers(t, func(s *ironlbv1alpha1.BGPPeerSpec) { s.AddressFamilies = f }, c.keep)
		}
		setFamilies(both)
		t.Cleanup(func() { setFamilies(nil) })
		waitBirdVia(t, v4, c.session)
		waitBirdVia(t, v6, c.session)
		for _, ip := range ips {
			checkEchoes(t, openEchoes(t, ip, 3), fmt.Sprintf("%s carried both families", c.keep))
		}
		t.Logf("%s alone: BIRD has %s and %s from every node over its node_X_%s sessions, and both answer through the router", c.keep, v4, v6, c.session)
		if c.session == "6" {
			// RFC 8950: the IPv4 route over the IPv6 sessions with the
			// nodes' IPv6 addresses as next hops (BIRD offers the
			// capability on its node_X_6 sessions), and traffic to the
			// IPv4 VIP through the router over them.
			updatePeers(t, func(s *ironlbv1alpha1.BGPPeerSpec) { s.ExtendedNextHop = true }, c.keep)
			waitBirdViaNextHop(t, v4, c.session, true)
			eventually(t, 20*time.Second, func() error {
				var p ironlbv1alpha1.BGPPeer
				if err := cl.Get(t.Context(), client.ObjectKey{Name: c.keep}, &p); err != nil {
					return err
				}
				n := 0
				for _, st := range p.Status.Nodes {
					if st.ExtendedNextHop == "Negotiated" {
						n++
					}
				}
				if n != cfg.Nodes {
					return fmt.Errorf("extended next hop negotiated on %d of %d nodes: %+v", n, cfg.Nodes, p.Status.Nodes)
				}
				return nil
			})
			checkEchoes(t, openEchoes(t, ips[0], 3), "IPv4 VIP over IPv6 next hops")
			updatePeers(t, func(s *ironlbv1alpha1.BGPPeerSpec) { s.ExtendedNextHop = false }, c.keep)
			waitBirdViaNextHop(t, v4, c.session, false)
			t.Logf("%s with extendedNextHop: BIRD has %s from every node with its IPv6 address as next hop (RFC 8950), and it answers through the router", c.keep, v4)
		}
		setFamilies(nil)
		restore()
		waitSessions(t, 30*time.Second)
		waitBirdNodes(t, v4.String(), 20*time.Second, allNodes()...)
		waitBirdNodes(t, v6.String(), 20*time.Second, allNodes()...)
	}
}

func hostPrefixOf(ip netip.Addr) netip.Prefix { return netip.PrefixFrom(ip, ip.BitLen()) }
