// Package controller holds ironlb-controller's reconcilers: Services get
// IPs from pools, pools report their use. They are thin: every allocation
// rule lives in pkg/ipam, every translation in pkg/config.
package controller

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ironlb/ironlb/internal/kube"
	"github.com/ironlb/ironlb/internal/uninstall"
	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/config"
	"github.com/ironlb/ironlb/pkg/ipam"
)

// The controller's permissions, generated into manifests/rbac/controller:

// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services/status,verbs=patch;update
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=ironlb-system,resources=leases,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",namespace=ironlb-system,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=ironlb.dev,resources=ippools,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=ironlb.dev,resources=ippools/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=ironlb.dev,resources=ippools/finalizers,verbs=update

// Options configure the controller.
type Options struct {
	// DefaultClass makes Services without a LoadBalancerClass ours.
	DefaultClass bool
	// LeaderElection, with its Lease in LeaderElectionNamespace, lets only
	// one replica allocate at a time.
	LeaderElection          bool
	LeaderElectionNamespace string
	LeaseDuration           time.Duration
	RenewDeadline           time.Duration
	RetryPeriod             time.Duration
	// MetricsAddr and HealthAddr are where Prometheus metrics and the
	// /healthz and /readyz probes are served; "0" turns one off.
	MetricsAddr string
	HealthAddr  string
	// Workers is the number of Services reconciled in parallel.
	Workers int
	// Namespace is the controller's own, where it keeps the memberlist
	// Secret.
	Namespace string
	// MemberlistSecret names the Secret holding the speakers' memberlist
	// key, created with a random key when absent; empty creates none.
	MemberlistSecret string
	// SeveralPerProcess allows more than one manager in a process (tests,
	// benchmarks); controller names are otherwise unique per process.
	SeveralPerProcess bool
	// Uninstall, when set, tells whether the install is being removed:
	// the leader then lets go of every Service and pool (finalizers and
	// the statuses it wrote), so that nothing is left holding them.
	Uninstall *uninstall.Watch
}

// DefaultOptions returns the options the binary starts with.
func DefaultOptions() Options {
	return Options{
		DefaultClass:            true,
		LeaderElection:          true,
		LeaderElectionNamespace: ironlbv1alpha1.SystemNamespace,
		LeaseDuration:           15 * time.Second,
		RenewDeadline:           10 * time.Second,
		RetryPeriod:             2 * time.Second,
		MetricsAddr:             ":7472",
		HealthAddr:              ":7474",
		Workers:                 16,
		Namespace:               ironlbv1alpha1.SystemNamespace,
		MemberlistSecret:        "ironlb-memberlist",
	}
}

// NewManager builds a controller-runtime manager with the Service and
// IPPool reconcilers registered.
func NewManager(cfg *rest.Config, opts Options) (ctrl.Manager, error) {
	scheme, err := kube.Scheme()
	if err != nil {
		return nil, err
	}
	// A graceful shutdown waits for running reconciles; one second bounds
	// how long SIGTERM takes to end the process.
	shutdown := time.Second
	warmup := true
	// A leader that cannot renew stops trying after RenewDeadline and then
	// takes up to the shutdown time to stop writing; another replica may
	// take over LeaseDuration after the last renewal. Unless the first
	// comes before the second, two leaders could allocate at once.
	if opts.LeaderElection && opts.LeaseDuration-opts.RenewDeadline <= shutdown {
		return nil, fmt.Errorf("leader election: the lease duration (%s) must exceed the renew deadline (%s) by more than %s", opts.LeaseDuration, opts.RenewDeadline, shutdown)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		LeaderElection:                opts.LeaderElection,
		LeaderElectionID:              "ironlb-controller",
		LeaderElectionNamespace:       opts.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &opts.LeaseDuration,
		RenewDeadline:                 &opts.RenewDeadline,
		RetryPeriod:                   &opts.RetryPeriod,
		GracefulShutdownTimeout:       &shutdown,
		Metrics:                       metricsserver.Options{BindAddress: opts.MetricsAddr},
		// Warm-up starts the informers before the Lease is won, so a
		// standby, or a process that just started, has its caches filled
		// by the time it may allocate.
		Controller:             ctrlconfig.Controller{SkipNameValidation: &opts.SeveralPerProcess, EnableWarmup: &warmup},
		HealthProbeBindAddress: opts.HealthAddr,
		Cache: cache.Options{
			// Managed fields are never read; dropping them keeps the cache
			// small.
			DefaultTransform: cache.TransformStripManagedFields(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	if err := kube.AddPingChecks(mgr, opts.HealthAddr); err != nil {
		return nil, err
	}
	rec, err := eventRecorder(mgr, cfg, scheme)
	if err != nil {
		return nil, err
	}
	if opts.MemberlistSecret != "" {
		mk := memberKey{log: mgr.GetLogger().WithName("memberlist-key"), c: mgr.GetClient(),
			key: client.ObjectKey{Namespace: opts.Namespace, Name: opts.MemberlistSecret}}
		if err := mgr.Add(mk); err != nil {
			return nil, err
		}
	}
	st := newState(mgr.GetClient(), mgr.GetAPIReader())
	sr := &ServiceReconciler{state: st, opts: opts, recorder: rec, patcher: newPatcher(mgr)}
	if err := sr.setup(mgr); err != nil {
		return nil, err
	}
	pr := &PoolReconciler{state: st, recorder: rec}
	if err := pr.setup(mgr); err != nil {
		return nil, err
	}
	if opts.Uninstall != nil {
		if err := mgr.Add(&uninstaller{watch: opts.Uninstall, state: st, services: sr, pools: pr, log: mgr.GetLogger().WithName("uninstall")}); err != nil {
			return nil, err
		}
	}
	if err := (&AdvertisementReconciler{client: mgr.GetClient(), recorder: rec}).setup(mgr); err != nil {
		return nil, err
	}
	return mgr, nil
}

// state is what the reconcilers share: the allocator and the Services that
// wait for an address. One mutex serialises all allocation, which is cheap
// (microseconds) next to the API calls around it.
type state struct {
	client client.Client
	// live reads from the API server, not the cache: a new leader must
	// see every address the old one wrote before it allocates.
	live client.Reader

	// uninstalling makes every reconcile let go instead of allocate.
	uninstalling atomic.Bool

	mu     sync.Mutex
	alloc  *ipam.Allocator
	loaded bool
	// pools remembers the generation of each pool last given to the
	// allocator, so only spec changes rebuild its search state.
	pools map[string]poolVersion
	// pending holds Services that got no address; they are retried when
	// an address is freed or the pools change.
	pending map[types.NamespacedName]struct{}
	// badRanges are the invalid loadBalancerSourceRanges last reported
	// per Service, so each list is reported once.
	badRanges map[types.UID]string

	// retry and refresh carry requeues to the Service and pool
	// controllers.
	retry   chan event.GenericEvent
	refresh chan event.GenericEvent
}

type poolVersion struct {
	generation int64
	deleting   bool
}

func newState(c client.Client, live client.Reader) *state {
	return &state{
		client:    c,
		live:      live,
		alloc:     ipam.New(),
		pools:     map[string]poolVersion{},
		pending:   map[types.NamespacedName]struct{}{},
		badRanges: map[types.UID]string{},
		retry:     make(chan event.GenericEvent, 1024),
		refresh:   make(chan event.GenericEvent, 1024),
	}
}

// eventQPS bounds the rate of Event writes. Events go out through a client
// of their own, behind the status patches: in a burst (a new leader with a
// thousand Services to serve) the API server's time goes to the addresses
// first and the Events follow, instead of each taking half.
const eventQPS = 200

// eventRecorder returns an events.k8s.io recorder on its own rate-limited
// client, started and stopped with the manager.
func eventRecorder(mgr ctrl.Manager, cfg *rest.Config, scheme *runtime.Scheme) (events.EventRecorder, error) {
	evCfg := protobuf(cfg)
	evCfg.QPS, evCfg.Burst = eventQPS, eventQPS
	cs, err := kubernetes.NewForConfig(evCfg)
	if err != nil {
		return nil, fmt.Errorf("events client: %w", err)
	}
	b := events.NewBroadcaster(&events.EventSinkImpl{Interface: cs.EventsV1()})
	err = mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		if err := b.StartRecordingToSinkWithContext(ctx); err != nil {
			return err
		}
		<-ctx.Done()
		b.Shutdown()
		return nil
	}))
	if err != nil {
		return nil, err
	}
	return b.NewRecorder(scheme, "ironlb-controller"), nil
}

// protobuf returns a copy of cfg that speaks protobuf, which costs the API
// server (and us) several times less CPU than JSON for built-in types. A
// patch body stays JSON; its answer comes back as protobuf.
func protobuf(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.ContentType = runtime.ContentTypeProtobuf
	c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return c
}

// load runs once, before the first allocation: it reads the pools and every
// address Services already hold, so that a restart never moves an IP.
// Services that hold addresses are restored before anything is allocated.
// The caller holds mu.
func (s *state) load(ctx context.Context, defaultClass bool) error {
	if s.loaded {
		return nil
	}
	if _, err := s.syncPools(ctx); err != nil {
		return err
	}
	var svcs corev1.ServiceList
	if err := s.live.List(ctx, &svcs); err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	for i := range svcs.Items {
		s.restore(ctx, &svcs.Items[i], defaultClass)
	}
	s.loaded = true
	ctrl.LoggerFrom(ctx).Info("loaded the addresses Services hold", "services", len(svcs.Items))
	return nil
}

// restore gives the allocator the addresses svc holds, if it is ours. A
// Service being deleted still shows its addresses until letGo clears them,
// so it holds them until then.
func (s *state) restore(ctx context.Context, svc *corev1.Service, defaultClass bool) {
	ips := config.StatusIPs(svc)
	if !config.IsOurs(svc, defaultClass) || len(ips) == 0 {
		return
	}
	req, err := config.Service(svc, nil)
	if err != nil {
		return // reconciled, and reported, like any other
	}
	if err := s.alloc.Restore(req, ips); err != nil {
		ctrl.LoggerFrom(ctx).Info("not restoring an address held twice", "service", req.Key, "reason", err.Error())
	}
}

// syncPools gives the allocator the current pools when any pool's spec or
// deletion changed, and reports whether it did. The caller holds mu.
func (s *state) syncPools(ctx context.Context) (bool, error) {
	var list ironlbv1alpha1.IPPoolList
	if err := s.client.List(ctx, &list); err != nil {
		return false, fmt.Errorf("list pools: %w", err)
	}
	changed := len(list.Items) != len(s.pools)
	for i := range list.Items {
		p := &list.Items[i]
		v, ok := s.pools[p.Name]
		if !ok || v != (poolVersion{p.Generation, p.DeletionTimestamp != nil}) {
			changed = true
		}
	}
	if !changed {
		return false, nil
	}
	pools := make([]ipam.Pool, 0, len(list.Items))
	s.pools = make(map[string]poolVersion, len(list.Items))
	for i := range list.Items {
		p := &list.Items[i]
		ps, _ := config.Pool(p) // errors are the pool controller's to report
		pools = append(pools, ps)
		s.pools[p.Name] = poolVersion{p.Generation, p.DeletionTimestamp != nil}
	}
	s.alloc.SetPools(pools)
	return true, nil
}

// retryPending requeues every Service that waits for an address. The
// caller holds mu; sends never block on a full channel while it does.
func (s *state) retryPending() {
	for key := range s.pending {
		s.send(s.retry, &corev1.Service{ObjectMeta: objectMeta(key)})
	}
}

// refreshPools requeues every pool's status. The caller holds mu.
func (s *state) refreshPools() {
	for name := range s.pools {
		s.send(s.refresh, &ironlbv1alpha1.IPPool{ObjectMeta: objectMeta(types.NamespacedName{Name: name})})
	}
}

func (s *state) send(ch chan event.GenericEvent, obj client.Object) {
	select {
	case ch <- event.GenericEvent{Object: obj}:
	default:
		// The channel is full: hand the rest to a goroutine rather than
		// block a reconciler that holds the lock.
		go func() { ch <- event.GenericEvent{Object: obj} }()
	}
}
