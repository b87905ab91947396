// Package ctl is ironlbctl's logic: a status report read from the API
// server, and one node's data plane read from its speaker.
package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/httpstream" //nolint:staticcheck // client-go v0.37's spdy and portforward still take these types
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/dataplane"
)

// Status writes the pools with their use per family, every LoadBalancer
// Service with its IPs and who announces them and how, the BGP sessions,
// and the warnings worth acting on. It returns the number of warnings.
func Status(ctx context.Context, c client.Reader, out io.Writer) (int, error) {
	var (
		pools ironlbv1alpha1.IPPoolList
		svcs  corev1.ServiceList
		anns  ironlbv1alpha1.AnnouncementList
		peers ironlbv1alpha1.BGPPeerList
	)
	for _, l := range []client.ObjectList{&pools, &svcs, &anns, &peers} {
		if err := c.List(ctx, l); err != nil {
			return 0, fmt.Errorf("list %T: %w", l, err)
		}
	}
	var warnings []string
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)

	_, _ = fmt.Fprintln(tw, "POOL\tIPv4 USED/TOTAL\tIPv6 USED/TOTAL\tREADY")
	slices.SortFunc(pools.Items, func(a, b ironlbv1alpha1.IPPool) int { return strings.Compare(a.Name, b.Name) })
	for _, p := range pools.Items {
		ready := "Unknown"
		if c := meta.FindStatusCondition(p.Status.Conditions, "Ready"); c != nil {
			ready = string(c.Status)
			if c.Status != "True" {
				warnings = append(warnings, fmt.Sprintf("pool %s is not Ready: %s: %s", p.Name, c.Reason, c.Message))
			}
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, family(p.Status.IPv4), family(p.Status.IPv6), ready)
	}
	_ = tw.Flush()

	byIP := map[string][]string{}
	for _, a := range anns.Items {
		how := "on " + strings.Join(a.Spec.Interfaces, ",")
		if a.Spec.Protocol == ironlbv1alpha1.ProtocolBGP {
			how = "to " + strings.Join(a.Spec.Peers, ",")
		}
		k := a.Namespace + "/" + a.Spec.Service + "/" + a.Spec.IP
		byIP[k] = append(byIP[k], fmt.Sprintf("%s by %s %s", a.Spec.Protocol, a.Spec.Node, how))
	}
	_, _ = fmt.Fprintln(out)
	_, _ = fmt.Fprintln(tw, "SERVICE\tIP\tANNOUNCED")
	slices.SortFunc(svcs.Items, func(a, b corev1.Service) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	for _, s := range svcs.Items {
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		name := s.Namespace + "/" + s.Name
		if len(s.Status.LoadBalancer.Ingress) == 0 {
			_, _ = fmt.Fprintf(tw, "%s\t<pending>\t\n", name)
			warnings = append(warnings, fmt.Sprintf("service %s has no IP: kubectl describe service -n %s %s shows why", name, s.Namespace, s.Name))
			continue
		}
		for _, ing := range s.Status.LoadBalancer.Ingress {
			who := byIP[name+"/"+ing.IP]
			slices.Sort(who)
			if len(who) == 0 {
				warnings = append(warnings, fmt.Sprintf("service %s: %s is announced by no node (no advertisement selects its pool, no ready endpoint, or no live speaker)", name, ing.IP))
				who = []string{"-"}
			}
			_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\n", name, ing.IP, strings.Join(who, "; "))
		}
	}
	_ = tw.Flush()

	if len(peers.Items) > 0 {
		_, _ = fmt.Fprintln(out)
		_, _ = fmt.Fprintln(tw, "BGP PEER\tADDRESS\tNODE\tSTATE\tFOR\tROUTES\tBFD\tGR")
		slices.SortFunc(peers.Items, func(a, b ironlbv1alpha1.BGPPeer) int { return strings.Compare(a.Name, b.Name) })
		for _, p := range peers.Items {
			addr := p.Spec.PeerAddress
			if addr == "" {
				addr = p.Spec.DynamicPeerPrefix + " (dynamic)"
			}
			if len(p.Status.Nodes) == 0 {
				_, _ = fmt.Fprintf(tw, "%s\t%s\t-\tno session yet\t\t\n", p.Name, addr)
				continue
			}
			for _, n := range p.Status.Nodes {
				since := ""
				if !n.Since.IsZero() {
					since = time.Since(n.Since.Time).Round(time.Second).String()
				}
				bfd := n.BFD
				if bfd == "" {
					bfd = "-"
				}
				gr := n.GracefulRestart
				if gr == "" {
					gr = "-"
				}
				at := addr
				if len(n.Routers) > 0 {
					at = p.Spec.DynamicPeerPrefix + ": " + strings.Join(n.Routers, ",")
				}
				_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", p.Name, at, n.Node, n.State, since, n.Prefixes, bfd, gr)
				switch {
				case n.State != "Established":
					warnings = append(warnings, fmt.Sprintf("BGP session %s from %s is %s: %s", p.Name, n.Node, n.State, n.Message))
				case n.BFD != "" && n.BFD != "Up":
					warnings = append(warnings, fmt.Sprintf("BFD session %s from %s is %s: %s", p.Name, n.Node, n.BFD, n.Message))
				case n.GracefulRestart == "NotSupportedByPeer":
					warnings = append(warnings, fmt.Sprintf("BGP session %s from %s: the peer does not offer graceful restart; a restart of the speaker withdraws its routes", p.Name, n.Node))
				case n.ExtendedNextHop == "NotSupportedByPeer":
					warnings = append(warnings, fmt.Sprintf("BGP session %s from %s: the peer does not offer the extended next hop capability; IPv4 routes go with the node's IPv4 address as next hop", p.Name, n.Node))
				}
			}
		}
		_ = tw.Flush()
	}

	_, _ = fmt.Fprintln(out)
	if len(warnings) == 0 {
		_, _ = fmt.Fprintln(out, "No warnings.")
	} else {
		_, _ = fmt.Fprintln(out, "WARNINGS")
		for _, w := range warnings {
			_, _ = fmt.Fprintln(out, "- "+w)
		}
	}
	return len(warnings), nil
}

func family(c *ironlbv1alpha1.FamilyCount) string {
	if c == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d", c.Used, c.Total)
}

// SpeakerSelector selects the speaker pods (the DaemonSet's labels).
const SpeakerSelector = "app.kubernetes.io/name=ironlb,app.kubernetes.io/component=speaker"

// ForwardDump reads node's data plane through the API server: a
// port-forward, as kubectl port-forward opens, to the speaker pod on that
// node, whose debug endpoint listens on its loopback only. The caller
// needs RBAC to create pods/portforward in the speakers' namespace.
func ForwardDump(ctx context.Context, cfg *rest.Config, c client.Reader, namespace, node string, port int) (*dataplane.Dump, error) {
	sel, err := labels.Parse(SpeakerSelector)
	if err != nil {
		return nil, err
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("find the speaker of %s: %w", node, err)
	}
	var pod string
	for _, p := range pods.Items {
		if p.Spec.NodeName == node && p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			pod = p.Name
		}
	}
	if pod == "" {
		return nil, fmt.Errorf("no running speaker pod on node %s in namespace %s (labels %s)", node, namespace, SpeakerSelector)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	u := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	var dialer httpstream.Dialer
	dialer = spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	// As kubectl: websockets first, SPDY when the server lacks them.
	if ws, err := portforward.NewSPDYOverWebsocketDialer(u, cfg); err == nil {
		dialer = portforward.NewFallbackDialer(ws, dialer, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		})
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	defer close(stop)
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return nil, err
	}
	errc := make(chan error, 1)
	go func() { errc <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errc:
		return nil, fmt.Errorf("port-forward to %s/%s: %w", namespace, pod, err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	fwd, err := fw.GetPorts()
	if err != nil || len(fwd) != 1 {
		return nil, fmt.Errorf("port-forward to %s/%s: %v", namespace, pod, err)
	}
	return LocalDump(ctx, &http.Client{Timeout: 30 * time.Second}, int(fwd[0].Local))
}

// LocalDump reads the data plane of the node it runs on, from the
// speaker's debug endpoint on 127.0.0.1:port.
func LocalDump(ctx context.Context, hc *http.Client, port int) (*dataplane.Dump, error) {
	url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + "/debug/dataplane"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the speaker's debug endpoint: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("the speaker's debug endpoint: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var d dataplane.Dump
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&d); err != nil {
		return nil, fmt.Errorf("the speaker's debug endpoint: %w", err)
	}
	return &d, nil
}

// PrintDump writes a node's data plane: its conntrack tables, then each
// port with the share of ring slots per node and the local endpoints.
func PrintDump(d *dataplane.Dump, node string, out io.Writer) {
	self := []string{}
	for _, a := range []netip.Addr{d.Self.V4, d.Self.V6} {
		if a.IsValid() {
			self = append(self, a.String())
		}
	}
	_, _ = fmt.Fprintf(out, "node %s (%s), Maglev ring of %d slots, %d links XDP may redirect to\n",
		node, strings.Join(self, ", "), d.RingSize, d.EndpointLinks)
	for _, t := range []string{"tier1", "tier2", "revnat"} {
		_, _ = fmt.Fprintf(out, "  conntrack %-6s %d of %d\n", t, d.Conntrack[t], d.Capacity[t])
	}
	_, _ = fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "VIP\tID\tFLAGS\tRING (slots per node)\tLOCAL ENDPOINTS")
	for _, p := range d.Ports {
		var flags []string
		if p.Affinity {
			flags = append(flags, "affinity")
		}
		if p.Local {
			flags = append(flags, "local")
		}
		var ring []string
		for n, slots := range p.Ring {
			ring = append(ring, fmt.Sprintf("%s=%d", n, slots))
		}
		slices.Sort(ring)
		_, _ = fmt.Fprintf(tw, "%s/%s\t%d\t%s\t%s\t%s\n", netip.AddrPortFrom(p.VIP, p.Port), p.Protocol, p.ID,
			strings.Join(flags, ","), strings.Join(ring, " "), strings.Join(p.Endpoints, " "))
	}
	_ = tw.Flush()
}
