package controller

import (
	"context"
	"errors"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/config"
)

// +kubebuilder:rbac:groups=ironlb.dev,resources=l2advertisements;bgpadvertisements;bgppeers,verbs=get;list;watch
// +kubebuilder:rbac:groups=ironlb.dev,resources=l2advertisements/status;bgpadvertisements/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch

// AdvertisementReconciler keeps the L2Advertisements' and
// BGPAdvertisements' conditions true. Each depends on the others (a
// conflict is between two), on the pools, the peers and the nodes' labels,
// so every change recomputes them all: they are few.
type AdvertisementReconciler struct {
	client   client.Client
	recorder events.EventRecorder
}

var allAdvertisements = reconcile.Request{NamespacedName: types.NamespacedName{Name: "all"}}

func (r *AdvertisementReconciler) setup(mgr ctrl.Manager) error {
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{allAdvertisements}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("advertisements").
		Watches(&ironlbv1alpha1.L2Advertisement{}, all).
		Watches(&ironlbv1alpha1.BGPAdvertisement{}, all).
		Watches(&ironlbv1alpha1.IPPool{}, all).
		Watches(&ironlbv1alpha1.BGPPeer{}, all).
		// Labels only: the nodes' status is large and never read here.
		Watches(&corev1.Node{}, all, builder.OnlyMetadata).
		Complete(r)
}

// Reconcile recomputes every advertisement's conditions and writes those
// that changed.
func (r *AdvertisementReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	var (
		pools ironlbv1alpha1.IPPoolList
		l2    ironlbv1alpha1.L2AdvertisementList
		bgp   ironlbv1alpha1.BGPAdvertisementList
		peers ironlbv1alpha1.BGPPeerList
		nodes metav1.PartialObjectMetadataList
	)
	nodes.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NodeList"))
	for _, l := range []client.ObjectList{&pools, &l2, &bgp, &peers, &nodes} {
		if err := r.client.List(ctx, l); err != nil {
			return ctrl.Result{}, err
		}
	}
	w := config.AdvertisementWorld{Pools: pools.Items, L2: l2.Items, BGP: bgp.Items, Peers: peers.Items}
	for _, n := range nodes.Items {
		w.Nodes = append(w.Nodes, corev1.Node{ObjectMeta: n.ObjectMeta})
	}
	l2Conds, bgpConds := config.AdvertisementConditions(w)
	var errs []error
	for i := range l2.Items {
		a := &l2.Items[i]
		errs = append(errs, r.write(ctx, a, &a.Status.Conditions, l2Conds[a.Name]))
	}
	for i := range bgp.Items {
		a := &bgp.Items[i]
		errs = append(errs, r.write(ctx, a, &a.Status.Conditions, bgpConds[a.Name]))
	}
	return ctrl.Result{}, errors.Join(errs...)
}

// write sets the conditions on obj (whose status conditions are *have)
// and patches its status when they changed; a condition turning bad is
// also a Warning Event.
func (r *AdvertisementReconciler) write(ctx context.Context, obj client.Object, have *[]metav1.Condition, want []metav1.Condition) error {
	orig := obj.DeepCopyObject().(client.Object)
	changed := false
	for _, c := range want {
		old := meta.FindStatusCondition(*have, c.Type)
		if old != nil && old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message && old.ObservedGeneration == c.ObservedGeneration {
			continue
		}
		bad := (c.Type == config.ConditionAccepted && c.Status == metav1.ConditionFalse) ||
			(c.Type == config.ConditionConflict && c.Status == metav1.ConditionTrue)
		if bad && (old == nil || old.Status != c.Status || old.Reason != c.Reason) {
			r.recorder.Eventf(obj, nil, corev1.EventTypeWarning, c.Reason, "Validate", "%s", c.Message)
		}
		meta.SetStatusCondition(have, c)
		changed = true
	}
	if !changed {
		return nil
	}
	err := r.client.Status().Patch(ctx, obj, client.MergeFrom(orig))
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
