package controller

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/config"
	"github.com/ironlb/ironlb/pkg/ipam"
)

// Pool condition types.
const (
	ConditionReady   = "Ready"
	ConditionOverlap = "Overlap"
	ConditionOrphans = "Orphans"
	ConditionInUse   = "InUse"
)

// PoolReconciler hands pool changes to the allocator and reports each
// pool's use, overlaps and orphans in its status. Its finalizer keeps a pool
// whose addresses are in use from being deleted.
type PoolReconciler struct {
	state    *state
	recorder events.EventRecorder

	mu sync.Mutex
	// written is when each pool's status was last written: during a burst
	// of allocations a pool's status is written at most every
	// statusInterval, not once per Service.
	written map[string]time.Time
}

const statusInterval = 500 * time.Millisecond

// throttle returns how long to wait before the pool's status may be
// written again.
func (r *PoolReconciler) throttle(name string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return statusInterval - time.Since(r.written[name])
}

func (r *PoolReconciler) wrote(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.written == nil {
		r.written = map[string]time.Time{}
	}
	r.written[name] = time.Now()
}

func (r *PoolReconciler) setup(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("ippool").
		For(&ironlbv1alpha1.IPPool{}).
		WatchesRawSource(source.Channel(r.state.refresh, &handler.EnqueueRequestForObject{})).
		Complete(r)
}

// Reconcile updates the allocator's pools and one pool's status and
// finalizer.
func (r *PoolReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pool := &ironlbv1alpha1.IPPool{}
	err := r.state.client.Get(ctx, req.NamespacedName, pool)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	if r.state.uninstalling.Load() {
		// Uninstalling: nothing may be left holding the pool.
		if pool.Name != "" && controllerutil.ContainsFinalizer(pool, ironlbv1alpha1.PoolProtectionFinalizer) {
			patch := client.MergeFrom(pool.DeepCopy())
			controllerutil.RemoveFinalizer(pool, ironlbv1alpha1.PoolProtectionFinalizer)
			if err := r.patchPool(ctx, pool, patch); err != nil {
				return ctrl.Result{}, err
			}
		}
		return ctrl.Result{}, nil
	}

	r.state.mu.Lock()
	if err := r.state.load(ctx, true); err != nil {
		r.state.mu.Unlock()
		return ctrl.Result{}, err
	}
	changed, err := r.state.syncPools(ctx)
	if err != nil {
		r.state.mu.Unlock()
		return ctrl.Result{}, err
	}
	if changed {
		// New or larger pools may serve Services that wait, and every
		// pool's overlap may have changed.
		r.state.retryPending()
		r.state.refreshPools()
	}
	// During a burst of allocations, write a pool's status at most every
	// statusInterval, and skip even computing it (which walks every
	// holder) until then. Spec changes and deletions go through at once.
	if pool.Name != "" && pool.DeletionTimestamp == nil && pool.Status.ObservedGeneration == pool.Generation && !changed {
		if wait := r.throttle(pool.Name); wait > 0 {
			r.state.mu.Unlock()
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	}
	usage, _ := r.state.alloc.Usage(req.Name)
	r.state.mu.Unlock()

	if pool.Name == "" {
		poolTotal.DeletePartialMatch(map[string]string{"pool": req.Name})
		poolUsed.DeletePartialMatch(map[string]string{"pool": req.Name})
		return ctrl.Result{}, nil
	}
	for fam, u := range map[string]ipam.FamilyUsage{"IPv4": usage.IPv4, "IPv6": usage.IPv6} {
		poolTotal.WithLabelValues(pool.Name, fam).Set(float64(u.Total))
		poolUsed.WithLabelValues(pool.Name, fam).Set(float64(u.Used))
	}

	if pool.DeletionTimestamp == nil && !controllerutil.ContainsFinalizer(pool, ironlbv1alpha1.PoolProtectionFinalizer) {
		patch := client.MergeFrom(pool.DeepCopy())
		controllerutil.AddFinalizer(pool, ironlbv1alpha1.PoolProtectionFinalizer)
		if err := r.patchPool(ctx, pool, patch); err != nil {
			return ctrl.Result{}, err
		}
	}

	status, invalid := r.status(ctx, pool, usage)
	if !equality.Semantic.DeepEqual(status, pool.Status) {
		r.wrote(pool.Name)
		patch := client.MergeFrom(pool.DeepCopy())
		pool.Status = status
		if err := r.state.client.Status().Patch(ctx, pool, patch); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("patch status of pool %s: %w", pool.Name, err)
		}
		if invalid != nil {
			r.recorder.Eventf(pool, nil, corev1.EventTypeWarning, "InvalidAddresses", "Validate", "%s", invalid.Error())
		}
		if len(usage.Orphans) > 0 {
			r.recorder.Eventf(pool, nil, corev1.EventTypeWarning, "Orphans", "Validate", "Services hold addresses no longer in the pool: %s", strings.Join(usage.Orphans, ", "))
			r.warnOrphans(ctx, pool, usage.Orphans)
		}
	}

	if pool.DeletionTimestamp != nil && controllerutil.ContainsFinalizer(pool, ironlbv1alpha1.PoolProtectionFinalizer) {
		if len(usage.Holders) > 0 {
			r.recorder.Eventf(pool, nil, corev1.EventTypeWarning, "PoolInUse", "Delete", "Deletion waits for Services that hold its addresses: %s", strings.Join(usage.Holders, ", "))
			return ctrl.Result{}, nil
		}
		patch := client.MergeFrom(pool.DeepCopy())
		controllerutil.RemoveFinalizer(pool, ironlbv1alpha1.PoolProtectionFinalizer)
		if err := r.patchPool(ctx, pool, patch); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, nil
}

// warnOrphans tells each Service that keeps an address its pool no longer
// holds that it does so.
func (r *PoolReconciler) warnOrphans(ctx context.Context, pool *ironlbv1alpha1.IPPool, keys []string) {
	for _, key := range keys {
		ns, name, _ := strings.Cut(key, "/")
		svc := &corev1.Service{}
		if err := r.state.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, svc); err != nil {
			continue
		}
		r.recorder.Eventf(svc, pool, corev1.EventTypeWarning, "AddressOutsidePool", "Validate",
			"keeps its address, which pool %s no longer contains; it moves only if the Service changes", pool.Name)
	}
}

func (r *PoolReconciler) patchPool(ctx context.Context, pool *ironlbv1alpha1.IPPool, patch client.Patch) error {
	if err := r.state.client.Patch(ctx, pool, patch); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("patch pool %s: %w", pool.Name, err)
	}
	return nil
}

// status computes a pool's status; invalid is the error of its entries that
// do not parse, if any.
func (r *PoolReconciler) status(ctx context.Context, pool *ironlbv1alpha1.IPPool, usage ipam.Usage) (ironlbv1alpha1.IPPoolStatus, error) {
	st := ironlbv1alpha1.IPPoolStatus{
		ObservedGeneration: pool.Generation,
		// A copy: SetStatusCondition edits in place, and pool.Status is what
		// the result is compared with.
		Conditions: slices.Clone(pool.Status.Conditions),
	}
	var free uint64
	if usage.IPv4.Total > 0 {
		st.IPv4 = &ironlbv1alpha1.FamilyCount{Total: clamp(usage.IPv4.Total), Used: clamp(usage.IPv4.Used)}
		free += usage.IPv4.Total - usage.IPv4.Used
	}
	if usage.IPv6.Total > 0 {
		st.IPv6 = &ironlbv1alpha1.FamilyCount{Total: clamp(usage.IPv6.Total), Used: clamp(usage.IPv6.Used)}
		free = satAdd(free, usage.IPv6.Total-usage.IPv6.Used)
	}
	st.Used = clamp(usage.IPv4.Used + usage.IPv6.Used)
	st.Free = clamp(free)

	_, invalid := config.Pool(pool)
	set := func(typ string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: pool.Generation})
	}
	switch {
	case pool.DeletionTimestamp != nil:
		set(ConditionReady, false, "Deleting", "the pool is being deleted and gives no new addresses")
	case invalid != nil:
		set(ConditionReady, false, "InvalidAddresses", invalid.Error())
	default:
		set(ConditionReady, true, "Ready", "the pool gives addresses")
	}
	others := r.overlaps(ctx, pool.Name)
	if len(others) > 0 {
		set(ConditionOverlap, true, "Overlap", "shares addresses with pool(s) "+strings.Join(others, ", "))
	} else {
		set(ConditionOverlap, false, "NoOverlap", "no other pool shares these addresses")
	}
	if len(usage.Orphans) > 0 {
		set(ConditionOrphans, true, "Orphans", "Services hold addresses no longer in the pool: "+strings.Join(usage.Orphans, ", "))
	} else {
		set(ConditionOrphans, false, "NoOrphans", "every address taken from the pool is still in it")
	}
	if pool.DeletionTimestamp != nil && len(usage.Holders) > 0 {
		set(ConditionInUse, true, "InUse", "deletion waits for Services that hold its addresses: "+strings.Join(usage.Holders, ", "))
	} else {
		meta.RemoveStatusCondition(&st.Conditions, ConditionInUse)
	}
	return st, invalid
}

// overlaps names the pools that share addresses with the named one.
func (r *PoolReconciler) overlaps(ctx context.Context, name string) []string {
	var list ironlbv1alpha1.IPPoolList
	if err := r.state.client.List(ctx, &list); err != nil {
		return nil
	}
	pools := make([]ipam.Pool, 0, len(list.Items))
	for i := range list.Items {
		p, _ := config.Pool(&list.Items[i])
		pools = append(pools, p)
	}
	return ipam.Overlaps(pools)[name]
}

func clamp(n uint64) int64 {
	if n > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(n)
}

func satAdd(a, b uint64) uint64 {
	if a+b < a {
		return math.MaxUint64
	}
	return a + b
}

var _ reconcile.Reconciler = (*PoolReconciler)(nil)
