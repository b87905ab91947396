package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/events"
	servicehelper "k8s.io/cloud-provider/service/helpers"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/ironlb/ironlb/pkg/config"
	"github.com/ironlb/ironlb/pkg/ipam"
)

// ServiceReconciler gives LoadBalancer Services their IPs and takes them
// back when a Service leaves ironlb's care.
type ServiceReconciler struct {
	state    *state
	opts     Options
	recorder events.EventRecorder
	patcher  corev1client.CoreV1Interface
}

func newPatcher(mgr ctrl.Manager) corev1client.CoreV1Interface {
	return kubernetes.NewForConfigOrDie(protobuf(mgr.GetConfig())).CoreV1()
}

func (r *ServiceReconciler) setup(mgr ctrl.Manager) error {
	workers := max(r.opts.Workers, 1)
	return ctrl.NewControllerManagedBy(mgr).
		Named("service").
		For(&corev1.Service{}).
		// A namespace's labels decide which pools admit its Services.
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.pendingIn)).
		WatchesRawSource(source.Channel(r.state.retry, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

// pendingIn requeues the Services of a namespace that wait for an address.
func (r *ServiceReconciler) pendingIn(_ context.Context, ns client.Object) []reconcile.Request {
	r.state.mu.Lock()
	defer r.state.mu.Unlock()
	var out []reconcile.Request
	for key := range r.state.pending {
		if key.Namespace == ns.GetName() {
			out = append(out, reconcile.Request{NamespacedName: key})
		}
	}
	return out
}

// Reconcile brings one Service's addresses in line with its spec.
func (r *ServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	svc := &corev1.Service{}
	if err := r.state.client.Get(ctx, req.NamespacedName, svc); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		r.release(ctx, req.NamespacedName)
		return ctrl.Result{}, nil
	}
	if !config.IsOurs(svc, r.opts.DefaultClass) || svc.DeletionTimestamp != nil || r.state.uninstalling.Load() {
		return ctrl.Result{}, r.letGo(ctx, svc)
	}

	var nsLabels map[string]string
	ns := &corev1.Namespace{}
	if err := r.state.client.Get(ctx, types.NamespacedName{Name: svc.Namespace}, ns); err == nil {
		nsLabels = ns.Labels
	} else if !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	request, err := config.Service(svc, nsLabels)
	if err != nil {
		// Clear the status first, then release, as in letGo.
		if err := r.failed(svc, &ipam.Error{Reason: ipam.InvalidRequest, Message: err.Error()}); err != nil {
			return ctrl.Result{}, err
		}
		r.release(ctx, req.NamespacedName)
		return ctrl.Result{}, nil
	}

	r.state.mu.Lock()
	if err := r.state.load(ctx, r.opts.DefaultClass); err != nil {
		r.state.mu.Unlock()
		return ctrl.Result{}, err
	}
	before := r.state.alloc.Assigned(request.Key)
	addrs, allocErr := r.state.alloc.Assign(request)
	changed := !slices.Equal(before, addrs)
	if allocErr != nil {
		r.state.pending[req.NamespacedName] = struct{}{}
	} else {
		delete(r.state.pending, req.NamespacedName)
	}
	if changed {
		if len(before) > 0 {
			// What this Service gave up may be what another waits for.
			r.state.retryPending()
		}
		r.state.refreshPools()
	}
	r.state.mu.Unlock()

	if allocErr != nil && len(addrs) == 0 {
		return ctrl.Result{}, r.failed(svc, allocErr)
	}
	if allocErr != nil {
		// Its new sharing terms clash, but the Service keeps its IPs
		// (only its type, class, requested IPs, pool and families may
		// move them); it is tried again when the clash may be gone.
		reason := ipam.ReasonOf(allocErr)
		allocations.WithLabelValues(string(reason)).Inc()
		r.recorder.Eventf(svc, nil, corev1.EventTypeWarning, string(reason), "Allocate",
			"keeps %s: %s", describe(addrs), strings.TrimPrefix(allocErr.Error(), string(reason)+": "))
	} else {
		allocations.WithLabelValues("success").Inc()
	}
	updated := svc.DeepCopy()
	updated.Status.LoadBalancer.Ingress = config.Ingress(addrs)
	if !servicehelper.HasLBFinalizer(updated) {
		updated.Finalizers = append(updated.Finalizers, servicehelper.LoadBalancerCleanupFinalizer)
	}
	if err := r.patch(svc, updated); err != nil {
		return ctrl.Result{}, err
	}
	if changed {
		ctrl.LoggerFrom(ctx).V(1).Info("assigned", "addresses", describe(addrs))
		r.recorder.Eventf(svc, nil, corev1.EventTypeNormal, "IPAllocated", "Allocate", "Assigned %s", describe(addrs))
	}
	r.reportSourceRanges(svc)
	return ctrl.Result{}, nil
}

// reportSourceRanges warns, once per list, about loadBalancerSourceRanges
// entries that are no CIDR: the data plane ignores them, as kube-proxy
// does, so they admit nobody and restrict nobody.
func (r *ServiceReconciler) reportSourceRanges(svc *corev1.Service) {
	_, bad := config.SourceRanges(svc.Spec.LoadBalancerSourceRanges)
	key := strings.Join(bad, ",")
	r.state.mu.Lock()
	last, seen := r.state.badRanges[svc.UID]
	if len(bad) == 0 {
		delete(r.state.badRanges, svc.UID)
	} else {
		r.state.badRanges[svc.UID] = key
	}
	r.state.mu.Unlock()
	if len(bad) > 0 && (!seen || last != key) {
		r.recorder.Eventf(svc, nil, corev1.EventTypeWarning, "InvalidSourceRanges", "Validate",
			"loadBalancerSourceRanges entries that are no CIDR are ignored: %s", strings.Join(bad, ", "))
	}
}

// failed reports an allocation failure on the Service and clears any
// address its status still shows.
func (r *ServiceReconciler) failed(svc *corev1.Service, err error) error {
	reason := ipam.ReasonOf(err)
	allocations.WithLabelValues(string(reason)).Inc()
	r.recorder.Eventf(svc, nil, corev1.EventTypeWarning, string(reason), "Allocate", "%s", strings.TrimPrefix(err.Error(), string(reason)+": "))
	if len(svc.Status.LoadBalancer.Ingress) == 0 || !servicehelper.HasLBFinalizer(svc) {
		return nil
	}
	updated := svc.DeepCopy()
	updated.Status.LoadBalancer.Ingress = nil
	return r.patch(svc, updated)
}

// letGo clears what we wrote in the status of a Service that is deleted
// or no longer ours, removes our finalizer, and only then releases its
// addresses: released first, they could be given to another Service while
// this one still shows them.
func (r *ServiceReconciler) letGo(ctx context.Context, svc *corev1.Service) error {
	if servicehelper.HasLBFinalizer(svc) {
		updated := svc.DeepCopy()
		updated.Status.LoadBalancer.Ingress = nil
		updated.Finalizers = slices.DeleteFunc(updated.Finalizers, func(f string) bool {
			return f == servicehelper.LoadBalancerCleanupFinalizer
		})
		if err := r.patch(svc, updated); err != nil {
			return err
		}
	}
	// Without our finalizer, the status is someone else's.
	r.release(ctx, types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name})
	return nil
}

// release frees a Service's addresses and tells those who wait.
func (r *ServiceReconciler) release(ctx context.Context, key types.NamespacedName) {
	r.state.mu.Lock()
	defer r.state.mu.Unlock()
	delete(r.state.pending, key)
	if !r.state.loaded {
		// Nothing is held before the first load; loading now would read
		// the Service we are letting go as still holding its IPs.
		if err := r.state.load(ctx, r.opts.DefaultClass); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "load assignments")
		}
	}
	k := key.Namespace + "/" + key.Name
	if len(r.state.alloc.Assigned(k)) == 0 {
		return
	}
	ctrl.LoggerFrom(ctx).V(1).Info("released", "addresses", describe(r.state.alloc.Assigned(k)))
	r.state.alloc.Release(k)
	r.state.retryPending()
	r.state.refreshPools()
}

// patch writes the finalizers and status of updated in one request, through
// k8s.io/cloud-provider's helper, unless nothing changed.
func (r *ServiceReconciler) patch(old, updated *corev1.Service) error {
	if servicehelper.LoadBalancerStatusEqual(&old.Status.LoadBalancer, &updated.Status.LoadBalancer) &&
		slices.Equal(old.Finalizers, updated.Finalizers) {
		return nil
	}
	if _, err := servicehelper.PatchService(r.patcher, old, updated); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("patch service %s/%s: %w", old.Namespace, old.Name, err)
	}
	return nil
}

func describe(addrs []ipam.Address) string {
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		if a.Pool != "" {
			parts[i] = fmt.Sprintf("%s from pool %s", a.IP, a.Pool)
		} else {
			parts[i] = a.IP.String()
		}
	}
	return strings.Join(parts, ", ")
}

func objectMeta(key types.NamespacedName) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}
}
