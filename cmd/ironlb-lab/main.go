// Command ironlb-lab runs a whole ironlb cluster on one Linux machine, in
// network namespaces: see docs/lab.md.
//
//	ironlb-lab up [--nodes 3] [--dataplane xdp|kernel]
//	ironlb-lab status
//	ironlb-lab exec client -- curl -s http://10.89.100.1/
//	ironlb-lab kubeconfig
//	ironlb-lab bench failover [--runs 20]
//	ironlb-lab down
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/dataplane"
	"github.com/ironlb/ironlb/pkg/lab"
	"github.com/ironlb/ironlb/pkg/lab/bench"
)

const usage = `usage: ironlb-lab [--dir DIR] COMMAND

commands:
  up [--nodes N] [--dataplane xdp|kernel] [--bgp] [--kubelet]
                                        build the lab (cleans an earlier one first); --kubelet:
                                        real containerd and kubelet per node, ironlb installed
                                        from manifests/ with the images of make images
  down                                  remove every namespace, process and state file of the lab
  status                                show processes, the demo Service and who announces it
  exec NS -- CMD...                     run CMD in a lab namespace (client, router, fabric, a, node-a, demo-a-0)
  kubeconfig                            print the kubeconfig path
  bench failover [--runs N] [--kind kill|link|term|all] [--memberlist key|insecure|both]
                                        measure L2 failover from a client probing every 10 ms
  bench bgp [--runs N]                  time from a new Service to its route in BIRD, and from
                                        SIGTERM of a speaker to its route gone from BIRD
  bench pps [--frames N]                packets per second to the backends, xdp then kernel
                                        data plane, same generator (leaves the lab down)
  bench flood [--frames N] [--syn-cookie-rate R]
                                        SYNs of a flood that reach endpoints, without SYN cookies
                                        and with them (same run)
  bench churn [--conns N]               connections reset by a drain with an L2 failover, without
                                        ring history then with it
`

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ironlb-lab:", err)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.ExitCode())
		}
		os.Exit(1)
	}
}

// repoRoot is the folder above the binary's bin/, where manifests/ lives;
// else the working directory.
func repoRoot() string {
	if exe, err := os.Executable(); err == nil {
		root := filepath.Dir(filepath.Dir(exe))
		if _, err := os.Stat(filepath.Join(root, "manifests", "crd")); err == nil {
			return root
		}
	}
	wd, _ := os.Getwd()
	return wd
}

func run() error {
	// controller-runtime's client would log on its own; the lab prints
	// its own progress.
	ctrllog.SetLogger(logr.Discard())
	root := repoRoot()
	global := flag.NewFlagSet("ironlb-lab", flag.ContinueOnError)
	global.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	dir := global.String("dir", filepath.Join(root, ".lab"), "state folder of the lab")
	if err := global.Parse(os.Args[1:]); err != nil {
		return err
	}
	args := global.Args()
	if len(args) == 0 {
		global.Usage()
		return errors.New("no command")
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch cmd, rest := args[0], args[1:]; cmd {
	case "up":
		cfg := lab.DefaultConfig(abs)
		fs := flag.NewFlagSet("up", flag.ContinueOnError)
		fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "number of nodes (1-20)")
		fs.StringVar(&cfg.Dataplane, "dataplane", cfg.Dataplane, "xdp: ironlb forwards in XDP (no kube-proxy); kernel: kube-proxy forwards")
		fs.BoolVar(&cfg.Kubelet, "kubelet", false, "run a real containerd and kubelet in every node and install ironlb from the kustomize base with the images of make images (see docs/lab.md)")
		images := fs.String("images", filepath.Join(root, "_output", "images"), "image tarballs for --kubelet (make images)")
		fs.BoolVar(&cfg.BGP, "bgp", false, "put the demo Service in the BGP pool: the client reaches it through lab-router (BIRD, ECMP over the nodes)")
		pool := fs.String("pool", strings.Join(cfg.Pool, ","), "addresses of the sample IPPool")
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if cfg.Nodes < 1 || cfg.Nodes > 20 {
			return fmt.Errorf("--nodes %d: want 1 to 20", cfg.Nodes)
		}
		cfg.Pool = strings.Split(*pool, ",")
		cfg.Images = *images
		cfg.Bin = filepath.Join(root, "bin")
		cfg.K8sBin = envOr("IRONLB_K8S_BIN", filepath.Join(root, "bin", "k8s"))
		ips, err := cfg.Up(ctx, root, os.Stdout)
		if err != nil {
			return err
		}
		body, _ := cfg.Get(ctx, ips[0])
		fmt.Printf("\nThe lab is up. Service default/%s has %v; %s answered.\n\n", lab.DemoService, ips, firstWord(body))
		fmt.Printf("  export KUBECONFIG=%s\n", cfg.Kubeconfig())
		fmt.Printf("  kubectl get svc,announcements -A     (kubectl is not installed by the lab)\n")
		fmt.Printf("  %s exec client -- curl -s http://%s/\n", os.Args[0], ips[0])
		fmt.Printf("  %s down\n", os.Args[0])
		return nil
	case "down":
		return lab.Down(ctx, abs)
	case "kubeconfig":
		cfg, err := lab.Load(abs)
		if err != nil {
			return err
		}
		fmt.Println(cfg.Kubeconfig())
		return nil
	case "exec":
		if len(rest) < 1 {
			return errors.New("usage: exec NS -- CMD")
		}
		ns, argv := rest[0], rest[1:]
		if len(argv) > 0 && argv[0] == "--" {
			argv = argv[1:]
		}
		cfg, err := lab.Load(abs)
		if err != nil {
			return err
		}
		return cfg.Exec(ctx, ns, argv, os.Stdin, os.Stdout, os.Stderr)
	case "status":
		cfg, err := lab.Load(abs)
		if err != nil {
			return err
		}
		return status(ctx, cfg)
	case "agent":
		cfg, err := lab.Load(abs)
		if err != nil {
			return err
		}
		return cfg.RunAgent(ctx)
	case "hold":
		// Internal: a kubelet lab node's mount namespace holder.
		fs := flag.NewFlagSet("hold", flag.ContinueOnError)
		node := fs.String("node", "", "the node")
		if err := fs.Parse(rest); err != nil {
			return err
		}
		cfg, err := lab.Load(abs)
		if err != nil {
			return err
		}
		return cfg.Hold(ctx, *node)
	case "backend":
		// The kubelet lab's demo pods (image localhost/ironlb-lab).
		name := os.Getenv("POD_NAME")
		if name == "" {
			name, _ = os.Hostname()
		}
		return lab.ServeBackend(ctx, name)
	case "pause":
		// The kubelet lab's pod sandbox (image localhost/ironlb-lab-pause).
		<-ctx.Done()
		return nil
	case "bench":
		if len(rest) >= 1 && rest[0] == "pps" {
			fs := flag.NewFlagSet("bench pps", flag.ContinueOnError)
			frames := fs.Uint("frames", 3_000_000, "frames sent to each data plane")
			current := fs.Bool("current", false, "measure the lab that is up, as it is, and leave it up")
			if err := fs.Parse(rest[1:]); err != nil {
				return err
			}
			if *current {
				cfg, err := lab.Load(abs)
				if err != nil {
					return err
				}
				cl, err := cfg.Client()
				if err != nil {
					return err
				}
				ips, err := lab.WaitServiceIPs(ctx, cl, types.NamespacedName{Namespace: "default", Name: lab.DemoService}, 2, 10*time.Second)
				if err != nil {
					return err
				}
				for _, ip := range ips {
					if ip.Is4() {
						r, err := bench.PPS(ctx, cfg, ip, uint32(min(*frames, bench.MaxFrames)))
						if err != nil {
							return err
						}
						fmt.Println(r)
					}
				}
				return nil
			}
			return benchPPS(ctx, abs, root, uint32(min(*frames, bench.MaxFrames)))
		}
		if len(rest) >= 1 && rest[0] == "churn" {
			fs := flag.NewFlagSet("bench churn", flag.ContinueOnError)
			conns := fs.Int("conns", 10000, "connections held through each drain with failover")
			if err := fs.Parse(rest[1:]); err != nil {
				return err
			}
			cfg, err := xdpLab(abs, "bench churn")
			if err != nil {
				return err
			}
			var res []bench.ChurnResult
			for _, history := range []bool{false, true} {
				r, err := bench.Churn(ctx, cfg, *conns, history, os.Stderr)
				if err != nil {
					return err
				}
				fmt.Println(r)
				res = append(res, r)
			}
			fmt.Printf("drain + failover: %.0f resets per 10 000 connections without ring history, %.0f with it (same run)\n",
				res[0].PerTenThousand(), res[1].PerTenThousand())
			return nil
		}
		if len(rest) >= 1 && rest[0] == "flood" {
			fs := flag.NewFlagSet("bench flood", flag.ContinueOnError)
			frames := fs.Uint("frames", 1<<20, "never-seen SYNs in each flood")
			rate := fs.Uint("syn-cookie-rate", uint(dataplane.DefaultSynCookieRate), "the speakers' --syn-cookie-rate in the flood with cookies")
			if err := fs.Parse(rest[1:]); err != nil {
				return err
			}
			cfg, err := xdpLab(abs, "bench flood")
			if err != nil {
				return err
			}
			if *frames > bench.MaxFloodFrames/2 || *rate > math.MaxUint32 {
				return fmt.Errorf("--frames %d, --syn-cookie-rate %d: too many", *frames, *rate)
			}
			res, err := bench.FloodCookies(ctx, cfg, uint32(*frames), uint32(*rate))
			if err != nil {
				return err
			}
			for _, r := range res {
				fmt.Println(r)
			}
			fmt.Printf("SYN flood: %d SYNs reached endpoints without cookies, %d with them: %.3fx (same run)\n",
				res[0].Placed, res[1].Placed, float64(res[1].Placed)/float64(max(res[0].Placed, 1)))
			return nil
		}
		if len(rest) >= 1 && rest[0] == "bgp" {
			fs := flag.NewFlagSet("bench bgp", flag.ContinueOnError)
			runs := fs.Int("runs", 10, "repetitions (1-100)")
			cuts := fs.Int("link-cuts", 3, "link cuts with BGP alone, then as many with BFD (0-20)")
			if err := fs.Parse(rest[1:]); err != nil {
				return err
			}
			if *runs < 1 || *runs > 100 {
				return fmt.Errorf("--runs %d: want 1 to 100", *runs)
			}
			if *cuts < 0 || *cuts > 20 {
				return fmt.Errorf("--link-cuts %d: want 0 to 20", *cuts)
			}
			cfg, err := lab.Load(abs)
			if err != nil {
				return err
			}
			res, err := bench.BGP(ctx, cfg, *runs, os.Stderr)
			if err != nil {
				return err
			}
			for _, r := range res {
				fmt.Println(r)
			}
			if *cuts > 0 {
				cut, err := bench.LinkCut(ctx, cfg, *cuts, os.Stderr)
				if err != nil {
					return err
				}
				fmt.Println(cut[0])
				fmt.Println(cut[1])
				fmt.Printf("bgp link cut: with BFD the route goes %.1fx sooner than by the hold time (p50, same run)\n",
					float64(cut[0].P50)/float64(cut[1].P50))
			}
			return nil
		}
		if len(rest) < 1 || rest[0] != "failover" {
			return errors.New("usage: bench failover [--runs N] [--kind kill|link|term|all] | bench bgp [--runs N] [--link-cuts N] | bench pps [--frames N] | bench churn [--conns N] | bench flood [--frames N] [--syn-cookie-rate R]")
		}
		fs := flag.NewFlagSet("bench failover", flag.ContinueOnError)
		runs := fs.Int("runs", 20, "repetitions of each kind of death (1-100)")
		kind := fs.String("kind", "all", "kill (kill -9 of the owner's speaker), link (owner's link cut), term (SIGTERM to the owner's speaker) or all")
		keyMode := fs.String("memberlist", "both", "key (the speakers as installed), insecure (--memberlist-insecure) or both, one after the other for each kind")
		if err := fs.Parse(rest[1:]); err != nil {
			return err
		}
		if *runs < 1 || *runs > 100 {
			return fmt.Errorf("--runs %d: want 1 to 100", *runs)
		}
		cfg, err := lab.Load(abs)
		if err != nil {
			return err
		}
		var kinds []lab.Death
		switch *kind {
		case "kill":
			kinds = []lab.Death{lab.KillSpeaker}
		case "link":
			kinds = []lab.Death{lab.CutLink}
		case "term":
			kinds = []lab.Death{lab.StopSpeaker}
		case "all":
			kinds = []lab.Death{lab.KillSpeaker, lab.CutLink, lab.StopSpeaker}
		default:
			return fmt.Errorf("--kind %q: want kill, link, term or all", *kind)
		}
		var modes []bool
		switch *keyMode {
		case "key":
			modes = []bool{false}
		case "insecure":
			modes = []bool{true}
		case "both":
			modes = []bool{false, true}
		default:
			return fmt.Errorf("--memberlist %q: want key, insecure or both", *keyMode)
		}
		for _, k := range kinds {
			for _, insecure := range modes {
				if cfg.MemberlistInsecure != insecure {
					cfg.MemberlistInsecure = insecure
					if err := cfg.RestartSpeakers(ctx); err != nil {
						return err
					}
				}
				res, err := bench.Failover(ctx, cfg, k, *runs, os.Stderr)
				if err != nil {
					return err
				}
				fmt.Println(res)
			}
		}
		if cfg.MemberlistInsecure {
			cfg.MemberlistInsecure = false
			return cfg.RestartSpeakers(ctx)
		}
		return nil
	default:
		global.Usage()
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// benchPPS brings the lab up with each data plane in turn, floods the
// demo VIP with the same generator and frame, and prints both rates and
// their ratio. It leaves the lab down.
// xdpLab loads the lab in dir for a measurement (what) of the xdp data
// plane.
func xdpLab(dir, what string) (lab.Config, error) {
	cfg, err := lab.Load(dir)
	if err != nil {
		return cfg, err
	}
	if cfg.Dataplane != "xdp" {
		return cfg, fmt.Errorf("%s measures the xdp data plane; the lab runs %s", what, cfg.Dataplane)
	}
	return cfg, nil
}

func benchPPS(ctx context.Context, dir, root string, frames uint32) error {
	defer func() { _ = lab.Down(context.WithoutCancel(ctx), dir) }()
	var res []bench.PPSResult
	for _, dp := range []string{"xdp", "kernel"} {
		cfg := lab.DefaultConfig(dir)
		cfg.Dataplane = dp
		cfg.Bin = filepath.Join(root, "bin")
		cfg.K8sBin = envOr("IRONLB_K8S_BIN", filepath.Join(root, "bin", "k8s"))
		ips, err := cfg.Up(ctx, root, os.Stderr)
		if err != nil {
			return err
		}
		var vip netip.Addr
		for _, ip := range ips {
			if ip.Is4() {
				vip = ip
			}
		}
		r, err := bench.PPS(ctx, cfg, vip, frames)
		if err != nil {
			return fmt.Errorf("%s: %w", dp, err)
		}
		fmt.Println(r)
		res = append(res, r)
	}
	fmt.Printf("xdp/kernel: %.2fx\n", res[0].Rate()/res[1].Rate())
	return nil
}

func status(ctx context.Context, cfg lab.Config) error {
	fmt.Printf("lab in %s: %d nodes, data plane %s, kubeconfig %s\n", cfg.Dir, cfg.Nodes, cfg.Dataplane, cfg.Kubeconfig())
	names := []string{"etcd", "kube-apiserver", "agent", "controller"}
	for _, n := range cfg.NodeList() {
		names = append(names, "kube-proxy-"+n.Name, lab.SpeakerName(n))
	}
	if cfg.Kubelet {
		names = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "agent"}
		for _, n := range cfg.NodeList() {
			names = append(names, "containerd-"+n.Name, "kubelet-"+n.Name, "kube-proxy-"+n.Name)
		}
	}
	for _, n := range names {
		state := "stopped"
		if cfg.Running(n) {
			state = "running"
		}
		fmt.Printf("  %-22s %s\n", n, state)
	}
	cl, err := cfg.Client()
	if err != nil {
		return err
	}
	var svc corev1.Service
	if err := cl.Get(ctx, types.NamespacedName{Namespace: "default", Name: lab.DemoService}, &svc); err != nil {
		return err
	}
	fmt.Printf("service default/%s: %v\n", lab.DemoService, lab.ServiceIPs(&svc))
	var anns ironlbv1alpha1.AnnouncementList
	if err := cl.List(ctx, &anns); err != nil {
		return err
	}
	for _, a := range anns.Items {
		how := "on " + strings.Join(a.Spec.Interfaces, ",")
		if a.Spec.Protocol == ironlbv1alpha1.ProtocolBGP {
			how = "to " + strings.Join(a.Spec.Peers, ",")
		}
		fmt.Printf("  %s/%s %s by %s (%s %s)\n", a.Namespace, a.Spec.Service, a.Spec.IP, a.Spec.Node, a.Spec.Protocol, how)
	}
	return nil
}

func firstWord(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return "a backend"
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
