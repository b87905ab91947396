package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	poolTotal = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ironlb_pool_addresses_total",
		Help: "Addresses in an IPPool, by family (saturates at 2^63-1 for huge IPv6 pools).",
	}, []string{"pool", "family"})
	poolUsed = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ironlb_pool_addresses_used",
		Help: "Addresses of an IPPool held by Services, by family.",
	}, []string{"pool", "family"})
	allocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ironlb_allocations_total",
		Help: "Allocation attempts by result: success, or the reason of the failure (PoolExhausted, NoPool, ...).",
	}, []string{"result"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(poolTotal, poolUsed, allocations)
}
