package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	servicehelper "k8s.io/cloud-provider/service/helpers"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ironlb/ironlb/internal/kube"
	"github.com/ironlb/ironlb/internal/uninstall"
	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
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
		if !controllerutil.ContainsFinalizer(&p, ironlbv1alpha1.PoolProtectionFinalizer) {
			continue
		}
		left++
		if _, err := u.pools.Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Name: p.Name}}); err != nil {
			errs = append(errs, err)
		}
	}
	return left, errors.Join(errs...)
}

// LetGo makes one last pass over the cluster with a client of its own,
// for a controller that is stopping because the install is being removed:
// the uninstaller above runs only on the leader and only while the
// manager runs, and a SIGTERM may end it before it has seen every pool
// (or after a reconcile that was running put a finalizer back). Every
// replica runs LetGo on such a stop; what it removes is ours alone, so
// two replicas doing it at once agree.
func LetGo(ctx context.Context, cfg *rest.Config, opts Options) error {
	scheme, err := kube.Scheme()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("uninstall client: %w", err)
	}
	cs, err := kubernetes.NewForConfig(protobuf(cfg))
	if err != nil {
		return fmt.Errorf("uninstall client: %w", err)
	}
	st := newState(c, c)
	st.uninstalling.Store(true)
	u := &uninstaller{
		state:    st,
		services: &ServiceReconciler{state: st, opts: opts, patcher: cs.CoreV1()},
		pools:    &PoolReconciler{state: st},
	}
	left, err := u.pass(ctx)
	if err == nil && left > 0 {
		// A pass lets go of everything it found; a second one sees that
		// nothing put a finalizer back in the meantime.
		if left, err = u.pass(ctx); err == nil && left > 0 {
			err = fmt.Errorf("%d objects took a finalizer back", left)
		}
	}
	return err
}

// Uninstall is the first step of removing an install (the Helm chart's
// pre-delete hook), taken while the install's RBAC still exists, so that
// nothing depends on the order in which a tool then deletes the rest: it
// deletes the controller's Deployment, waits until the Deployment and its
// pods are gone (no controller can put a finalizer back), and lets go of
// every Service and pool.
func Uninstall(ctx context.Context, cfg *rest.Config, opts Options, deployment string, log logr.Logger) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	deps := cs.AppsV1().Deployments(opts.Namespace)
	if deployment != "" {
		// Foreground: the Deployment goes only after its ReplicaSets and
		// pods, so once it is gone no controller runs.
		fg := metav1.DeletePropagationForeground
		err := deps.Delete(ctx, deployment, metav1.DeleteOptions{PropagationPolicy: &fg})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return fmt.Errorf("delete Deployment %s/%s: %w", opts.Namespace, deployment, err)
		default:
			log.Info("deleted the controller's Deployment; waiting for its pods to stop", "deployment", opts.Namespace+"/"+deployment)
		}
		for {
			_, err := deps.Get(ctx, deployment, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("the Deployment %s/%s is still there: %w", opts.Namespace, deployment, ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	if err := LetGo(ctx, cfg, opts); err != nil {
		return err
	}
	log.Info("let go of every Service and pool")
	return nil
}
