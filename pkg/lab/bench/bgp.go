package bench

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/lab"
)

// BGPResult summarises one kind of BGP measurement.
type BGPResult struct {
	What               string
	Runs               int
	Min, P50, P99, Max time.Duration
}

func (r BGPResult) String() string {
	return fmt.Sprintf("bgp %s, %d runs, BIRD polled every 10ms: min %s  p50 %s  p99 %s  max %s",
		r.What, r.Runs, r.Min.Round(time.Millisecond), r.P50.Round(time.Millisecond),
		r.P99.Round(time.Millisecond), r.Max.Round(time.Millisecond))
}

func summarise(what string, took []time.Duration) BGPResult {
	lo, p50, p99, hi := percentiles(took)
	return BGPResult{What: what, Runs: len(took), Min: lo, P50: p50, P99: p99, Max: hi}
}

// birdFrom tells whether BIRD has a route to prefix from each node, by
// next hop.
func birdFrom(ctx context.Context, c lab.Config, prefix string) (map[string]bool, error) {
	out := map[string]bool{}
	r, err := c.Birdc(ctx, "show", "route", "for", prefix, "all")
	if strings.Contains(r, "Network not found") {
		return out, nil
	}
	if err != nil {
		// A birdc that fails says nothing about the route: an error,
		// never an instant withdrawal.
		return nil, fmt.Errorf("birdc show route for %s: %w", prefix, err)
	}
	for _, n := range c.NodeList() {
		if strings.Contains(r, "BGP.next_hop: "+n.IPv4.String()+"\n") || strings.Contains(r, "BGP.next_hop: "+n.IPv6.String()+" ") ||
			strings.Contains(r, "BGP.next_hop: "+n.IPv6.String()+"\n") {
			out[n.Name] = true
		}
	}
	return out, nil
}

// pollBird polls BIRD every 10 ms until cond holds for prefix's routes.
func pollBird(ctx context.Context, c lab.Config, prefix string, limit time.Duration, cond func(map[string]bool) bool) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		m, err := birdFrom(ctx, c, prefix)
		if err != nil {
			return time.Time{}, err
		}
		if cond(m) {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("BIRD's routes to %s did not change within %s", prefix, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BGP measures, runs times each: from a new Service in the BGP pool
// to its route in BIRD (from the first node), and from SIGTERM of a
// speaker to its route gone from BIRD.
func BGP(ctx context.Context, c lab.Config, runs int, log io.Writer) ([]BGPResult, error) {
	cl, err := c.Client()
	if err != nil {
		return nil, err
	}
	if err := c.WaitBirdSessions(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	var appear, gone []time.Duration
	for i := range runs {
		name := fmt.Sprintf("bgp-bench-%d", i)
		// A fixed IP, so BIRD is polled from the create on, not from
		// when the Service's status shows it.
		ip := netip.MustParsePrefix(lab.BGPPoolIPv4).Addr()
		for range 100 + i {
			ip = ip.Next()
		}
		pfx := netip.PrefixFrom(ip, 32).String()
		t0 := time.Now()
		err := c.CreateDemoService(ctx, cl, name, func(s *corev1.Service) {
			s.Annotations = map[string]string{ironlbv1alpha1.AnnotationPool: lab.BGPPool, ironlbv1alpha1.AnnotationIPs: ip.String()}
			s.Spec.IPFamilyPolicy = new(corev1.IPFamilyPolicySingleStack)
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		})
		if err != nil {
			return nil, err
		}
		at, err := pollBird(ctx, c, pfx, 10*time.Second, func(m map[string]bool) bool { return len(m) > 0 })
		if err != nil {
			return nil, err
		}
		appear = append(appear, at.Sub(t0))
		// Every node's route, then SIGTERM one speaker.
		if _, err := pollBird(ctx, c, pfx, 20*time.Second, func(m map[string]bool) bool { return len(m) == c.Nodes }); err != nil {
			return nil, err
		}
		node := c.NodeList()[i%c.Nodes]
		// BIRD is polled while the speaker shuts down: the route must go
		// before the process has finished exiting.
		t1 := time.Now()
		stopped := make(chan error, 1)
		var exited time.Duration
		go func() {
			err := c.Stop(lab.SpeakerName(node), 10*time.Second)
			exited = time.Since(t1)
			stopped <- err
		}()
		at, err = pollBird(ctx, c, pfx, 10*time.Second, func(m map[string]bool) bool { return !m[node.Name] })
		if serr := <-stopped; serr != nil {
			return nil, serr
		}
		if err != nil {
			return nil, err
		}
		gone = append(gone, at.Sub(t1))
		_, _ = fmt.Fprintf(log, "run %2d: route of a new Service in BIRD after %s; SIGTERM of %s's speaker, its route gone after %s (the process exited after %s)\n",
			i+1, appear[i].Round(time.Millisecond), node.Name, gone[i].Round(time.Millisecond), exited.Round(time.Millisecond))
		if err := c.StartSpeaker(node); err != nil {
			return nil, err
		}
		if err := cl.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}); err != nil {
			return nil, err
		}
		if _, err := pollBird(ctx, c, pfx, 20*time.Second, func(m map[string]bool) bool { return len(m) == 0 }); err != nil {
			return nil, err
		}
		if err := c.WaitBirdSessions(ctx, 30*time.Second); err != nil {
			return nil, fmt.Errorf("after the restart of %s's speaker: %w", node.Name, err)
		}
	}
	return []BGPResult{summarise("new Service -> route in BIRD", appear), summarise("SIGTERM -> route gone from BIRD", gone)}, nil
}

// waitBirdBFD waits until BIRD has a BFD session Up with every node's
// IPv4 and IPv6 address.
func waitBirdBFD(ctx context.Context, c lab.Config, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		out, err := c.Birdc(ctx, "show", "bfd", "sessions")
		up := 0
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[2] == "Up" {
				up++
			}
		}
		if err == nil && up == 2*c.Nodes {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("BIRD's BFD sessions not all Up after %s:\n%s", limit, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LinkCut measures, runs times each, from cutting a node's link to
// its route gone from BIRD: first with BGP alone (the router's hold time,
// 3 s), then with BFD (100 ms x 3) on the lab's BGPPeers, in the same run.
// It leaves the peers without BFD.
func LinkCut(ctx context.Context, c lab.Config, runs int, log io.Writer) ([]BGPResult, error) {
	cl, err := c.Client()
	if err != nil {
		return nil, err
	}
	if err := c.WaitBirdSessions(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	ip := netip.MustParsePrefix(lab.BGPPoolIPv4).Addr()
	for range 99 {
		ip = ip.Next()
	}
	pfx := netip.PrefixFrom(ip, 32).String()
	const name = "bgp-bench-link"
	err = c.CreateDemoService(ctx, cl, name, func(s *corev1.Service) {
		s.Annotations = map[string]string{ironlbv1alpha1.AnnotationPool: lab.BGPPool, ironlbv1alpha1.AnnotationIPs: ip.String()}
		s.Spec.IPFamilyPolicy = new(corev1.IPFamilyPolicySingleStack)
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		_ = cl.Delete(context.WithoutCancel(ctx), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}})
		_ = c.SetBFD(context.WithoutCancel(ctx), cl, false)
	}()
	var out []BGPResult
	for _, bfd := range []bool{false, true} {
		if err := c.SetBFD(ctx, cl, bfd); err != nil {
			return nil, err
		}
		what := "link cut -> route gone from BIRD, hold time " + lab.BGPHoldTime.String()
		if bfd {
			what = fmt.Sprintf("link cut -> route gone from BIRD, BFD %s x %d", lab.BFDInterval, lab.BFDMultiplier)
		}
		var took []time.Duration
		for i := range runs {
			if _, err := pollBird(ctx, c, pfx, 30*time.Second, func(m map[string]bool) bool { return len(m) == c.Nodes }); err != nil {
				return nil, err
			}
			if bfd {
				if err := waitBirdBFD(ctx, c, 30*time.Second); err != nil {
					return nil, err
				}
			}
			node := c.NodeList()[i%c.Nodes]
			t0 := time.Now()
			if err := c.CutLink(ctx, node); err != nil {
				return nil, err
			}
			at, err := pollBird(ctx, c, pfx, lab.BGPHoldTime+5*time.Second, func(m map[string]bool) bool { return !m[node.Name] })
			if rerr := c.RestoreLink(context.WithoutCancel(ctx), node); rerr != nil {
				return nil, rerr
			}
			if err != nil {
				return nil, err
			}
			took = append(took, at.Sub(t0))
			_, _ = fmt.Fprintf(log, "%s, run %d: %s's route gone after %s\n", what, i+1, node.Name, took[i].Round(time.Millisecond))
			if err := c.WaitBirdSessions(ctx, 30*time.Second); err != nil {
				return nil, fmt.Errorf("after %s's link came back: %w", node.Name, err)
			}
		}
		out = append(out, summarise(what, took))
	}
	return out, nil
}
