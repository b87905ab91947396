//go:build linux

package loader

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"

	"github.com/ironlb/ironlb/pkg/dataplane"
)

// scaleWorld is n Services of 10 ports each over 1 000 nodes; Service i
// has two endpoints on each of three nodes, so the ten ports of a
// Service share one ring.
func scaleWorld(services int) ([]dataplane.Node, []dataplane.Port) {
	const nodeCount = 1000
	nodes := make([]dataplane.Node, nodeCount)
	for i := range nodes {
		nodes[i] = dataplane.Node{Name: fmt.Sprintf("node-%04d", i), Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})}}
	}
	var ports []dataplane.Port
	for s := range services {
		var eps []dataplane.Endpoint
		for k := range 3 {
			n := (s*7 + k) % nodeCount
			for e := range 2 {
				eps = append(eps, dataplane.Endpoint{Addr: netip.AddrFrom4([4]byte{10, 128 + byte(n>>8), byte(n), byte(10 + e)}), Port: 8080, Node: nodes[n].Name, Ready: true, Serving: true})
			}
		}
		vip := netip.AddrFrom4([4]byte{192, 168, byte(s >> 8), byte(s)})
		for p := range 10 {
			ports = append(ports, dataplane.Port{Service: "default/svc-" + strconv.Itoa(s), VIP: vip, Port: uint16(80 + p), Proto: dataplane.TCP, Endpoints: eps})
		}
	}
	return nodes, ports
}

// mapMemory sums the kernel's accounting (memlock) of every map the data
// plane holds, the shared rings included.
func mapMemory(b *testing.B, d *Dataplane) uint64 {
	var total uint64
	add := func(m *ebpf.Map) {
		info, err := m.Info()
		if err != nil {
			b.Fatal(err)
		}
		n, _ := info.Memlock()
		total += n
	}
	for _, m := range []*ebpf.Map{d.objs.Config, d.objs.Vips, d.objs.Rings, d.objs.Nodes, d.objs.Backends, d.objs.Ct1, d.objs.Ct2,
		d.objs.Revnat, d.objs.Nexthops, d.objs.Stats, d.objs.EndpointLinks, d.objs.Drops, d.objs.SourceRanges,
		d.objs.TunnelPeers, d.objs.RingMembers, d.objs.Affinity} {
		add(m)
	}
	for _, m := range d.ringMaps {
		add(m)
	}
	return total
}

func rssBytes(b *testing.B) uint64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkApplyScale measures the speaker's data-plane work at scale
// against the real loader and kernel: plan and apply 1 000 and 10 000
// Service ports over 1 000 nodes (default ring size), the maps' kernel
// memory and the process's, then one node's death until every ring is
// rewritten. Run once: go test ./pkg/dataplane -run '^$' -bench ApplyScale -benchtime 1x.
func BenchmarkApplyScale(b *testing.B) {
	for _, services := range []int{100, 1000} {
		b.Run(fmt.Sprintf("ports=%d", services*10), func(b *testing.B) {
			dir := sandbox(b)
			t0, err := netlink.LinkByName("t0")
			if err != nil {
				b.Fatal(err)
			}
			addr, _ := netlink.ParseAddr("10.0.255.254/16")
			if err := netlink.AddrAdd(t0, addr); err != nil {
				b.Fatal(err)
			}
			opts := dataplane.DefaultOptions()
			opts.PinDir, opts.Interfaces = dir, []string{"t0"}
			d, err := Open(logr.Discard(), opts)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = Cleanup(dir) }()
			defer func() { _ = d.Close() }()
			nodes, ports := scaleWorld(services)
			self := dataplane.Self{V4: nodes[0].Addrs[0]}
			for b.Loop() {
				var planner dataplane.Planner
				start := time.Now()
				entries, err := planner.Plan(nodes[0].Name, nodes, ports, opts.RingSize)
				if err != nil {
					b.Fatal(err)
				}
				planned := time.Since(start)
				if err := d.Apply(self, nodes, entries); err != nil {
					b.Fatal(err)
				}
				applied := time.Since(start)
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				b.ReportMetric(float64(planned.Milliseconds()), "ms/plan")
				b.ReportMetric(float64(applied.Milliseconds()), "ms/plan+apply")
				b.ReportMetric(float64(mapMemory(b, d))/(1<<20), "MiB-maps")
				b.ReportMetric(float64(len(d.ringMaps)), "rings")
				b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "MiB-heap")
				b.ReportMetric(float64(rssBytes(b))/(1<<20), "MiB-rss")

				// node-0007 dies: it is in the rings of three Services.
				nodes[7].Dead = true
				start = time.Now()
				entries, err = planner.Plan(nodes[0].Name, nodes, ports, opts.RingSize)
				if err != nil {
					b.Fatal(err)
				}
				if err := d.Apply(self, nodes, entries); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/node-death")
				gone := nodes[7].Addrs[0]
				for _, e := range entries {
					for _, a := range e.RingNodes {
						if a == gone {
							b.Fatalf("%s still rings the dead node", e.Key)
						}
					}
				}
				nodes[7].Dead = false

				// Every Service goes.
				start = time.Now()
				if err := d.Apply(self, nodes, nil); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/remove-all")
			}
		})
	}
}
