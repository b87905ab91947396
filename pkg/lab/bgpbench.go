package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/pkg/config"
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

// percentiles sorts took and returns its least, median, 99th percentile
// (nearest rank) and greatest values.
func percentiles(took []time.Duration) (lo, p50, p99, hi time.Duration) {
	slices.Sort(took)
	rank := func(q float64) time.Duration {
		i := int(q*float64(len(took))+0.999999) - 1
		return took[max(0, min(i, len(took)-1))]
	}
	return took[0], rank(0.5), rank(0.99), took[len(took)-1]
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

// birdFrom tells whether BIRD has a route to prefix from each node, by
// next hop.
func (c Config) birdFrom(ctx context.Context, prefix string) (map[string]bool, error) {
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
func (c Config) pollBird(ctx context.Context, prefix string, limit time.Duration, cond func(map[string]bool) bool) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		m, err := c.birdFrom(ctx, prefix)
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

// BenchBGP measures, runs times each: from a new Service in the BGP pool
// to its route in BIRD (from the first node), and from SIGTERM of a
// speaker to its route gone from BIRD.
func (c Config) BenchBGP(ctx context.Context, runs int, log io.Writer) ([]BGPResult, error) {
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
		ip := netip.MustParsePrefix(BGPPoolIPv4).Addr()
		for range 100 + i {
			ip = ip.Next()
		}
		pfx := netip.PrefixFrom(ip, 32).String()
		t0 := time.Now()
		err := c.CreateDemoService(ctx, cl, name, func(s *corev1.Service) {
			s.Annotations = map[string]string{config.AnnotationPool: BGPPool, config.AnnotationIPs: ip.String()}
			s.Spec.IPFamilyPolicy = new(corev1.IPFamilyPolicySingleStack)
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		})
		if err != nil {
			return nil, err
		}
		at, err := c.pollBird(ctx, pfx, 10*time.Second, func(m map[string]bool) bool { return len(m) > 0 })
		if err != nil {
			return nil, err
		}
		appear = append(appear, at.Sub(t0))
		// Every node's route, then SIGTERM one speaker.
		if _, err := c.pollBird(ctx, pfx, 20*time.Second, func(m map[string]bool) bool { return len(m) == c.Nodes }); err != nil {
			return nil, err
		}
		node := c.NodeList()[i%c.Nodes]
		t1 := time.Now()
		if err := c.Stop(SpeakerName(node), 10*time.Second); err != nil {
			return nil, err
		}
		at, err = c.pollBird(ctx, pfx, 10*time.Second, func(m map[string]bool) bool { return !m[node.Name] })
		if err != nil {
			return nil, err
		}
		gone = append(gone, at.Sub(t1))
		_, _ = fmt.Fprintf(log, "run %2d: route of a new Service in BIRD after %s; SIGTERM of %s's speaker, its route gone after %s\n",
			i+1, appear[i].Round(time.Millisecond), node.Name, gone[i].Round(time.Millisecond))
		if err := c.StartSpeaker(node); err != nil {
			return nil, err
		}
		if err := cl.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}); err != nil {
			return nil, err
		}
		if _, err := c.pollBird(ctx, pfx, 20*time.Second, func(m map[string]bool) bool { return len(m) == 0 }); err != nil {
			return nil, err
		}
		if err := c.WaitBirdSessions(ctx, 30*time.Second); err != nil {
			return nil, fmt.Errorf("after the restart of %s's speaker: %w", node.Name, err)
		}
	}
	return []BGPResult{summarise("new Service -> route in BIRD", appear), summarise("SIGTERM -> route gone from BIRD", gone)}, nil
}
