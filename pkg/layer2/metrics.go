package layer2

import "github.com/prometheus/client_golang/prometheus"

// Metrics count what the announcer does, by protocol (arp, ndp).
type Metrics struct {
	requests   *prometheus.CounterVec
	replies    *prometheus.CounterVec
	gratuitous *prometheus.CounterVec
	conflicts  *prometheus.CounterVec
}

// NewMetrics creates the counters and registers them with reg, if not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ironlb_l2_requests_total",
			Help: "ARP requests and Neighbor Solicitations received for IPs this node announces.",
		}, []string{"protocol"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ironlb_l2_replies_total",
			Help: "ARP replies and solicited Neighbor Advertisements sent.",
		}, []string{"protocol"}),
		gratuitous: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ironlb_l2_gratuitous_total",
			Help: "Gratuitous ARPs and unsolicited Neighbor Advertisements sent.",
		}, []string{"protocol"}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ironlb_l2_conflicts_total",
			Help: "Times another node claimed an IP this node owns and this node re-announced it.",
		}, []string{"protocol"}),
	}
	// Both protocols start at zero, so an alert on a rate sees zero
	// rather than no series.
	for _, c := range []*prometheus.CounterVec{m.requests, m.replies, m.gratuitous, m.conflicts} {
		for _, p := range []string{"arp", "ndp"} {
			c.WithLabelValues(p)
		}
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.replies, m.gratuitous, m.conflicts)
	}
	return m
}
