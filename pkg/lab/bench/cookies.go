package bench

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ironlb/ironlb/bpf"
	"github.com/ironlb/ironlb/pkg/dataplane"
	"github.com/ironlb/ironlb/pkg/lab"
)

// FloodEffect is what a SYN flood did to a Service port, counted by the
// data plane of every node (only the node that receives the VIP's
// traffic counts it): the SYNs that arrived, those answered with SYN
// cookies, and those placed as new flows, which reached an endpoint.
type FloodEffect struct {
	CookieRate                uint32 // --syn-cookie-rate; 0: no cookies
	Flood                     FloodResult
	Arrived, Answered, Placed uint64
}

func (r FloodEffect) String() string {
	mode := "without SYN cookies         "
	if r.CookieRate > 0 {
		mode = fmt.Sprintf("with --syn-cookie-rate %-6d", r.CookieRate)
	}
	return fmt.Sprintf("SYN flood %s: %d of %d SYNs arrived (%.2f Mpps sent); %d reached an endpoint, %d were answered with cookies",
		mode, r.Arrived, r.Flood.Sent, r.Flood.Rate()/1e6, r.Placed, r.Answered)
}

// FloodCookies floods a copy of the demo Service (TCP 7) with frames
// never-seen SYNs from lab-client twice, in one run: with the speakers
// running --syn-cookie-rate 0, then the given rate; each flood's flows
// are new. The lab is left as it was (speakers restarted with the lab's
// flags).
func FloodCookies(ctx context.Context, c lab.Config, frames, rate uint32) ([]FloodEffect, error) {
	if rate == 0 || frames == 0 || uint64(frames)*2 > MaxFloodFrames {
		return nil, fmt.Errorf("flood of %d frames at --syn-cookie-rate %d: want both above 0, at most %d frames", frames, rate, MaxFloodFrames/2)
	}
	defer func() { _ = restartSpeakers(ctx, c) }()
	cl, err := c.Client()
	if err != nil {
		return nil, err
	}
	vip, remove, err := demoCopy(ctx, c, cl, "flood")
	if err != nil {
		return nil, err
	}
	defer remove()
	var out []FloodEffect
	for i, r := range []uint32{0, rate} {
		if err := restartSpeakers(ctx, c, "--syn-cookie-rate", strconv.FormatUint(uint64(r), 10)); err != nil {
			return nil, err
		}
		// The client learns the announcer's MAC, which the flood uses.
		if _, err := c.WaitHTTP(ctx, vip, 30*time.Second); err != nil {
			return nil, err
		}
		before, err := portCounts(c, vip, 7)
		if err != nil {
			return nil, err
		}
		res, err := SYNFlood(ctx, c, vip, 7, uint32(i)*frames, frames, time.Minute)
		if err != nil {
			return nil, err
		}
		after, err := portCounts(c, vip, 7)
		if err != nil {
			return nil, err
		}
		out = append(out, FloodEffect{CookieRate: r, Flood: res, Arrived: after.Packets - before.Packets,
			Answered: after.CookiesSent - before.CookiesSent, Placed: after.NewFlows - before.NewFlows})
	}
	return out, nil
}

// portCounts sums a Service port's data-plane counters over every node.
func portCounts(c lab.Config, vip netip.Addr, port uint16) (bpf.LbServiceStats, error) {
	var sum bpf.LbServiceStats
	for _, n := range c.NodeList() {
		s, err := PortStats(c, n, vip, port)
		if err != nil {
			return sum, err
		}
		sum.Add(s)
	}
	return sum, nil
}

// PortStats sums a TCP Service port's data-plane counters over the CPUs
// of node n, from the node's pinned maps.
func PortStats(c lab.Config, n lab.Node, vip netip.Addr, port uint16) (bpf.LbServiceStats, error) {
	var sum bpf.LbServiceStats
	vips, err := ebpf.LoadPinnedMap(filepath.Join(c.PinDir(n), "vips"), nil)
	if err != nil {
		return sum, err
	}
	defer func() { _ = vips.Close() }()
	var info bpf.LbVipInfo
	if err := vips.Lookup(bpf.VipKeyFor(vip, port, dataplane.TCP), &info); err != nil {
		return sum, fmt.Errorf("%s has no VIP %s:%d: %w", n.Name, vip, port, err)
	}
	stats, err := ebpf.LoadPinnedMap(filepath.Join(c.PinDir(n), "stats"), nil)
	if err != nil {
		return sum, err
	}
	defer func() { _ = stats.Close() }()
	var per []bpf.LbServiceStats
	if err := stats.Lookup(info.ServiceId, &per); err != nil {
		return sum, err
	}
	for _, p := range per {
		sum.Add(p)
	}
	return sum, nil
}
