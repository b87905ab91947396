package ipam

import (
	"fmt"
	"runtime"
	"testing"
)

// BenchmarkAllocate measures one allocate and one release of a Service while
// 100 000 others hold addresses, over an IPv4 /15 (a /16 cannot hold them all) and an IPv6 /64 pool. It
// reports the heap held by the full allocator per Service (bytes/svc), which
// must not grow with the pool's size.
func BenchmarkAllocate(b *testing.B) {
	const services = 100_000
	for _, tc := range []struct {
		name string
		cidr string
		fam  Family
	}{
		{"ipv4-15", "10.0.0.0/15", IPv4}, // a /16 holds only 65 536
		{"ipv6-64", "fd00::/64", IPv6},
	} {
		b.Run(tc.name, func(b *testing.B) {
			keys := make([]string, services)
			for i := range keys {
				keys[i] = fmt.Sprintf("ns/svc-%d", i)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			a := New()
			a.SetPools([]Pool{pool(b, "p", tc.cidr)})
			for _, k := range keys[:services-1] {
				if _, err := a.Assign(Service{Key: k, Namespace: "ns", Families: []Family{tc.fam}}); err != nil {
					b.Fatal(err)
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			perService := float64(after.HeapAlloc-before.HeapAlloc) / float64(services)
			b.ResetTimer()
			s := Service{Key: keys[services-1], Namespace: "ns", Families: []Family{tc.fam}}
			for b.Loop() {
				if _, err := a.Assign(s); err != nil {
					b.Fatal(err)
				}
				a.Release(s.Key)
			}
			b.ReportMetric(perService, "bytes/svc")
		})
	}
}

// BenchmarkFill measures allocating 100 000 Services one after the other
// into an empty IPv4 /15, the controller's start-up burst.
func BenchmarkFill(b *testing.B) {
	keys := make([]string, 100_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("ns/svc-%d", i)
	}
	p := pool(b, "p", "10.0.0.0/15")
	for b.Loop() {
		a := New()
		a.SetPools([]Pool{p})
		for _, k := range keys {
			if _, err := a.Assign(Service{Key: k, Namespace: "ns", Families: []Family{IPv4}}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keys)), "ns/svc")
}
