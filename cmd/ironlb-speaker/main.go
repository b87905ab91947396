// Command ironlb-speaker runs on every node: it announces the node's share of
// the LoadBalancer IPs by ARP/NDP and, with --dataplane=xdp, forwards their
// traffic. SIGTERM hands its IPs over to the other nodes at once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ironlb/ironlb/internal/flagenv"
	"github.com/ironlb/ironlb/internal/uninstall"
	"github.com/ironlb/ironlb/pkg/dataplane/loader"
	"github.com/ironlb/ironlb/pkg/speaker"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ironlb-speaker:", err)
		os.Exit(1)
	}
}

func run() error {
	opts := speaker.DefaultOptions()
	fs := flag.NewFlagSet("ironlb-speaker", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "path to a kubeconfig; empty means in-cluster")
	fs.StringVar(&opts.NodeName, "node-name", os.Getenv("NODE_NAME"), "the node this speaker runs on (required; env NODE_NAME)")
	fs.StringVar(&opts.Namespace, "namespace", envOr("POD_NAMESPACE", opts.Namespace), "the speaker's namespace, the only one it reads BGP password Secrets from (env POD_NAMESPACE)")
	fs.StringVar(&opts.Dataplane, "dataplane", opts.Dataplane, "xdp forwards VIP traffic in XDP; kernel only announces and leaves forwarding to kube-proxy or the CNI")
	fs.StringVar(&opts.MetricsAddr, "metrics-addr", opts.MetricsAddr, "address of the Prometheus metrics endpoint; 0 disables it")
	fs.StringVar(&opts.HealthAddr, "health-addr", opts.HealthAddr, "address of the /healthz and /readyz probes; 0 disables them")
	fs.StringVar(&opts.DebugAddr, "debug-addr", opts.DebugAddr, "loopback address of /debug/dataplane (ironlbctl dataplane dump reaches it by port-forward); 0 disables it")
	fs.IntVar(&opts.Members.Port, "memberlist-port", opts.Members.Port, "UDP and TCP port the speakers use to watch each other")
	fs.StringVar(&opts.Members.BindAddr, "memberlist-bind-addr", "", "address the member list binds and advertises; empty means the node's InternalIP")
	fs.DurationVar(&opts.Members.ProbeInterval, "memberlist-probe-interval", opts.Members.ProbeInterval, "how often each speaker probes another")
	fs.DurationVar(&opts.Members.ProbeTimeout, "memberlist-probe-timeout", opts.Members.ProbeTimeout, "how long a probe waits for its answer")
	fs.IntVar(&opts.Members.SuspicionMult, "memberlist-suspicion-mult", opts.Members.SuspicionMult, "suspicion lasts this many probe intervals (scaled by log10 of the members) before a node is dead")
	fs.StringVar(&opts.Members.SecretName, "memberlist-secret-name", opts.Members.SecretName, "Secret in the speaker's namespace whose \"secretkey\" entry encrypts and authenticates member traffic (other entries are accepted too, for rotations); the controller creates it")
	fs.BoolVar(&opts.Members.Insecure, "memberlist-insecure", false, "run without the memberlist key: member traffic is plaintext and any host on the node network can join the member list and move IPs")
	fs.DurationVar(&opts.Members.KeyWait, "memberlist-key-wait", opts.Members.KeyWait, "how long a starting speaker waits for the memberlist key Secret before it exits")
	fs.DurationVar(&opts.Members.KeyGrace, "memberlist-key-grace", opts.Members.KeyGrace, "how long a new key waits before it encrypts, and an old one is still accepted, while the speakers read a changed Secret")
	fs.DurationVar(&opts.Layer2.Refresh, "l2-refresh", opts.Layer2.Refresh, "re-announce owned IPs unasked this often so switch tables do not age out; 0 disables")
	fs.DurationVar(&opts.Resync, "resync", opts.Resync, "recompute all announcements this often even without changes")
	fs.DurationVar(&opts.BGPGracefulShutdown, "bgp-graceful-shutdown", opts.BGPGracefulShutdown, "how long a drained or uninstalled node advertises its routes with the GRACEFUL_SHUTDOWN community before it withdraws them (0: withdraw at once)")
	bpffs := fs.String("bpffs", "/sys/fs/bpf", "a bpffs mount; the data plane pins its maps and links in its ironlb directory")
	ifaces := fs.String("interfaces", "", "comma-separated interfaces that get the data plane (XDP and TC egress); empty means the one holding the node's InternalIP")
	fs.StringVar(&opts.XDP.XDPMode, "xdp-mode", opts.XDP.XDPMode, "native, generic, or auto (native where the driver supports it)")
	ringSize := fs.Uint("maglev-table-size", uint(opts.XDP.RingSize), "slots of each Maglev ring, a prime from 251 to 131071")
	flows := fs.Uint("conntrack-size", uint(opts.XDP.Flows), "established flows each conntrack table keeps")
	newFlows := fs.Uint("unverified-conntrack-size", 0, "unverified flows (lone SYNs, young UDP flows) each of their tables keeps; 0: --conntrack-size/8, at least 1024")
	newFlowRate := fs.Uint("new-flow-rate", uint(opts.XDP.NewFlowRate), "flood guard: above this many new flows a second on one CPU, the data plane records no more (the Maglev ring still sends them); 0 turns it off")
	synCookieRate := fs.Uint("syn-cookie-rate", uint(opts.XDP.SynCookieRate), "SYN cookies: above this many never-seen SYNs a second to one Service port on one CPU, the port answers SYNs itself with SYN cookies for at least 5 s, and only clients that complete the handshake reach an endpoint; 0 turns them off")
	fs.BoolVar(&opts.XDP.EndpointRedirect, "xdp-endpoint-redirect", false, "send packets for this node's endpoints to the pods' veths in XDP rather than through the kernel's forwarding; needs NAPI on the pods' ends of the veths (GRO on, or an XDP program), which the CNI sets")
	fs.DurationVar(&opts.XDP.RingHistory, "ring-history", opts.XDP.RingHistory, "how long each Service port's previous Maglev ring is kept after a change: a flow that lost its tier-1 entry (a new receiving node) and whose slot moved is passed on to the previous ring's node, which still holds it; 0 keeps no history")
	fs.DurationVar(&opts.XDP.StaleAfter, "dataplane-stale-after", opts.XDP.StaleAfter, "how long the data plane forwards without its speaker; after that VIP traffic goes to the kernel untouched (0: forever)")
	daemonset := fs.String("daemonset-name", "ironlb-speaker", "the speaker's DaemonSet in --namespace: when it (or the namespace) is deleted, the install is being removed and a stopping speaker detaches its data plane (as --cleanup); empty turns this off")
	cleanup := fs.Bool("cleanup", false, "detach the data plane, remove its pinned maps and exit (run when uninstalling)")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if err := flagenv.Apply(fs, "IRONLB_"); err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	opts.XDP.PinDir = filepath.Join(*bpffs, "ironlb")
	if *ifaces != "" {
		opts.XDP.Interfaces = strings.Split(*ifaces, ",")
	}
	for name, v := range map[string]uint{"conntrack-size": *flows, "unverified-conntrack-size": *newFlows, "new-flow-rate": *newFlowRate, "syn-cookie-rate": *synCookieRate} {
		if v > math.MaxUint32 {
			return fmt.Errorf("--%s %d: more than %d", name, v, uint32(math.MaxUint32))
		}
	}
	opts.XDP.RingSize, opts.XDP.Flows = uint32(*ringSize), uint32(*flows)
	opts.XDP.NewFlows, opts.XDP.NewFlowRate, opts.XDP.SynCookieRate = uint32(*newFlows), uint32(*newFlowRate), uint32(*synCookieRate)
	if *cleanup {
		return loader.Cleanup(opts.XDP.PinDir)
	}
	if opts.Dataplane == "kernel" {
		// A program an earlier xdp run left attached would go on
		// forwarding with frozen rings: kube-proxy or the CNI
		// forwards now.
		if err := loader.Cleanup(opts.XDP.PinDir); err != nil {
			return fmt.Errorf("--dataplane=kernel: detach the data plane an earlier run left: %w", err)
		}
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.UserAgent = "ironlb-speaker"
	// The uninstall watch outlives the speaker's own context: it must
	// still answer after SIGTERM.
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	var w *uninstall.Watch
	if *daemonset != "" {
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		w = uninstall.Start(wctx, cs, opts.Namespace, uninstall.DaemonSet, *daemonset)
		// A restart or an upgrade leaves the routes to graceful restart
		// and the data plane forwarding for the next speaker; an
		// uninstall leaves nothing. The deletion that sent SIGTERM may
		// still be on its way: give it a moment.
		opts.Uninstalling = func() bool { return w.Settle(500 * time.Millisecond) }
	}
	s, err := speaker.New(cfg, opts)
	if err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	err = s.Start(ctx)
	if ctx.Err() != nil && w != nil && opts.Dataplane != "kernel" && w.Uninstalling() {
		ctrl.Log.WithName("uninstall").Info("the install is being removed: detaching the data plane and removing its pins", "pins", opts.XDP.PinDir)
		if cerr := loader.Cleanup(opts.XDP.PinDir); cerr != nil {
			err = errors.Join(err, fmt.Errorf("uninstall: %w", cerr))
		}
	}
	return err
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
