package bench

import (
	"context"
	"fmt"
	"io"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/pkg/lab"
)

// FailoverResult summarises repeated failovers.
type FailoverResult struct {
	Death lab.Death
	// Insecure tells that the speakers ran without the memberlist key.
	Insecure           bool
	Runs               int
	Min, P50, P99, Max time.Duration
}

func (r FailoverResult) String() string {
	key := "key"
	if r.Insecure {
		key = "no key"
	}
	return fmt.Sprintf("failover (%s, %s), %d runs, probe every %s: min %s  p50 %s  p99 %s  max %s",
		r.Death, key, r.Runs, lab.ProbeInterval, r.Min.Round(time.Millisecond), r.P50.Round(time.Millisecond),
		r.P99.Round(time.Millisecond), r.Max.Round(time.Millisecond))
}

// Failover repeats a failover runs times on the demo Service's IPv4
// VIP and reports the distribution.
func Failover(ctx context.Context, c lab.Config, death lab.Death, runs int, log io.Writer) (FailoverResult, error) {
	cl, err := c.Client()
	if err != nil {
		return FailoverResult{}, err
	}
	ips, err := lab.WaitServiceIPs(ctx, cl, types.NamespacedName{Namespace: "default", Name: lab.DemoService}, 1, 30*time.Second)
	if err != nil {
		return FailoverResult{}, err
	}
	vip := ips[0]
	p, err := c.StartProbe(ctx, vip)
	if err != nil {
		return FailoverResult{}, err
	}
	defer p.Close()
	var took []time.Duration
	for i := range runs {
		r, err := c.Failover(ctx, p, death)
		if err != nil {
			return FailoverResult{}, fmt.Errorf("run %d: %w", i+1, err)
		}
		_, _ = fmt.Fprintf(log, "run %2d: %s of %s -> %s in %s\n", i+1, death, r.From.Name, r.To.Name, r.Took.Round(time.Millisecond))
		took = append(took, r.Took)
	}
	lo, p50, p99, hi := percentiles(took)
	return FailoverResult{Death: death, Insecure: c.MemberlistInsecure, Runs: runs, Min: lo, P50: p50, P99: p99, Max: hi}, nil
}
