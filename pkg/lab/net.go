package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/ironlb/ironlb/internal/nsrun"
)

// sh runs iproute2's ip and returns its error with its output.
func sh(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ipn runs `ip -n NS ...`.
func ipn(ctx context.Context, ns string, args ...string) error {
	return sh(ctx, append([]string{"-n", ns}, args...)...)
}

// sysctl sets kernel parameters inside a namespace.
func sysctl(ctx context.Context, ns string, kv ...string) error {
	return sh(ctx, append([]string{"netns", "exec", ns, "sysctl", "-qw"}, kv...)...)
}

// Namespaces lists the network namespaces that carry the lab prefix.
func Namespaces(ctx context.Context) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], Prefix) {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// buildNetwork creates the namespaces, the bridge, the veths, addresses and
// routes. Only lab namespaces are touched: every link is created directly
// inside its namespace.
func (c Config) buildNetwork(ctx context.Context) error {
	nodes := c.NodeList()
	pods := c.Pods()
	all := []string{FabricNS, ClientNS, RouterNS}
	if c.Kubelet {
		all = append(all, ControlNS)
	}
	for _, n := range nodes {
		all = append(all, n.NS)
	}
	for _, p := range pods {
		all = append(all, p.NS)
	}
	for _, ns := range all {
		if err := sh(ctx, "netns", "add", ns); err != nil {
			return err
		}
		if err := ipn(ctx, ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
		// No duplicate address detection: addresses are usable at once.
		if err := sysctl(ctx, ns, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"); err != nil {
			return err
		}
	}

	// The fabric: one bridge, multicast snooping off so NDP's solicited-node
	// multicast reaches every port, like an unmanaged switch.
	if err := ipn(ctx, FabricNS, "link", "add", BridgeName, "type", "bridge", "mcast_snooping", "0"); err != nil {
		return err
	}
	if err := ipn(ctx, FabricNS, "link", "set", BridgeName, "up"); err != nil {
		return err
	}
	attach := func(ns, fabLink, v4, v6 string) error {
		if err := ipn(ctx, FabricNS, "link", "add", fabLink, "type", "veth", "peer", "name", "eth0", "netns", ns); err != nil {
			return err
		}
		steps := [][]string{
			{FabricNS, "link", "set", fabLink, "master", BridgeName},
			{FabricNS, "link", "set", fabLink, "up"},
			{ns, "addr", "add", v4 + "/24", "dev", "eth0"},
			{ns, "addr", "add", v6 + "/64", "dev", "eth0", "nodad"},
			{ns, "link", "set", "eth0", "up"},
		}
		for _, s := range steps {
			if err := ipn(ctx, s[0], s[1:]...); err != nil {
				return err
			}
		}
		return nil
	}
	if err := attach(RouterNS, "fab-router", RouterIPv4, RouterIPv6); err != nil {
		return err
	}
	if err := attach(ClientNS, "fab-client", ClientIPv4, ClientIPv6); err != nil {
		return err
	}
	// The client reaches the pool's VIPs on-link: it ARPs / solicits for
	// them on the bridge, which is what layer-2 announcement answers.
	// The BGP pool's VIPs it reaches through the router, which has
	// routes to them from BIRD.
	for _, r := range [][]string{
		{"route", "add", PoolIPv4, "dev", "eth0"},
		{"-6", "route", "add", PoolIPv6, "dev", "eth0"},
		{"route", "add", BGPPoolIPv4, "via", RouterIPv4},
		{"-6", "route", "add", BGPPoolIPv6, "via", RouterIPv6},
	} {
		if err := ipn(ctx, ClientNS, r...); err != nil {
			return err
		}
	}
	if err := sysctl(ctx, RouterNS, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"); err != nil {
		return err
	}
	// The router forwards the client's packets back out of the interface
	// they came in on (client and nodes share the bridge), so Linux would
	// send the client ICMP redirects, and the client would then go
	// straight to one node for five minutes: around BIRD's routes and its
	// ECMP, which the BGP tests are about. A fabric's router and its
	// clients are not on one segment; the lab's are, so neither end
	// takes part in redirects.
	if err := sysctl(ctx, RouterNS, "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0"); err != nil {
		return err
	}
	if err := sysctl(ctx, ClientNS, "net.ipv4.conf.all.accept_redirects=0", "net.ipv4.conf.eth0.accept_redirects=0",
		"net.ipv6.conf.all.accept_redirects=0", "net.ipv6.conf.eth0.accept_redirects=0"); err != nil {
		return err
	}
	if c.Kubelet {
		// The control plane: on the fabric, with routes to every node's
		// pods (the controller pods reach the API server from there).
		if err := attach(ControlNS, "fab-control", ControlIPv4, ControlIPv6); err != nil {
			return err
		}
		for _, n := range nodes {
			for _, r := range [][]string{
				{"route", "add", n.PodCIDR4.String(), "via", n.IPv4.String()},
				{"-6", "route", "add", n.PodCIDR6.String(), "via", n.IPv6.String()},
			} {
				if err := ipn(ctx, ControlNS, r...); err != nil {
					return err
				}
			}
		}
	}

	for _, n := range nodes {
		if err := attach(n.NS, n.FabricLink, n.IPv4.String(), n.IPv6.String()); err != nil {
			return err
		}
		if err := sysctl(ctx, n.NS, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"); err != nil {
			return err
		}
		routes := [][]string{
			{"route", "add", "default", "via", RouterIPv4},
			{"-6", "route", "add", "default", "via", RouterIPv6},
		}
		for _, o := range nodes {
			if o.Name == n.Name {
				continue
			}
			routes = append(routes,
				[]string{"route", "add", o.PodCIDR4.String(), "via", o.IPv4.String()},
				[]string{"-6", "route", "add", o.PodCIDR6.String(), "via", o.IPv6.String()})
		}
		for _, r := range routes {
			if err := ipn(ctx, n.NS, r...); err != nil {
				return err
			}
		}
	}

	// Pods: a veth to their node, a /32 (/128) address, and the node's
	// side as gateway, like a host-gw CNI.
	for _, p := range pods {
		gw4 := p.Node.PodCIDR4.Addr().Next().String()
		gw6 := p.Node.PodCIDR6.Addr().Next().String()
		steps := [][]string{
			{p.Node.NS, "link", "add", p.HostLink, "type", "veth", "peer", "name", "eth0", "netns", p.NS},
			{p.Node.NS, "addr", "add", gw4 + "/32", "dev", p.HostLink},
			{p.Node.NS, "addr", "add", gw6 + "/128", "dev", p.HostLink, "nodad"},
			{p.Node.NS, "link", "set", p.HostLink, "up"},
			{p.Node.NS, "route", "add", p.IPv4.String() + "/32", "dev", p.HostLink},
			{p.Node.NS, "-6", "route", "add", p.IPv6.String() + "/128", "dev", p.HostLink},
			{p.NS, "addr", "add", p.IPv4.String() + "/32", "dev", "eth0"},
			{p.NS, "addr", "add", p.IPv6.String() + "/128", "dev", "eth0", "nodad"},
			{p.NS, "link", "set", "eth0", "up"},
			{p.NS, "route", "add", gw4, "dev", "eth0", "scope", "link"},
			{p.NS, "route", "add", "default", "via", gw4, "dev", "eth0"},
			{p.NS, "-6", "route", "add", gw6, "dev", "eth0"},
			{p.NS, "-6", "route", "add", "default", "via", gw6, "dev", "eth0"},
		}
		for _, s := range steps {
			if err := ipn(ctx, s[0], s[1:]...); err != nil {
				return err
			}
		}
		// GRO on the pod's end turns on its NAPI, which a veth needs to
		// take the frames the xdp data plane redirects to it
		// (--xdp-endpoint-redirect).
		if err := nsrun.In(p.NS, func() error { return NAPIOn("eth0") }); err != nil {
			return fmt.Errorf("%s: %w", p.NS, err)
		}
	}
	return nil
}

// deleteNetwork removes every lab namespace, after killing what runs in it.
func deleteNetwork(ctx context.Context) error {
	names, err := Namespaces(ctx)
	if err != nil {
		return err
	}
	for _, ns := range names {
		killNamespacePids(ctx, ns)
		if err := sh(ctx, "netns", "delete", ns); err != nil {
			return err
		}
	}
	return nil
}

// killNamespacePids kills any process still inside a lab namespace.
func killNamespacePids(ctx context.Context, ns string) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 && pid != os.Getpid() {
			killPid(pid)
		}
	}
}
