package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/lab"
)

// setGracefulRestart gives the lab's BGPPeers graceful restart, or takes
// it away (0).
func setGracefulRestart(t *testing.T, restart time.Duration) {
	t.Helper()
	updatePeers(t, func(s *ironlbv1alpha1.BGPPeerSpec) {
		s.GracefulRestart = nil
		if restart > 0 {
			s.GracefulRestart = &ironlbv1alpha1.GracefulRestartSpec{RestartTime: &metav1.Duration{Duration: restart}}
		}
	}, lab.BGPPeerV4, lab.BGPPeerV6)
}

// routeWatch polls BIRD's routes to a prefix every 10 ms and counts the
// polls without a route from node, and the time from the first to the
// last of them.
type routeWatch struct {
	missing, polls atomic.Int64
	done           chan struct{}
	wg             sync.WaitGroup
	first, last    time.Time // written by the polling goroutine only
}

func watchBirdNode(t *testing.T, pfx, node string) *routeWatch {
	w := &routeWatch{done: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			select {
			case <-w.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			got, err := birdNextHops(t.Context(), pfx)
			if err != nil {
				continue
			}
			if _, ok := got[node]; !ok {
				now := time.Now()
				if w.first.IsZero() {
					w.first = now
				}
				w.last = now
				w.missing.Add(1)
			}
			w.polls.Add(1)
		}
	}()
	return w
}

func (w *routeWatch) stop() (missing, polls int, lost time.Duration) {
	close(w.done)
	w.wg.Wait()
	return int(w.missing.Load()), int(w.polls.Load()), w.last.Sub(w.first)
}

// traffic keeps n fresh connections to vip busy, one round trip after
// another on each, until stop, which returns how many broke.
func traffic(t *testing.T, vip netip.Addr, n int) (stop func() int) {
	t.Helper()
	// The VIP answers first, through every entry node: with kube-proxy a
	// new Service's rules reach the nodes one by one, and the router
	// spreads connections over the nodes by their ports.
	getSoon(t, vip)
	eventually(t, 20*time.Second, func() error {
		for range 12 {
			c, err := lab.DialIn(t.Context(), lab.ClientNS, "tcp", net.JoinHostPort(vip.String(), "7"))
			if err != nil {
				return err
			}
			_ = c.Close()
		}
		return nil
	})
	conns := openEchoes(t, vip, n)
	done := make(chan struct{})
	var broke atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				if err := c.roundTrip(5 * time.Second); err != nil {
					broke.Add(1)
					return
				}
				time.Sleep(20 * time.Millisecond) //nolint:forbidigo // the pace of the load, not synchronisation
			}
		}()
	}
	return func() int { close(done); wg.Wait(); return int(broke.Load()) }
}

// restartSpeaker restarts node's speaker (SIGTERM, as an upgrade does, or
// kill -9) while 50 connections to vip exchange lines, and waits until
// BIRD has its route again and its sessions are back; it returns how many
// polls of BIRD lacked the node's route, out of how many, the time
// between the first and the last that did, and how many connections
// broke.
func restartSpeaker(t *testing.T, node lab.Node, vip netip.Addr, kill bool) (missing, polls int, lost time.Duration, broke int) {
	t.Helper()
	pfx := hostPrefix(vip)
	load := traffic(t, vip, 50)
	w := watchBirdNode(t, pfx, node.Name)
	var err error
	if kill {
		err = cfg.Kill(lab.SpeakerName(node))
	} else {
		err = cfg.Stop(lab.SpeakerName(node), 10*time.Second)
	}
	if err != nil {
		t.Fatal(err)
	}
	// BIRD has seen the speaker go (its sessions with the node are no
	// longer Established) before the next one starts: otherwise, after
	// kill -9, the waits below could pass on the old sessions before BIRD
	// noticed, and the watch would end before the restart.
	proto := strings.ReplaceAll(node.Name, "-", "_") + "_"
	eventually(t, 10*time.Second, func() error {
		out, err := cfg.Birdc(t.Context(), "show", "protocols")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, proto) && strings.Contains(line, "Established") {
				return fmt.Errorf("BIRD still has %s's session up: %s", node.Name, line)
			}
		}
		return nil
	})
	if err := cfg.StartSpeaker(node); err != nil {
		t.Fatal(err)
	}
	waitSessions(t, 30*time.Second)
	waitBirdNodes(t, pfx, 30*time.Second, allNodes()...)
	// Twenty polls more: a late withdrawal would show.
	after := w.polls.Load() + 20
	eventually(t, 10*time.Second, func() error {
		if n := w.polls.Load(); n < after {
			return fmt.Errorf("%d polls of BIRD, want %d", n, after)
		}
		return nil
	})
	missing, polls, lost = w.stop()
	broke = load()
	waitMembers(t)
	return missing, polls, lost, broke
}

// TestBGPGracefulRestart: with graceful restart on the BGPPeers, a
// speaker that restarts, by SIGTERM as an upgrade does or by kill -9,
// leaves its routes at BIRD, which keeps them until the next speaker
// refreshes them: BIRD never lacks the node's route, where without
// graceful restart (measured first, same run) SIGTERM withdraws it until
// the next speaker is up. 50 connections exchange lines through the
// router during each restart, and the figure counts those that break:
// with ironlb's data plane none may, with or without graceful restart
// (flows that change entry node keep going); with kube-proxy's, flows
// that change entry node are reset. A drained node (labelled out of external load balancing)
// first advertises its route with GRACEFUL_SHUTDOWN, then withdraws it.
func TestBGPGracefulRestart(t *testing.T) {
	waitSessions(t, 30*time.Second)
	ips := bgpService(t, "bgp-gr", nil)
	pfx := hostPrefix(ips[0])
	waitBirdNodes(t, pfx, 20*time.Second, allNodes()...)
	nodeB, nodeC := nodeNamed(t, "node-b"), nodeNamed(t, "node-c")

	baseMissing, basePolls, baseLost, baseBroke := restartSpeaker(t, nodeB, ips[0], false)
	if baseMissing == 0 {
		t.Errorf("without graceful restart, SIGTERM left node-b's route at BIRD through the restart (%d polls): the baseline measures nothing", basePolls)
	}
	// With ironlb's data plane, flows that change entry node keep going;
	// with kube-proxy's they are reset.
	if cfg.Dataplane == "xdp" && baseBroke > 0 {
		t.Errorf("without graceful restart, %d of 50 connections broke while node-b's route was away", baseBroke)
	}

	setGracefulRestart(t, 30*time.Second)
	t.Cleanup(func() { setGracefulRestart(t, 0) })
	// The sessions reopen with the capability; every node reports it.
	eventually(t, 30*time.Second, func() error {
		return onEveryNode(t.Context(), "graceful restart negotiated", func(s ironlbv1alpha1.BGPSessionStatus) bool {
			return s.State == "Established" && s.GracefulRestart == "Negotiated"
		})
	})
	waitBirdNodes(t, pfx, 20*time.Second, allNodes()...)
	termMissing, termPolls, _, termBroke := restartSpeaker(t, nodeB, ips[0], false)
	killMissing, killPolls, _, killBroke := restartSpeaker(t, nodeC, ips[0], true)
	if termMissing > 0 || killMissing > 0 {
		t.Errorf("with graceful restart BIRD lacked the restarting node's route: SIGTERM %d of %d polls, kill -9 %d of %d", termMissing, termPolls, killMissing, killPolls)
	}
	// BIRD kept the route, so no flow changed entry node: none may
	// break with either data plane. (Before the lab's client stopped
	// taking the router's ICMP redirects, a redirect moved every flow to
	// one node and kube-proxy reset a few.)
	if termBroke > 0 || killBroke > 0 {
		t.Errorf("with graceful restart connections broke: SIGTERM %d of 50, kill -9 %d of 50", termBroke, killBroke)
	}
	t.Logf("FIGURE speaker restart (--dataplane=%s), BIRD polled every 10 ms, 50 connections exchanging lines throughout: without graceful restart SIGTERM lost node-b's route in %d of %d polls (for %s) and reset %d connections; with it SIGTERM lost it in %d of %d polls and reset %d, kill -9 %d of %d and %d",
		cfg.Dataplane, baseMissing, basePolls, baseLost.Round(time.Millisecond), baseBroke, termMissing, termPolls, termBroke, killMissing, killPolls, killBroke)

	// Drain node-a: GRACEFUL_SHUTDOWN first, then the withdrawal.
	ctx := context.WithoutCancel(t.Context())
	label := func(on bool) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var n corev1.Node
			if err := cl.Get(ctx, client.ObjectKey{Name: "node-a"}, &n); err != nil {
				return err
			}
			if on {
				n.Labels[ironlbv1alpha1.ExcludeLabel] = "true"
			} else {
				delete(n.Labels, ironlbv1alpha1.ExcludeLabel)
			}
			return cl.Update(ctx, &n)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	conns := openEchoes(t, ips[0], 50)
	label(true)
	t.Cleanup(func() { label(false) })
	start := time.Now()
	eventually(t, 10*time.Second, func() error {
		got, err := birdNextHops(t.Context(), pfx)
		if err != nil {
			return err
		}
		r, ok := got["node-a"]
		if !ok {
			return fmt.Errorf("node-a's route went without GRACEFUL_SHUTDOWN first")
		}
		if !strings.Contains(r, "(65535,0)") {
			return fmt.Errorf("node-a's route has no GRACEFUL_SHUTDOWN community yet:\n%s", r)
		}
		return nil
	})
	marked := time.Since(start)
	waitBirdNodes(t, pfx, 20*time.Second, "node-b", "node-c")
	gone := time.Since(start)
	t.Logf("drain of node-a: GRACEFUL_SHUTDOWN at BIRD after %s, route withdrawn after %s", marked.Round(time.Millisecond), gone.Round(time.Millisecond))
	// Flows that entered through node-a now enter elsewhere: ironlb's
	// data plane keeps them, kube-proxy's conntrack cannot.
	if cfg.Dataplane == "xdp" {
		checkEchoes(t, conns, "node-a was drained")
	}
	label(false)
	waitBirdNodes(t, pfx, 20*time.Second, allNodes()...)
}
