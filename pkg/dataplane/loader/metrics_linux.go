//go:build linux

package loader

import (
	"strconv"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ironlb/ironlb/bpf"
	"github.com/ironlb/ironlb/pkg/dataplane"
)

var (
	descPackets  = prometheus.NewDesc("ironlb_dataplane_packets_total", "Packets the XDP program received for a VIP:port.", []string{"vip", "port", "protocol"}, nil)
	descBytes    = prometheus.NewDesc("ironlb_dataplane_bytes_total", "Bytes the XDP program received for a VIP:port.", []string{"vip", "port", "protocol"}, nil)
	descNewFlows = prometheus.NewDesc("ironlb_dataplane_new_flows_total", "Flows this node directed for the first time (tier-1 conntrack misses).", []string{"vip", "port", "protocol"}, nil)
	descDenied   = prometheus.NewDesc("ironlb_dataplane_source_range_drops_total", "Packets dropped because their client is outside the Service's loadBalancerSourceRanges.", []string{"service", "vip", "port", "protocol"}, nil)
	descUnstored = prometheus.NewDesc("ironlb_dataplane_unrecorded_flows_total", "New flows tier 1 sent by the ring without recording them: the flood guard (--new-flow-rate) was tripped.", []string{"vip", "port", "protocol"}, nil)
	descLimited  = prometheus.NewDesc("ironlb_dataplane_source_limit_drops_total", "New flows dropped because their client was over the Service's ironlb.dev/new-flows-per-source.", []string{"service", "vip", "port", "protocol"}, nil)
	descCookies  = prometheus.NewDesc("ironlb_dataplane_syn_cookies_sent_total", "SYNs this node answered with a SYN cookie instead of forwarding them (--syn-cookie-rate).", []string{"service", "vip", "port", "protocol"}, nil)
	descCookieOK = prometheus.NewDesc("ironlb_dataplane_syn_cookies_validated_total", "ACKs that held a valid SYN cookie: connections made through a cookie, which tier 2 proxies.", []string{"service", "vip", "port", "protocol"}, nil)
	descCookieNo = prometheus.NewDesc("ironlb_dataplane_syn_cookies_invalid_total", "ACKs of unknown flows checked for a SYN cookie that held none (forwarded as connections picked up mid-way).", []string{"service", "vip", "port", "protocol"}, nil)
	descCookieOn = prometheus.NewDesc("ironlb_dataplane_syn_cookies_active", "1 while this node answers the port's SYNs with SYN cookies (a SYN flood), else 0.", []string{"service", "vip", "port", "protocol"}, nil)
	descDrops    = prometheus.NewDesc("ironlb_dataplane_drops_total", "VIP packets the XDP program dropped, by reason.", []string{"reason"}, nil)
	descEntries  = prometheus.NewDesc("ironlb_dataplane_conntrack_entries", "Entries in a conntrack table (tier1, tier2, revnat and their unverified twins tier1_unverified, tier2_unverified, revnat_unverified; affinity; proxied: flows tier 2 proxies after a SYN cookie).", []string{"table"}, nil)
	descCapacity = prometheus.NewDesc("ironlb_dataplane_conntrack_capacity", "Size of a conntrack table; the oldest flows are evicted beyond it.", []string{"table"}, nil)
)

// ports returns, under the lock, each Service port's id and each port's
// Service ("namespace/name").
func (d *Dataplane) ports() (map[uint32]dataplane.Key, map[dataplane.Key]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := make(map[uint32]dataplane.Key, len(d.ids))
	for k, id := range d.ids {
		ids[id] = k
	}
	services := make(map[dataplane.Key]string, len(d.last))
	for _, e := range d.last {
		services[e.Key] = e.Service
	}
	return ids, services
}

// Describe implements prometheus.Collector.
func (d *Dataplane) Describe(ch chan<- *prometheus.Desc) {
	for _, desc := range []*prometheus.Desc{descPackets, descBytes, descNewFlows, descDenied, descUnstored, descLimited, descCookies, descCookieOK, descCookieNo, descCookieOn, descDrops, descEntries, descCapacity} {
		ch <- desc
	}
}

// Collect implements prometheus.Collector: it reads the per-CPU counters
// and counts the conntrack tables (a walk of each, at scrape time).
func (d *Dataplane) Collect(ch chan<- prometheus.Metric) {
	ids, services := d.ports()
	now := monotonicCoarse()
	for id, k := range ids {
		var per []bpf.LbServiceStats
		if err := d.objs.Stats.Lookup(id, &per); err != nil {
			continue
		}
		var s bpf.LbServiceStats
		for _, p := range per {
			s.Add(p)
		}
		labels := []string{k.VIP.String(), strconv.Itoa(int(k.Port)), dataplane.ProtocolName(k.Proto)}
		ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(s.Packets), labels...)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.Bytes), labels...)
		ch <- prometheus.MustNewConstMetric(descNewFlows, prometheus.CounterValue, float64(s.NewFlows), labels...)
		ch <- prometheus.MustNewConstMetric(descDenied, prometheus.CounterValue, float64(s.Denied), append([]string{services[k]}, labels...)...)
		ch <- prometheus.MustNewConstMetric(descUnstored, prometheus.CounterValue, float64(s.Unstored), labels...)
		svc := append([]string{services[k]}, labels...)
		ch <- prometheus.MustNewConstMetric(descLimited, prometheus.CounterValue, float64(s.Limited), svc...)
		ch <- prometheus.MustNewConstMetric(descCookies, prometheus.CounterValue, float64(s.CookiesSent), svc...)
		ch <- prometheus.MustNewConstMetric(descCookieOK, prometheus.CounterValue, float64(s.CookiesOk), svc...)
		ch <- prometheus.MustNewConstMetric(descCookieNo, prometheus.CounterValue, float64(s.CookiesBad), svc...)
		var cs bpf.LbCookieState
		on := 0.0
		if d.objs.Cookies.Lookup(id, &cs) == nil && cs.OnUntil > now {
			on = 1
		}
		ch <- prometheus.MustNewConstMetric(descCookieOn, prometheus.GaugeValue, on, svc...)
	}
	for i, reason := range bpf.DropReasons {
		var per []uint64
		if err := d.objs.Drops.Lookup(uint32(i), &per); err != nil {
			continue
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(n), reason)
	}
	for table, m := range map[string]*ebpf.Map{"tier1": d.objs.Ct1, "tier2": d.objs.Ct2, "revnat": d.objs.Revnat, "affinity": d.objs.Affinity,
		"tier1_unverified": d.objs.Ct1New, "tier2_unverified": d.objs.Ct2New, "revnat_unverified": d.objs.RevnatNew, "proxied": d.objs.Shifts} {
		ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(countKeys(m)), table)
		ch <- prometheus.MustNewConstMetric(descCapacity, prometheus.GaugeValue, float64(m.MaxEntries()), table)
	}
}

func countKeys(m *ebpf.Map) int {
	k := make([]byte, m.KeySize())
	v := make([]byte, m.ValueSize())
	n := 0
	// Bounded: a hash map that changes under the walk can make the
	// iterator start over; the table never holds more than its size.
	limit := int(m.MaxEntries())
	it := m.Iterate()
	for n < limit && it.Next(&k, &v) {
		n++
	}
	return n
}

// SYNCookies returns the Service ports whose SYNs this node answers with
// SYN cookies now (a SYN flood), each with its Service ("namespace/name"),
// and whether cookies are unusable here (a driver without XDP metadata).
func (d *Dataplane) SYNCookies() (map[dataplane.Key]string, bool) {
	ids, services := d.ports()
	now := monotonicCoarse()
	out := map[dataplane.Key]string{}
	for id, k := range ids {
		var cs bpf.LbCookieState
		if d.objs.Cookies.Lookup(id, &cs) == nil && cs.OnUntil > now {
			out[k] = services[k]
		}
	}
	var unusable uint32
	_ = d.objs.CookiesUnusable.Lookup(uint32(0), &unusable)
	return out, unusable != 0
}
