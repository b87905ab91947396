// Package bench holds the lab's benchmarks (ironlb-lab bench, make bench):
// forwarding rate with the kernel's XDP live-frames generator, failover
// after a node or speaker death, and BGP route timings at the router
// (advertisement, withdrawal, link cut with and without BFD). It drives a
// running lab through pkg/lab, which keeps what the tests share with it
// (the failover probe, frames, BIRD's sessions).
package bench

import (
	"slices"
	"time"
)

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
