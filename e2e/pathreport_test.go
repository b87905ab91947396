package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/pkg/lab"
)

// pathReport describes, for a failed test, the path a BGP VIP's traffic
// takes: lab-client's route, the router's, the Service's EndpointSlices as
// the API server has them, and on every node the data plane's drops
// (--dataplane=xdp) or kube-proxy's last sync and its nftables chains for
// the VIP (kernel).
func pathReport(svc string, vip netip.Addr) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var b strings.Builder
	run := func(name string, args ...string) string {
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			return fmt.Sprintf("%s %v: %v: %s", name, args, err, out)
		}
		return string(out)
	}
	fam := "-4"
	table := "ip"
	if vip.Is6() {
		fam, table = "-6", "ip6"
	}
	fmt.Fprintf(&b, "--- %s: route: %s", lab.ClientNS, run("ip", "-n", lab.ClientNS, fam, "route", "get", vip.String()))
	fmt.Fprintf(&b, "--- %s: route: %s", lab.RouterNS, run("ip", "-n", lab.RouterNS, fam, "route", "show", vip.String()))
	var slices discoveryv1.EndpointSliceList
	if err := cl.List(ctx, &slices, client.InNamespace("default"), client.MatchingLabels{discoveryv1.LabelServiceName: svc}); err != nil {
		fmt.Fprintf(&b, "--- EndpointSlices: %v\n", err)
	}
	for _, s := range slices.Items {
		fmt.Fprintf(&b, "--- EndpointSlice %s (resourceVersion %s):", s.Name, s.ResourceVersion)
		for _, e := range s.Endpoints {
			node := ""
			if e.NodeName != nil {
				node = *e.NodeName
			}
			fmt.Fprintf(&b, " %v@%s ready=%v", e.Addresses, node, e.Conditions.Ready != nil && *e.Conditions.Ready)
		}
		b.WriteString("\n")
	}
	ref := regexp.MustCompile(`(?:goto|jump) ([A-Za-z0-9_-]+)`)
	for _, n := range cfg.NodeList() {
		if cfg.Dataplane == "xdp" {
			fmt.Fprintf(&b, "--- %s: data plane drops: %s\n", n.Name, metricLines(ctx, n, "127.0.0.1:7473", "ironlb_dataplane_drops_total"))
			continue
		}
		fmt.Fprintf(&b, "--- %s: kube-proxy (now %d): %s\n", n.Name, time.Now().Unix(), metricLines(ctx, n, "127.0.0.1:10249",
			"kubeproxy_sync_proxy_rules_last_timestamp_seconds", "kubeproxy_sync_proxy_rules_duration_seconds_count"))
		all := run("ip", "netns", "exec", n.NS, "nft", "list", "table", table, "kube-proxy")
		var todo []string
		for _, line := range strings.Split(all, "\n") {
			if strings.Contains(line, vip.String()) {
				fmt.Fprintf(&b, "  %s\n", strings.TrimSpace(line))
				for _, m := range ref.FindAllStringSubmatch(line, -1) {
					todo = append(todo, m[1])
				}
			}
		}
		seen := map[string]bool{}
		for len(todo) > 0 && len(seen) < 12 {
			c := todo[0]
			todo = todo[1:]
			if seen[c] {
				continue
			}
			seen[c] = true
			chain := run("ip", "netns", "exec", n.NS, "nft", "list", "chain", table, "kube-proxy", c)
			b.WriteString(chain)
			for _, m := range ref.FindAllStringSubmatch(chain, -1) {
				todo = append(todo, m[1])
			}
		}
	}
	return b.String()
}

// metricLines returns the lines of a node's metrics endpoint (addr, in
// the node's namespace) that start with one of the prefixes.
func metricLines(ctx context.Context, n lab.Node, addr string, prefixes ...string) string {
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return lab.DialIn(ctx, n.NS, network, addr)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return err.Error()
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
			}
		}
	}
	return strings.Join(out, "; ")
}
