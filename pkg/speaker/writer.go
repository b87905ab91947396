package speaker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/dataplane"
)

// announcement is one (Service, IP, protocol) this node announces.
type announcement struct {
	service    types.NamespacedName
	ip         netip.Addr
	protocol   ironlbv1alpha1.Protocol
	interfaces []string // L2
	peers      []string // BGP
}

// ownedIP is an IP this node is the computed owner of for a protocol (the
// first eligible node), with its Services: it removes what dead nodes left
// behind for it.
type ownedIP struct {
	ip       netip.Addr
	services []types.NamespacedName
	protocol ironlbv1alpha1.Protocol
}

// writer turns the latest decision into Announcement objects and Events.
// It runs apart from the decision loop: a slow or unreachable API server
// never delays an announcement on the wire.
type writer struct {
	log      logr.Logger
	client   client.Client
	recorder recorder.EventRecorder
	node     string

	// sessions writes the BGPPeers' status, in the same loop.
	sessions *sessionWriter

	mu      sync.Mutex
	mine    []announcement
	owned   []ownedIP
	alive   map[string]bool
	kick    chan struct{}
	evented map[string]bool // (service, ip, protocol) keys an Announcing event was sent for
	// problems are the IPs this node should announce and does not (or,
	// as reporter, that nobody can), dpErr the data plane's last error;
	// warnedAt rate-limits their Warning Events per key.
	problems []problem
	dpErr    error
	warnedAt map[string]time.Time
	// cookies reports the Service ports that answer SYNs with SYN
	// cookies now (nil: no XDP data plane); cookieOn is what the last
	// look found, cookieEvented the ports a Warning Event went out for.
	cookies       func() (map[dataplane.Key]string, bool)
	cookiesBroken bool // a SYNCookiesUnsupported Event went out
	cookieOn      map[dataplane.Key]bool
	cookieEvented map[dataplane.Key]bool
	cookieSvc     map[dataplane.Key]string
}

// setCookies hands over the data plane's view of SYN cookies (nil: none).
func (w *writer) setCookies(f func() (map[dataplane.Key]string, bool)) {
	w.mu.Lock()
	w.cookies = f
	w.mu.Unlock()
}

// eventCookies tells the Services whose SYNs this node starts answering
// with SYN cookies (a SYN flood), with a Warning Event at most once per
// warnEvery for each port, and that it stopped, with a Normal one after
// each Warning. Called from the writer's loop, every second.
func (w *writer) eventCookies(ctx context.Context) {
	w.mu.Lock()
	f := w.cookies
	w.mu.Unlock()
	var now map[dataplane.Key]string
	var unusable bool
	if f != nil {
		now, unusable = f()
	}
	at := time.Now()
	if unusable && !w.cookiesBroken {
		var node corev1.Node
		if err := w.client.Get(ctx, types.NamespacedName{Name: w.node}, &node); err == nil {
			w.cookiesBroken = true
			w.log.Info("SYN cookies are off: a driver gives XDP no metadata room")
			w.recorder.Eventf(&node, nil, corev1.EventTypeWarning, "SYNCookiesUnsupported", "Protect",
				"node %s cannot answer SYNs with SYN cookies: the driver of an interface with the data plane gives XDP no metadata room; SYN floods reach the endpoints (run --xdp-mode generic, or another driver)", w.node)
		}
	}
	for k, svc := range now {
		if w.cookieOn[k] {
			continue
		}
		w.cookieOn[k] = true
		key := "cookies/" + k.String()
		if last, ok := w.warnedAt[key]; ok && at.Sub(last) < warnEvery {
			continue
		}
		if s, ok := w.service(ctx, svc); ok {
			w.warnedAt[key] = at
			w.cookieEvented[k] = true
			w.recorder.Eventf(s, nil, corev1.EventTypeWarning, "SYNCookies", "Protect",
				"node %s answers SYNs to %s with SYN cookies: more than --syn-cookie-rate never-seen SYNs a second on a CPU (a SYN flood?); connections made now are proxied, without window scaling or SACK", w.node, k)
		}
	}
	for k := range w.cookieOn {
		if _, ok := now[k]; ok {
			continue
		}
		svc, evented := w.cookieSvc[k], w.cookieEvented[k]
		delete(w.cookieOn, k)
		delete(w.cookieSvc, k)
		delete(w.cookieEvented, k)
		if !evented {
			continue
		}
		if s, ok := w.service(ctx, svc); ok {
			w.recorder.Eventf(s, nil, corev1.EventTypeNormal, "SYNCookiesOff", "Protect",
				"node %s no longer answers SYNs to %s with SYN cookies", w.node, k)
		}
	}
	for k, svc := range now {
		w.cookieSvc[k] = svc
	}
}

// service gets a Service by "namespace/name".
func (w *writer) service(ctx context.Context, name string) (*corev1.Service, bool) {
	ns, n, ok := strings.Cut(name, "/")
	if !ok {
		return nil, false
	}
	var svc corev1.Service
	if err := w.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: n}, &svc); err != nil {
		return nil, false
	}
	return &svc, true
}

// warnEvery is the least time between two Warning Events for the same
// Service IP and reason: a lasting fault is repeated so that it outlives
// Events' TTL, a flapping one does not flood the API server.
const warnEvery = 10 * time.Minute

// publishProblems hands over the IPs that are not announced, and why.
func (w *writer) publishProblems(p []problem) {
	w.mu.Lock()
	w.problems = p
	w.mu.Unlock()
}

// publishDataplaneError hands over the data plane's last error (nil: it
// applied).
func (w *writer) publishDataplaneError(err error) {
	w.mu.Lock()
	w.dpErr = err
	w.mu.Unlock()
}

// warnProblems sends the Warning Events due.
func (w *writer) warnProblems(ctx context.Context) {
	w.mu.Lock()
	problems, dpErr := w.problems, w.dpErr
	w.mu.Unlock()
	now := time.Now()
	// Keys past their wait are forgotten: the map holds only recent
	// warnings, however many Services come and go.
	for k, at := range w.warnedAt {
		if now.Sub(at) >= warnEvery {
			delete(w.warnedAt, k)
		}
	}
	due := func(key string) bool {
		if last, ok := w.warnedAt[key]; ok && now.Sub(last) < warnEvery {
			return false
		}
		w.warnedAt[key] = now
		return true
	}
	for _, p := range problems {
		if !due(p.service.String() + "/" + p.ip.String() + "/" + p.reason) {
			continue
		}
		var svc corev1.Service
		if err := w.client.Get(ctx, p.service, &svc); err != nil {
			continue
		}
		w.log.Info("IP not announced", "service", p.service, "ip", p.ip, "reason", p.reason, "message", p.message)
		w.recorder.Eventf(&svc, nil, corev1.EventTypeWarning, p.reason, "Announce", "%s", p.message)
	}
	if dpErr != nil && due("dataplane/"+dpErr.Error()) {
		var node corev1.Node
		if err := w.client.Get(ctx, types.NamespacedName{Name: w.node}, &node); err == nil {
			w.recorder.Eventf(&node, nil, corev1.EventTypeWarning, "DataplaneFailed", "Program",
				"the XDP data plane of node %s could not be programmed; it forwards with its previous state: %v", w.node, dpErr)
		}
	}
}

func newWriter(log logr.Logger, c client.Client, rec recorder.EventRecorder, node string) *writer {
	kick := make(chan struct{}, 1)
	return &writer{log: log, client: c, recorder: rec, node: node, kick: kick, evented: map[string]bool{}, warnedAt: map[string]time.Time{},
		cookieOn: map[dataplane.Key]bool{}, cookieEvented: map[dataplane.Key]bool{}, cookieSvc: map[dataplane.Key]string{},
		sessions: &sessionWriter{client: c, recorder: rec, node: node, kick: kick,
			written: map[string]session{}, warned: map[string]bool{}, peerUp: map[string]bool{}}}
}

// publish hands over a new decision.
func (w *writer) publish(mine []announcement, owned []ownedIP, alive map[string]bool) {
	w.mu.Lock()
	w.mine, w.owned, w.alive = mine, owned, alive
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *writer) run(ctx context.Context) {
	retry := time.NewTicker(5 * time.Second)
	defer retry.Stop()
	// SYN cookies go on and off with no sync: looked at every second
	// (they stay on at least 5 s).
	cookies := time.NewTicker(time.Second)
	defer cookies.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-cookies.C:
			w.eventCookies(ctx)
			continue
		case <-w.kick:
		case <-retry.C:
		}
		if err := w.write(ctx); err != nil && ctx.Err() == nil {
			w.log.Error(err, "write announcements")
		}
		if err := w.sessions.write(ctx); err != nil && ctx.Err() == nil {
			w.log.Error(err, "write BGP session status")
		}
		w.warnProblems(ctx)
	}
}

// AnnouncementName is the object name for a Service's IP announced by a
// node: the Service name and a hash that keeps it unique and short.
func AnnouncementName(svc, ip, node string, proto ironlbv1alpha1.Protocol) string {
	sum := sha256.Sum256([]byte(ip + "/" + node + "/" + string(proto)))
	h := hex.EncodeToString(sum[:5])
	if len(svc) > 200 {
		svc = svc[:200]
	}
	return strings.TrimRight(svc, "-.") + "-" + h
}

// labelValue keeps a label value valid: long names become a hash.
func labelValue(s string) string {
	if len(s) <= 63 {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

func (w *writer) write(ctx context.Context) error {
	w.mu.Lock()
	mine, owned, alive := w.mine, w.owned, w.alive
	w.mu.Unlock()

	var list ironlbv1alpha1.AnnouncementList
	if err := w.client.List(ctx, &list); err != nil {
		return err
	}
	existing := map[types.NamespacedName]*ironlbv1alpha1.Announcement{}
	for i := range list.Items {
		a := &list.Items[i]
		existing[types.NamespacedName{Namespace: a.Namespace, Name: a.Name}] = a
	}
	var errs []error
	want := map[types.NamespacedName]bool{}
	wantEvent := map[string]bool{}
	for _, m := range mine {
		ip := m.ip.String()
		key := types.NamespacedName{Namespace: m.service.Namespace, Name: AnnouncementName(m.service.Name, ip, w.node, m.protocol)}
		want[key] = true
		evKey := m.service.String() + "/" + ip + "/" + string(m.protocol)
		wantEvent[evKey] = true
		var svc corev1.Service
		if err := w.client.Get(ctx, m.service, &svc); err != nil {
			if !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			}
			continue
		}
		if !w.evented[evKey] {
			if m.protocol == ironlbv1alpha1.ProtocolBGP {
				w.recorder.Eventf(&svc, nil, corev1.EventTypeNormal, "Announcing", "Announce",
					"%s advertised by node %s over BGP to %s", ip, w.node, strings.Join(m.peers, ","))
			} else {
				w.recorder.Eventf(&svc, nil, corev1.EventTypeNormal, "Announcing", "Announce",
					"%s announced by node %s on %s (%s)", ip, w.node, strings.Join(m.interfaces, ","), l2Kind(m.ip))
			}
			w.evented[evKey] = true
		}
		spec := ironlbv1alpha1.AnnouncementSpec{
			Service: m.service.Name, IP: ip, Node: w.node, Protocol: m.protocol, Interfaces: m.interfaces, Peers: m.peers,
		}
		if cur := existing[key]; cur != nil {
			if cur.Spec.IP != spec.IP || !slices.Equal(cur.Spec.Interfaces, spec.Interfaces) || !slices.Equal(cur.Spec.Peers, spec.Peers) {
				cur.Spec = spec
				if err := w.client.Update(ctx, cur); err != nil {
					errs = append(errs, err)
				}
			}
			continue
		}
		obj := &ironlbv1alpha1.Announcement{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: key.Namespace,
				Name:      key.Name,
				Labels: map[string]string{
					ironlbv1alpha1.LabelNode:     labelValue(w.node),
					ironlbv1alpha1.LabelService:  labelValue(m.service.Name),
					ironlbv1alpha1.LabelProtocol: string(m.protocol),
				},
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID,
				}},
			},
			Spec: spec,
		}
		if err := w.client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			errs = append(errs, err)
		}
	}
	for k := range w.evented {
		if !wantEvent[k] {
			delete(w.evented, k)
		}
	}
	// Remove what this node no longer announces, and, for the IPs it owns,
	// what dead nodes left behind.
	ownedIPs := map[string]bool{}
	for _, o := range owned {
		ownedIPs[string(o.protocol)+"/"+o.ip.String()] = true
	}
	for key, a := range existing {
		stale := false
		switch {
		case a.Spec.Node == w.node:
			stale = !want[key]
		case ownedIPs[string(a.Spec.Protocol)+"/"+a.Spec.IP] && !alive[a.Spec.Node]:
			stale = true
		}
		if !stale {
			continue
		}
		if err := w.client.Delete(ctx, a, client.Preconditions{UID: &a.UID}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func l2Kind(ip netip.Addr) string {
	if ip.Is4() {
		return "ARP"
	}
	return "NDP"
}
