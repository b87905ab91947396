package speaker

import "github.com/prometheus/client_golang/prometheus"

// speakerMetrics are the speaker's own gauges and counters; the layer-2
// announcer counts its packets itself.
type speakerMetrics struct {
	announced    *prometheus.GaugeVec
	members      prometheus.Gauge
	ownerChanges prometheus.Counter
	// unserved counts ready endpoints past what the data plane serves.
	unserved prometheus.Gauge
}

func newSpeakerMetrics(reg prometheus.Registerer) *speakerMetrics {
	m := &speakerMetrics{
		announced: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ironlb_announced_ips",
			Help: "IPs this node announces, by protocol.",
		}, []string{"protocol"}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ironlb_members",
			Help: "Live speakers this node sees, itself included.",
		}),
		ownerChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ironlb_l2_owner_changes_total",
			Help: "Times the layer-2 owner of an IP changed, as this node computes it.",
		}),
		unserved: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ironlb_dataplane_unserved_endpoints",
			Help: "Ready endpoints on this node the data plane does not serve: beyond 64 per Service port.",
		}),
	}
	reg.MustRegister(m.announced, m.members, m.ownerChanges, m.unserved)
	return m
}
