// Package uninstall tells a daemon whether the install it belongs to is
// being removed, as opposed to the daemon being restarted or upgraded: an
// uninstall is its namespace terminating, or its own workload (the
// speaker's DaemonSet, the controller's Deployment) deleted or being
// deleted after it was seen. A speaker then detaches its data plane when
// it stops, and the controller lets go of every Service and pool, so
// nothing is left attached, pinned or holding a finalizer.
//
// It reads through two watches opened at start, each on one object (a
// field selector on the name). A watch that is open keeps delivering after
// the install's RBAC is deleted, so the decision does not depend on the
// order in which a tool deletes the install's objects. Anything unknown
// (the workload never seen, the API server unreachable) means "not
// uninstalling": a restart must never tear the data plane down.
package uninstall

import (
	"context"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Kind is the workload a daemon runs as.
type Kind string

// The workloads: the speaker's and the controller's.
const (
	DaemonSet  Kind = "daemonsets"
	Deployment Kind = "deployments"
)

// Watch follows one install.
type Watch struct {
	seen, gone, nsTerminating atomic.Bool
	changed                   chan struct{}
}

// Start watches namespace ns and the workload kind/name in it until ctx
// ends.
func Start(ctx context.Context, cs kubernetes.Interface, ns string, kind Kind, name string) *Watch {
	w := &Watch{changed: make(chan struct{}, 1)}
	byName := func(n string) fields.Selector { return fields.OneTermEqualSelector("metadata.name", n) }
	var obj runtime.Object = &appsv1.DaemonSet{}
	if kind == Deployment {
		obj = &appsv1.Deployment{}
	}
	_, wc := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: cache.NewListWatchFromClient(cs.AppsV1().RESTClient(), string(kind), ns, byName(name)),
		ObjectType:    obj,
		ResyncPeriod:  0,
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { w.workload(o, false) },
			UpdateFunc: func(_, o any) { w.workload(o, false) },
			DeleteFunc: func(o any) { w.workload(o, true) },
		},
	})
	_, nc := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: cache.NewListWatchFromClient(cs.CoreV1().RESTClient(), "namespaces", "", byName(ns)),
		ObjectType:    &corev1.Namespace{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { w.namespace(o) },
			UpdateFunc: func(_, o any) { w.namespace(o) },
		},
	})
	go wc.RunWithContext(ctx)
	go nc.RunWithContext(ctx)
	return w
}

func (w *Watch) workload(o any, deleted bool) {
	var deleting bool
	switch v := o.(type) {
	case *appsv1.DaemonSet:
		deleting = v.DeletionTimestamp != nil
	case *appsv1.Deployment:
		deleting = v.DeletionTimestamp != nil
	case cache.DeletedFinalStateUnknown:
		deleted = true
	}
	if !deleted {
		w.seen.Store(true)
	}
	if (deleted || deleting) && w.seen.Load() {
		w.gone.Store(true)
		w.notify()
	}
}

func (w *Watch) namespace(o any) {
	if ns, ok := o.(*corev1.Namespace); ok && ns.DeletionTimestamp != nil {
		w.nsTerminating.Store(true)
		w.notify()
	}
}

func (w *Watch) notify() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// Uninstalling tells whether the install is being removed.
func (w *Watch) Uninstalling() bool {
	return w != nil && (w.gone.Load() || w.nsTerminating.Load())
}

// Changed receives when Uninstalling may have become true.
func (w *Watch) Changed() <-chan struct{} { return w.changed }

// Settle gives the watches up to limit to deliver what happened just
// before a SIGTERM (the deletion that caused it), then answers
// Uninstalling.
func (w *Watch) Settle(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for !w.Uninstalling() && time.Now().Before(deadline) {
		select {
		case <-w.changed:
		case <-time.After(50 * time.Millisecond):
		}
	}
	return w.Uninstalling()
}
