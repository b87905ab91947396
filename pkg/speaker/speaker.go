// Package speaker is the node agent's brain: it watches Services,
// EndpointSlices, Nodes, IPPools, advertisements and BGP peers, asks
// pkg/announce which of the Services' IPs this node should announce, drives
// the layer-2 announcer, the embedded BGP router (pkg/bgp) and the XDP data
// plane (pkg/dataplane), and records what it actually announces as
// Announcement objects, BGPPeer status and Events. Liveness of the other
// speakers comes from memberlist, authenticated with the key in a Secret,
// with the Node's Ready condition as a backstop.
package speaker

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ironlb/ironlb/internal/kube"
	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/bfd"
	"github.com/ironlb/ironlb/pkg/bgp"
	"github.com/ironlb/ironlb/pkg/dataplane"
	"github.com/ironlb/ironlb/pkg/dataplane/loader"
	"github.com/ironlb/ironlb/pkg/layer2"
)

// +kubebuilder:rbac:groups="",resources=services;nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=ironlb.dev,resources=ippools;l2advertisements;bgppeers;bgpadvertisements,verbs=get;list;watch
// +kubebuilder:rbac:groups=ironlb.dev,resources=announcements,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=ironlb.dev,resources=bgppeers/status,verbs=get;patch;update
// Its own namespace and DaemonSet only (a list or watch with a
// metadata.name field selector is authorized by name), to tell an
// uninstall from a restart.
// +kubebuilder:rbac:groups=apps,resources=daemonsets,resourceNames=ironlb-speaker,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,resourceNames=ironlb-system,verbs=get;list;watch
// +kubebuilder:rbac:groups="",namespace=ironlb-system,resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Options configure a speaker.
type Options struct {
	// NodeName is the Node this speaker runs on.
	NodeName string
	// Namespace is the speaker's own: the only one it reads Secrets
	// (BGP passwords) from.
	Namespace string
	// Dataplane is "kernel" (announce only) or "xdp".
	Dataplane   string
	MetricsAddr string
	HealthAddr  string
	// DebugAddr is the loopback address of the data plane dump; "0"
	// turns it off.
	DebugAddr string
	Members   MemberOptions
	Layer2    layer2.Options
	// XDP configures the xdp data plane.
	XDP dataplane.Options
	// Resync recomputes everything this often even without events.
	Resync time.Duration
	// BGPGracefulShutdown is how long a node that stops advertising for
	// good (drained, or uninstalled) first advertises its routes with the
	// GRACEFUL_SHUTDOWN community (RFC 8326) before it withdraws them.
	BGPGracefulShutdown time.Duration
	// Uninstalling tells, at exit, whether the install is being removed
	// (nil: never); it may wait a moment for the news.
	Uninstalling func() bool
}

// DefaultOptions returns the defaults of the flags.
func DefaultOptions() Options {
	return Options{
		Namespace:   ironlbv1alpha1.SystemNamespace,
		Dataplane:   "xdp",
		MetricsAddr: ":7473",
		HealthAddr:  ":7475",
		DebugAddr:   "127.0.0.1:7476",
		Members:     DefaultMemberOptions(),
		Layer2:      layer2.DefaultOptions(),
		XDP:         dataplane.DefaultOptions(),
		Resync:      10 * time.Second,

		BGPGracefulShutdown: 5 * time.Second,
	}
}

// Speaker announces this node's share of the Services' IPs.
type Speaker struct {
	// serving is set once the speaker has its member key, its data plane
	// attached and a first sync done: /readyz says Ready only then, so a
	// rolling update moves to the next node only when this one serves.
	serving atomic.Bool

	opts    Options
	log     logr.Logger
	mgr     manager.Manager
	client  client.Client
	l2      *layer2.Announcer
	members *members
	metrics *speakerMetrics
	writer  *writer
	// keys follows the memberlist Secret; nil with --memberlist-insecure.
	// keyMetrics are registered either way.
	keys       atomic.Pointer[memberKeys]
	keyMetrics *keyMetrics

	trigger chan struct{}
	// owners remembers the computed layer-2 owner of each IP, to count
	// owner changes.
	owners map[netip.Addr]string
	// dp is the XDP data plane; nil with --dataplane=kernel. planner
	// computes its plans, keeping the last one's rings.
	dp      *loader.Dataplane
	planner dataplane.Planner
	// unserved is the count of ready endpoints past the data plane's
	// limit at the last sync, to log a change once.
	unserved int
	// dump is dp once it is open, for the debug endpoint.
	dump atomic.Pointer[loader.Dataplane]
	// bgp is the embedded BGP router; it starts with the first peer.
	bgp *bgp.Server
	// bfd runs the BFD sessions of the peers that ask for BFD.
	bfd *bfd.Runner
	// lastRoutes are the BGP routes of the last sync while the node was
	// not excluded; draining the same with GRACEFUL_SHUTDOWN, advertised
	// until drainUntil once the node is excluded (sync's goroutine only).
	lastRoutes, draining []bgp.Route
	drainUntil           time.Time
	// secretRefs are the "namespace/name" of the Secrets the BGPPeers
	// read their passwords from: a change to one of them is a change of
	// configuration.
	secretRefs atomic.Pointer[map[string]bool]
	// passwords caches what was read from those Secrets ("namespace/name/
	// key" -> password); stale marks the Secrets changed since. A sync
	// never waits on the API server for a password it already has.
	pwMu      sync.Mutex
	passwords map[string]string
	stale     map[string]bool
}

// New builds a speaker on a manager of its own (no leader election: every
// node runs one).
func New(cfg *rest.Config, opts Options) (*Speaker, error) {
	if opts.NodeName == "" {
		return nil, errors.New("the node name is required (--node-name or NODE_NAME)")
	}
	if opts.Dataplane != "kernel" && opts.Dataplane != "xdp" {
		return nil, fmt.Errorf("unknown data plane %q: want xdp or kernel", opts.Dataplane)
	}
	scheme, err := kube.Scheme()
	if err != nil {
		return nil, err
	}
	shutdown := 2 * time.Second
	var s *Speaker
	if err := checkLoopback(opts.DebugAddr); err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		GracefulShutdownTimeout: &shutdown,
		// /metrics only: the dump is on loopback (debug.go).
		Metrics:                metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress: opts.HealthAddr,
		Cache: cache.Options{
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				secretMeta(): {Namespaces: map[string]cache.Config{opts.Namespace: {}}},
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	if err := kube.AddPingChecks(mgr, opts.HealthAddr); err != nil {
		return nil, err
	}
	log := ctrl.Log.WithName("speaker").WithValues("node", opts.NodeName)
	s = &Speaker{
		opts:       opts,
		log:        log,
		mgr:        mgr,
		client:     mgr.GetClient(),
		l2:         layer2.New(log.WithName("layer2"), opts.Layer2, layer2.NewMetrics(metrics.Registry)),
		metrics:    newSpeakerMetrics(metrics.Registry),
		keyMetrics: newKeyMetrics(metrics.Registry),
		trigger:    make(chan struct{}, 1),
		owners:     map[netip.Addr]string{},

		passwords: map[string]string{},
		stale:     map[string]bool{},
	}
	s.writer = newWriter(log.WithName("status"), mgr.GetClient(), mgr.GetEventRecorder("ironlb-speaker"), opts.NodeName)
	if err := mgr.AddReadyzCheck("serving", func(*http.Request) error {
		if !s.serving.Load() {
			return errors.New("not serving yet: waiting for the member key, the data plane or the first sync")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := mgr.Add(manager.RunnableFunc(s.run)); err != nil {
		return nil, err
	}
	dbg := &debugServer{log: log.WithName("debug"), addr: opts.DebugAddr, dump: func() (any, bool) {
		dp := s.dump.Load()
		if dp == nil {
			return nil, false
		}
		return dp.Dump(), true
	}}
	if err := mgr.Add(dbg); err != nil {
		return nil, err
	}
	return s, nil
}

// Start runs the speaker until ctx ends. On the way out it stops answering
// and leaves the member list at once, so another node takes over without
// waiting for failure detection.
func (s *Speaker) Start(ctx context.Context) error {
	return s.mgr.Start(ctx)
}

// poke asks for a recomputation; several pokes while one runs make one more.
func (s *Speaker) poke() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

func (s *Speaker) run(ctx context.Context) error {
	c := s.mgr.GetCache()
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.poke() },
		UpdateFunc: func(any, any) { s.poke() },
		DeleteFunc: func(any) { s.poke() },
	}
	for _, obj := range []client.Object{&corev1.Service{}, &discoveryv1.EndpointSlice{}, &corev1.Node{},
		&ironlbv1alpha1.IPPool{}, &ironlbv1alpha1.L2Advertisement{},
		&ironlbv1alpha1.BGPPeer{}, &ironlbv1alpha1.BGPAdvertisement{}} {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("watch %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("watch %T: %w", obj, err)
		}
	}
	// Secrets: their metadata only (never their contents, which are read
	// when needed), to notice a changed password.
	secInf, err := c.GetInformer(ctx, secretMeta())
	if err != nil {
		return fmt.Errorf("watch secrets: %w", err)
	}
	onSecret := func(obj any) {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		o, err := meta.Accessor(obj)
		if err != nil {
			return
		}
		if k := s.keys.Load(); k != nil && o.GetNamespace() == k.key.Namespace && o.GetName() == k.key.Name {
			select {
			case k.poke <- struct{}{}:
			default:
			}
		}
		if refs := s.secretRefs.Load(); refs != nil && (*refs)[o.GetNamespace()+"/"+o.GetName()] {
			s.pwMu.Lock()
			s.stale[o.GetNamespace()+"/"+o.GetName()] = true
			s.pwMu.Unlock()
			s.poke()
		}
	}
	if _, err := secInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: onSecret, UpdateFunc: func(_, o any) { onSecret(o) }, DeleteFunc: onSecret,
	}); err != nil {
		return fmt.Errorf("watch secrets: %w", err)
	}
	// Announcements are read by the status writer only: changes to them
	// must not trigger decisions, or two speakers that disagree for a
	// moment would feed each other.
	if _, err := c.GetInformer(ctx, &ironlbv1alpha1.Announcement{}); err != nil {
		return fmt.Errorf("watch announcements: %w", err)
	}
	if !c.WaitForCacheSync(ctx) {
		return ctx.Err()
	}

	// Memberlist advertises the node's InternalIP, which the other
	// speakers also find on the Node object when they join.
	var self corev1.Node
	if err := s.client.Get(ctx, client.ObjectKey{Name: s.opts.NodeName}, &self); err != nil {
		return fmt.Errorf("get own node %s: %w", s.opts.NodeName, err)
	}
	advertise := s.opts.Members.BindAddr
	if advertise == "" || advertise == "0.0.0.0" || advertise == "::" {
		advertise = nodeAddress(&self)
	}
	// The key first: a speaker that will not run touches nothing.
	keyKey := client.ObjectKey{Namespace: s.opts.Namespace, Name: s.opts.Members.SecretName}
	if s.opts.Members.Insecure {
		s.log.Info("WARNING: --memberlist-insecure: member traffic is plaintext and unauthenticated; any host on the node network can join the member list and move IPs")
	} else {
		ring, version, err := loadKeys(ctx, s.log.WithName("keys"), s.mgr.GetAPIReader(), keyKey, s.opts.Members.KeyGrace, s.opts.Members.KeyWait)
		if err != nil {
			return err
		}
		s.opts.Members.keyring = ring.ring
		keys := &memberKeys{log: s.log.WithName("keys"), reader: s.mgr.GetAPIReader(), rec: s.mgr.GetEventRecorder("ironlb-speaker"),
			key: keyKey, node: s.opts.NodeName, ring: ring, m: s.keyMetrics, poke: make(chan struct{}, 1)}
		s.keyMetrics.keys.Set(float64(len(ring.ring.GetKeys())))
		s.keyMetrics.applied.WithLabelValues(version).Set(1)
		s.keys.Store(keys)
		go keys.run(ctx)
	}
	if s.opts.Dataplane == "xdp" {
		dp, err := s.openDataplane(ctx, &self)
		if err != nil {
			return err
		}
		// Closing keeps the programs attached and the maps pinned: the
		// node forwards on until the next speaker takes over.
		defer func() { _ = dp.Close() }()
		s.dp = dp
		s.dump.Store(dp)
		defer s.dump.Store(nil)
		s.writer.setCookies(dp.SYNCookies)
		defer s.writer.setCookies(nil)
		if err := metrics.Registry.Register(dp); err != nil {
			return fmt.Errorf("data plane metrics: %w", err)
		}
		defer metrics.Registry.Unregister(dp)
	}
	s.bgp = bgp.New(s.log.WithName("bgp"), routerID(&self), s.poke)
	if err := metrics.Registry.Register(s.bgp); err != nil {
		return fmt.Errorf("BGP metrics: %w", err)
	}
	defer metrics.Registry.Unregister(s.bgp)
	s.bfd = bfd.NewRunner(s.log.WithName("bfd"), s.bfdChanged)
	defer s.bfd.Close()
	bfdMetrics := bfdCollector{r: s.bfd}
	if err := metrics.Registry.Register(bfdMetrics); err != nil {
		return fmt.Errorf("BFD metrics: %w", err)
	}
	defer metrics.Registry.Unregister(bfdMetrics)
	known := s.peers(ctx)
	m, err := startMembers(s.log.WithName("members"), s.opts.NodeName, advertise, known, s.opts.Members, s.poke)
	if err != nil {
		return err
	}
	s.members = m
	// A first join before the first decision: a speaker that starts alone
	// would otherwise think it owns every IP for a moment.
	m.join(mapValues(known), s.opts.Members.Port)

	l2ctx, stopL2 := context.WithCancel(context.WithoutCancel(ctx))
	l2done := make(chan struct{})
	go func() { s.l2.Run(l2ctx); close(l2done) }()
	go m.joinLoop(ctx, func() map[string]string { return s.peers(ctx) }, s.opts.Members.Port)
	go m.watchDead(ctx, 250*time.Millisecond)
	go s.writer.run(ctx)

	resync := time.NewTicker(s.opts.Resync)
	defer resync.Stop()
	s.poke()
	for {
		select {
		case <-ctx.Done():
			s.serving.Store(false)
			// Hand over the routes, stop answering, then tell the
			// others.
			s.leaveBGP(context.WithoutCancel(ctx))
			stopL2()
			<-l2done
			m.leave()
			s.log.Info("stopped announcing and left the member list")
			return nil
		case <-s.trigger:
		case <-resync.C:
		}
		if err := s.sync(ctx); err != nil {
			s.log.Error(err, "sync")
		} else if !s.serving.Load() {
			s.serving.Store(true)
			s.log.Info("serving: member key, data plane and first sync done")
		}
	}
}

// peers returns the other nodes' names and addresses.
func (s *Speaker) peers(ctx context.Context) map[string]string {
	var nodes corev1.NodeList
	if err := s.client.List(ctx, &nodes); err != nil {
		return nil
	}
	out := map[string]string{}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if n.Name == s.opts.NodeName {
			continue
		}
		if a := nodeAddress(n); a != "" {
			out[n.Name] = a
		}
	}
	return out
}

// nodeAddress is the node's first InternalIP, preferring IPv4.
func nodeAddress(n *corev1.Node) string {
	var v6 string
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		if ip.Is4() {
			return a.Address
		}
		if v6 == "" {
			v6 = a.Address
		}
	}
	return v6
}

// secretMeta is the metadata-only form of a Secret the speaker watches.
func secretMeta() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m
}

// routerID is the node's IPv4 InternalIP, else four bytes of a hash of
// its name: BGP wants an IPv4-shaped ID unique among the peers' sessions.
func routerID(n *corev1.Node) netip.Addr {
	if a, err := netip.ParseAddr(nodeAddress(n)); err == nil && a.Is4() {
		return a
	}
	sum := sha256.Sum256([]byte(n.Name))
	return netip.AddrFrom4([4]byte{sum[0], sum[1], sum[2], sum[3]})
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
