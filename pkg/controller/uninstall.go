package controller

import (
	"context"
	"errors"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	servicehelper "k8s.io/cloud-provider/service/helpers"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ironlb/ironlb/internal/uninstall"
	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/config"
)

// +kubebuilder:rbac:groups=apps,resources=deployments,resourceNames=ironlb-controller,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// uninstaller lets go of everything once the install is being removed:
// every Service loses our finalizer and the addresses we wrote in its
// status, every pool its protection finalizer, and the reconcilers stop
// adding them back. It runs on the leader, as the reconcilers do, and
// goes over everything again every second while anything is left, so a
// reconcile that was running when the uninstall began cannot leave a
// finalizer behind.
type uninstaller struct {
	watch    *uninstall.Watch
	state    *state
	services *ServiceReconciler
	pools    *PoolReconciler
	log      logr.Logger
}

func (u *uninstaller) NeedLeaderElection() bool { return true }

func (u *uninstaller) Start(ctx context.Context) error {
	for !u.watch.Uninstalling() {
		select {
		case <-ctx.Done():
			return nil
		case <-u.watch.Changed():
		}
	}
	u.state.uninstalling.Store(true)
	u.log.Info("the install is being removed: letting go of every Service and pool")
	said := false
	for {
		left, err := u.pass(ctx)
		switch {
		case err != nil:
			u.log.Error(err, "letting go")
		case left == 0 && !said:
			said = true
			u.log.Info("let go of every Service and pool")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// pass lets go of what still carries our finalizers and says how many
// objects it found holding one.
func (u *uninstaller) pass(ctx context.Context) (int, error) {
	var errs []error
	left := 0
	var svcs corev1.ServiceList
	if err := u.state.client.List(ctx, &svcs); err != nil {
		return 0, err
	}
	for i := range svcs.Items {
		svc := &svcs.Items[i]
		if !servicehelper.HasLBFinalizer(svc) {
			continue
		}
		left++
		if _, err := u.services.Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}}); err != nil {
			errs = append(errs, err)
		}
	}
	var pools ironlbv1alpha1.IPPoolList
	if err := u.state.client.List(ctx, &pools); err != nil {
		return left, errors.Join(append(errs, err)...)
	}
	for _, p := range pools.Items {
		if !controllerutil.ContainsFinalizer(&p, config.PoolProtectionFinalizer) {
			continue
		}
		left++
		if _, err := u.pools.Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Name: p.Name}}); err != nil {
			errs = append(errs, err)
		}
	}
	return left, errors.Join(errs...)
}
