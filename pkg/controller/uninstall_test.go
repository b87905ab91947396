package controller_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	servicehelper "k8s.io/cloud-provider/service/helpers"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/controller"
)

// TestLetGo: the last pass a stopping controller makes during an uninstall
// removes our finalizers and addresses, though no controller runs any
// more to do it.
func TestLetGo(t *testing.T) {
	stop := startController(t, testOptions())
	ns := namespace(t, nil)
	createPool(t, "letgo", poolFor(ns, "10.40.0.0/30"))
	createService(t, ns, "web")
	waitIPs(t, ns, "web", "10.40.0.0")
	eventually(t, "pool finalizer", func() (bool, string) {
		p := getPool(t, "letgo")
		return slices.Contains(p.Finalizers, ironlbv1alpha1.PoolProtectionFinalizer), fmt.Sprintf("%v", p.Finalizers)
	})
	stop()
	// Stopping alone lets go of nothing: a restart must find it all.
	if s := getService(t, ns, "web"); !servicehelper.HasLBFinalizer(s) || len(s.Status.LoadBalancer.Ingress) == 0 {
		t.Fatalf("a plain stop let go: finalizers %v, ingress %v", s.Finalizers, s.Status.LoadBalancer.Ingress)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := controller.LetGo(ctx, env.Config, testOptions()); err != nil {
		t.Fatal(err)
	}
	if p := getPool(t, "letgo"); slices.Contains(p.Finalizers, ironlbv1alpha1.PoolProtectionFinalizer) {
		t.Errorf("pool keeps %v", p.Finalizers)
	}
	s := getService(t, ns, "web")
	if servicehelper.HasLBFinalizer(s) || len(s.Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("service keeps finalizers %v, ingress %v", s.Finalizers, s.Status.LoadBalancer.Ingress)
	}
}
