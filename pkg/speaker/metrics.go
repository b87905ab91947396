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
	// unannounced counts IPs that should be announced and are not, by
	// reason; dataplaneErrors the data plane's failed applies.
	unannounced     *prometheus.GaugeVec
	dataplaneErrors prometheus.Counter
	// bfdDowns counts BFD sessions that went Down from Up (not by the
	// peer's AdminDown), by peer.
	bfdDowns *prometheus.CounterVec
}

func newSpeakerMetrics(reg prometheus.Registerer) *speakerMetrics {
	m := &speakerMetrics{
		bfdDowns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ironlb_bfd_session_down_total",
			Help: "BFD sessions that went Down after being Up (not by the peer's AdminDown), by peer; the speaker then closes the BGP session with the peer.",
		}, []string{"peer"}),
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
	m.unannounced = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ironlb_unannounced_ips",
		Help: "Service IPs not announced although they should be: NoInterface (reported by one node: no candidate has the advertisement's interfaces), AnnounceFailed (this node owns the IP and its announcer refused it).",
	}, []string{"reason"})
	m.dataplaneErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ironlb_dataplane_apply_errors_total",
		Help: "Times the data plane could not be programmed (it forwards with its previous state).",
	})
	reg.MustRegister(m.announced, m.members, m.ownerChanges, m.unserved, m.unannounced, m.dataplaneErrors, m.bfdDowns)
	return m
}
