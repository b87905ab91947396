// Command ironlb-controller assigns external IPs from IPPools to
// LoadBalancer Services. Run one or more replicas: leader election lets one
// allocate at a time.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ironlb/ironlb/internal/flagenv"
	"github.com/ironlb/ironlb/internal/uninstall"
	"github.com/ironlb/ironlb/pkg/controller"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ironlb-controller:", err)
		os.Exit(1)
	}
}

func run() error {
	opts := controller.DefaultOptions()
	// A flag set of our own: controller-runtime registers --kubeconfig on
	// the global one.
	fs := flag.NewFlagSet("ironlb-controller", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "path to a kubeconfig; empty means in-cluster")
	fs.BoolVar(&opts.LeaderElection, "leader-elect", opts.LeaderElection, "elect a leader so one replica allocates at a time")
	fs.StringVar(&opts.LeaderElectionNamespace, "leader-elect-namespace", envOr("POD_NAMESPACE", opts.LeaderElectionNamespace), "namespace of the leader election Lease")
	fs.DurationVar(&opts.LeaseDuration, "leader-elect-lease-duration", opts.LeaseDuration, "how long a leader's Lease lasts without renewal")
	fs.DurationVar(&opts.RenewDeadline, "leader-elect-renew-deadline", opts.RenewDeadline, "how long the leader tries to renew before giving up")
	fs.DurationVar(&opts.RetryPeriod, "leader-elect-retry-period", opts.RetryPeriod, "how often candidates try to take the Lease")
	fs.BoolVar(&opts.DefaultClass, "default-class", opts.DefaultClass, "also serve LoadBalancer Services without a loadBalancerClass")
	fs.StringVar(&opts.MetricsAddr, "metrics-addr", opts.MetricsAddr, "address of the Prometheus metrics endpoint; 0 disables it")
	fs.StringVar(&opts.HealthAddr, "health-addr", opts.HealthAddr, "address of the /healthz and /readyz probes; 0 disables them")
	fs.StringVar(&opts.Namespace, "namespace", envOr("POD_NAMESPACE", opts.Namespace), "the controller's namespace, where it keeps the memberlist key Secret (env POD_NAMESPACE)")
	fs.StringVar(&opts.MemberlistSecret, "memberlist-secret-name", opts.MemberlistSecret, "Secret holding the speakers' memberlist key; created with a random key when absent, kept when present; empty creates none")
	fs.IntVar(&opts.Workers, "workers", opts.Workers, "Services reconciled in parallel")
	uninstallMode := fs.Bool("uninstall", false, "run as an uninstall step (the Helm chart's pre-delete hook) instead of as the controller: delete the controller's Deployment (--deployment-name in --namespace), wait until its pods are gone, let go of every Service and pool, and exit; run it while the install's RBAC still exists")
	deployment := fs.String("deployment-name", "ironlb-controller", "the controller's Deployment in --namespace: when it (or the namespace) is deleted, the install is being removed and the controller lets go of every Service and pool; empty turns this off")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if err := flagenv.Apply(fs, "IRONLB_"); err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	// The controller lists every Service once at start, before it may
	// allocate. A plain LIST (served from the API server's watch cache)
	// gets it there sooner and for less CPU on both sides than client-go's
	// streaming watch-list, measured on a backlog of 1 000 Services. The
	// environment still decides when set.
	if _, set := os.LookupEnv("KUBE_FEATURE_WatchListClient"); !set {
		if err := os.Setenv("KUBE_FEATURE_WatchListClient", "false"); err != nil {
			return err
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	// Each Service costs a status patch and an Event; client-go's default
	// of 5 QPS would make a burst of Services wait for the client rather
	// than for the API server, whose priority and fairness protect it.
	cfg.QPS, cfg.Burst = 1000, 2000
	cfg.UserAgent = "ironlb-controller"
	if *uninstallMode {
		ctx, cancel := context.WithTimeout(ctrl.SetupSignalHandler(), uninstallTimeout)
		defer cancel()
		return controller.Uninstall(ctx, cfg, opts, *deployment, ctrl.Log.WithName("uninstall"))
	}
	// The uninstall watch outlives the manager's context: it must still
	// answer after SIGTERM.
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	if *deployment != "" {
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		opts.Uninstall = uninstall.Start(wctx, cs, opts.Namespace, uninstall.Deployment, *deployment)
	}
	mgr, err := controller.NewManager(cfg, opts)
	if err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	err = mgr.Start(ctx)
	// The deletion that sent SIGTERM may still be on its way: give it a
	// moment, then let go of what the leader's uninstaller may not have
	// reached before it stopped.
	if ctx.Err() != nil && opts.Uninstall != nil && opts.Uninstall.Settle(500*time.Millisecond) {
		log := ctrl.Log.WithName("uninstall")
		lctx, cancel := context.WithTimeout(wctx, letGoTimeout)
		defer cancel()
		if lerr := controller.LetGo(lctx, cfg, opts); lerr != nil {
			err = errors.Join(err, fmt.Errorf("uninstall: %w", lerr))
		} else {
			log.Info("let go of every Service and pool before exiting")
		}
	}
	return err
}

// uninstallTimeout bounds --uninstall, inside the hook's deadline.
const uninstallTimeout = 100 * time.Second

// letGoTimeout bounds the last pass of an uninstall, well inside the
// Deployment's 30 s grace period.
const letGoTimeout = 15 * time.Second

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
