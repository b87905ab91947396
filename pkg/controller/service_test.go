package controller_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	servicehelper "k8s.io/cloud-provider/service/helpers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
)

func TestAutomaticAllocation(t *testing.T) {
	startController(t, testOptions())
	ns := namespace(t, nil)
	createPool(t, "auto", poolFor(ns, "10.10.0.0/30"))
	createService(t, ns, "web")
	s := waitIPs(t, ns, "web", "10.10.0.0")
	if m := s.Status.LoadBalancer.Ingress[0].IPMode; m == nil || *m != corev1.LoadBalancerIPModeVIP {
		t.Errorf("ipMode %v, want VIP", m)
	}
	if !servicehelper.HasLBFinalizer(s) {
		t.Errorf("finalizers %v lack %s", s.Finalizers, servicehelper.LoadBalancerCleanupFinalizer)
	}
	if e := waitEvent(t, ns, "web", "IPAllocated"); e.Type != corev1.EventTypeNormal {
		t.Errorf("IPAllocated event of type %s", e.Type)
	}
	createService(t, ns, "api")
	waitIPs(t, ns, "api", "10.10.0.1")
	eventually(t, "pool status counts", func() (bool, string) {
		p := getPool(t, "auto")
		ok := p.Status.IPv4 != nil && p.Status.IPv4.Total == 4 && p.Status.IPv4.Used == 2 && p.Status.Used == 2 && p.Status.Free == 2
		return ok, fmt.Sprintf("status %+v %+v", p.Status.IPv4, p.Status)
	})
	waitCondition(t, "auto", "Ready", metav1.ConditionTrue)
}

func TestRequestedIP(t *testing.T) {
	startController(t, testOptions())
	ns := namespace(t, nil)
	createPool(t, "requested", poolFor(ns, "10.11.0.0/24"))
	createService(t, ns, "by-annotation", withAnnotation(ironlbv1alpha1.AnnotationIPs, "10.11.0.42"))
	waitIPs(t, ns, "by-annotation", "10.11.0.42")
	createService(t, ns, "by-spec", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "10.11.0.43" })
	waitIPs(t, ns, "by-spec", "10.11.0.43")
	// Automatic allocation goes around requested addresses.
	createService(t, ns, "auto")
	waitIPs(t, ns, "auto", "10.11.0.0")

	createService(t, ns, "taken", withAnnotation(ironlbv1alpha1.AnnotationIPs, "10.11.0.42"))
	waitEvent(t, ns, "taken", "RequestedIPInUse")
	createService(t, ns, "outside", withAnnotation(ironlbv1alpha1.AnnotationIPs, "10.99.0.1"))
	waitEvent(t, ns, "outside", "RequestedIPNotInPool")
	createService(t, ns, "garbage", withAnnotation(ironlbv1alpha1.AnnotationIPs, "ten.eleven"))
	waitEvent(t, ns, "garbage", "InvalidRequest")
	for _, name := range []string{"taken", "outside", "garbage"} {
		if ips := ingressIPs(getService(t, ns, name)); len(ips) > 0 {
			t.Errorf("%s got %v despite its failure", name, ips)
		}
	}

	// Changing the request moves the Service; the old address is free again.
	svc := getService(t, ns, "by-annotation")
	update(t, svc, func() { svc.Annotations[ironlbv1alpha1.AnnotationIPs] = "10.11.0.44" })
	waitIPs(t, ns, "by-annotation", "10.11.0.44")
	waitIPs(t, ns, "taken", "10.11.0.42")
}

func TestPoolAnnotation(t *testing.T) {
	startController(t, testOptions())
	ns := namespace(t, nil)
	createPool(t, "first", poolFor(ns, "10.12.0.0/32"))
	manual := poolFor(ns, "10.12.1.0/30")
	manual.AutoAssign = new(false)
	createPool(t, "manual", manual)
	createService(t, ns, "default")
	waitIPs(t, ns, "default", "10.12.0.0")
	// The automatic pool is full, and the manual one is never used unasked.
	createService(t, ns, "unasked")
	waitEvent(t, ns, "unasked", "PoolExhausted")
	createService(t, ns, "asked", withAnnotation(ironlbv1alpha1.AnnotationPool, "manual"))
	waitIPs(t, ns, "asked", "10.12.1.0")
	createService(t, ns, "missing", withAnnotation(ironlbv1alpha1.AnnotationPool, "no-such-pool"))
	waitEvent(t, ns, "missing", "NoPool")
}

func TestNamespaceAndSelectorRestrictions(t *testing.T) {
	startController(t, testOptions())
	teamA := namespace(t, map[string]string{"tier": "prod"})
	teamB := namespace(t, nil)
	createPool(t, "team-a", poolFor(teamA, "10.13.0.0/30"))
	createPool(t, "by-labels", ironlbv1alpha1.IPPoolSpec{
		Addresses: addresses("10.13.1.0/30"),
		AllocateTo: &ironlbv1alpha1.AllocateTo{
			Priority:          new(int32(1)),
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "prod"}},
			ServiceSelector:   &metav1.LabelSelector{MatchLabels: map[string]string{"expose": "public"}},
		},
	})

	// Team B may not take team A's address, by request or by pool name.
	createService(t, teamB, "steal-ip", withAnnotation(ironlbv1alpha1.AnnotationIPs, "10.13.0.1"))
	e := waitEvent(t, teamB, "steal-ip", "NotAllowed")
	if e.Type != corev1.EventTypeWarning {
		t.Errorf("NotAllowed event of type %s", e.Type)
	}
	createService(t, teamB, "steal-pool", withAnnotation(ironlbv1alpha1.AnnotationPool, "team-a"))
	waitEvent(t, teamB, "steal-pool", "NotAllowed")
	createService(t, teamB, "plain")
	waitEvent(t, teamB, "plain", "NoPool")

	// Team A gets its own pool; a Service labelled for the selector pool
	// gets that one first (priority 1 beats none).
	createService(t, teamA, "plain")
	waitIPs(t, teamA, "plain", "10.13.0.0")
	createService(t, teamA, "public", func(s *corev1.Service) { s.Labels = map[string]string{"expose": "public"} })
	waitIPs(t, teamA, "public", "10.13.1.0")
	createService(t, teamA, "own-ip", withAnnotation(ironlbv1alpha1.AnnotationIPs, "10.13.0.3"))
	waitIPs(t, teamA, "own-ip", "10.13.0.3")

	for _, name := range []string{"steal-ip", "steal-pool", "plain"} {
		if ips := ingressIPs(getService(t, teamB, name)); len(ips) > 0 {
			t.Errorf("%s/%s got %v", teamB, name, ips)
		}
	}
}

func TestSharing(t *testing.T) {
	startController(t, testOptions())
	ns := namespace(t, nil)
	createPool(t, "sharing", poolFor(ns, "10.14.0.0/29"))
	key := withAnnotation(ironlbv1alpha1.AnnotationSharingKey, "k")

	createService(t, ns, "http", key, withPorts(80))
	waitIPs(t, ns, "http", "10.14.0.0")
	createService(t, ns, "https", key, withPorts(443))
	waitIPs(t, ns, "https", "10.14.0.0")

	// Refused: a clashing port, Local next to Cluster, Local with another
	// selector, no key, another key.
	at := withAnnotation(ironlbv1alpha1.AnnotationIPs, "10.14.0.0")
	createService(t, ns, "clash", key, withPorts(80), at)
	waitEvent(t, ns, "clash", "SharingConflict")
	createService(t, ns, "local", key, withPorts(8080), withLocal(map[string]string{"app": "x"}), at)
	waitEvent(t, ns, "local", "SharingConflict")
	createService(t, ns, "nokey", withPorts(8081), at)
	waitEvent(t, ns, "nokey", "RequestedIPInUse")
	createService(t, ns, "otherkey", withAnnotation(ironlbv1alpha1.AnnotationSharingKey, "other"), withPorts(8082), at)
	waitEvent(t, ns, "otherkey", "SharingConflict")

	// Local Services share with Local Services of the same selector only.
	createService(t, ns, "local-a", key, withPorts(80), withLocal(map[string]string{"app": "x"}))
	s := waitIPs(t, ns, "local-a", "10.14.0.1")
	createService(t, ns, "local-b", key, withPorts(443), withLocal(map[string]string{"app": "x"}))
	waitIPs(t, ns, "local-b", "10.14.0.1")
	createService(t, ns, "local-c", key, withPorts(8443), withLocal(map[string]string{"app": "y"}), withAnnotation(ironlbv1alpha1.AnnotationIPs, "10.14.0.1"))
	waitEvent(t, ns, "local-c", "SharingConflict")

	// The shared address stays until its last holder goes.
	if err := k8s.Delete(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	waitIPs(t, ns, "local-b", "10.14.0.1")
	createService(t, ns, "after", withAnnotation(ironlbv1alpha1.AnnotationIPs, "10.14.0.1"))
	waitEvent(t, ns, "after", "RequestedIPInUse")
}

func TestDualStack(t *testing.T) {
	startController(t, testOptions())
	ns := namespace(t, nil)
	createPool(t, "v4", poolFor(ns, "10.15.0.0/32"))
	createPool(t, "v6", poolFor(ns, "fd00:15::/127"))

	createService(t, ns, "require", withFamilies(corev1.IPFamilyPolicyRequireDualStack, corev1.IPv6Protocol, corev1.IPv4Protocol))
	waitIPs(t, ns, "require", "fd00:15::", "10.15.0.0")
	// The only IPv4 address is taken: Require gets nothing, Prefer gets
	// IPv6 alone.
	createService(t, ns, "require-2", withFamilies(corev1.IPFamilyPolicyRequireDualStack, corev1.IPv4Protocol, corev1.IPv6Protocol))
	waitEvent(t, ns, "require-2", "PoolExhausted")
	createService(t, ns, "prefer", withFamilies(corev1.IPFamilyPolicyPreferDualStack, corev1.IPv4Protocol, corev1.IPv6Protocol))
	waitIPs(t, ns, "prefer", "fd00:15::1")
	if ips := ingressIPs(getService(t, ns, "require-2")); len(ips) > 0 {
		t.Errorf("require-2 got %v", ips)
	}
	createService(t, ns, "v6-only", withFamilies(corev1.IPFamilyPolicySingleStack, corev1.IPv6Protocol))
	waitEvent(t, ns, "v6-only", "PoolExhausted")

	// Freeing the dual-stack Service serves the others without touching
	// them; the Prefer Service keeps its IPv6 address and gains an IPv4 one
	// only if it is reconciled after the IPv4 address is free.
	if err := k8s.Delete(context.Background(), getService(t, ns, "require")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "freed addresses go to the waiting Services", func() (bool, string) {
		r2 := ingressIPs(getService(t, ns, "require-2"))
		v6 := ingressIPs(getService(t, ns, "v6-only"))
		p := ingressIPs(getService(t, ns, "prefer"))
		holders := append(append(slices.Clone(r2), v6...), p...)
		dup := len(holders) != len(uniq(holders))
		ok := !dup && slices.Contains(p, "fd00:15::1") && (len(r2) == 2 || len(v6) == 1)
		return ok, fmt.Sprintf("require-2 %v, v6-only %v, prefer %v", r2, v6, p)
	})
}

func uniq(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

func TestExhaustedPoolServesWaitingServiceOnRelease(t *testing.T) {
	startController(t, testOptions())
	ns := namespace(t, nil)
	createPool(t, "tiny", poolFor(ns, "10.16.0.7/32"))
	first := createService(t, ns, "first")
	waitIPs(t, ns, "first", "10.16.0.7")
	createService(t, ns, "second")
	if e := waitEvent(t, ns, "second", "PoolExhausted"); e.Type != corev1.EventTypeWarning {
		t.Errorf("PoolExhausted event of type %s", e.Type)
	}
	if err := k8s.Delete(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	// Nobody touches "second": the release alone must serve it.
	waitIPs(t, ns, "second", "10.16.0.7")
}

func TestNewPoolServesWaitingService(t *testing.T) {
	startController(t, testOptions())
	ns := namespace(t, nil)
	createService(t, ns, "early")
	waitEvent(t, ns, "early", "NoPool")
	createPool(t, "late", poolFor(ns, "10.17.0.0/32"))
	waitIPs(t, ns, "early", "10.17.0.0")
}

func TestClasses(t *testing.T) {
	startController(t, testOptions())
	ns := namespace(t, nil)
	createPool(t, "classes", poolFor(ns, "10.18.0.0/30"))
	createService(t, ns, "ours", withClass(ironlbv1alpha1.LoadBalancerClass))
	waitIPs(t, ns, "ours", "10.18.0.0")
	createService(t, ns, "classless")
	waitIPs(t, ns, "classless", "10.18.0.1")
	createService(t, ns, "theirs", withClass("example.com/other"))
	createService(t, ns, "cluster-ip", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP })
	// A later Service of ours gets its IP: the controller has seen the
	// two before it, so a window without change means something.
	createService(t, ns, "later", withClass(ironlbv1alpha1.LoadBalancerClass))
	waitIPs(t, ns, "later", "10.18.0.2")
	consistently(t, "other classes and types are left alone", time.Second, func() (bool, string) {
		for _, name := range []string{"theirs", "cluster-ip"} {
			s := getService(t, ns, name)
			if len(s.Status.LoadBalancer.Ingress) > 0 || servicehelper.HasLBFinalizer(s) {
				return false, fmt.Sprintf("%s was touched: %v %v", name, ingressIPs(s), s.Finalizers)
			}
		}
		return true, ""
	})
}

func TestDefaultClassOff(t *testing.T) {
	opts := testOptions()
	opts.DefaultClass = false
	startController(t, opts)
	ns := namespace(t, nil)
	createPool(t, "class-only", poolFor(ns, "10.19.0.0/30"))
	createService(t, ns, "ours", withClass(ironlbv1alpha1.LoadBalancerClass))
	waitIPs(t, ns, "ours", "10.19.0.0")
	createService(t, ns, "classless")
	createService(t, ns, "later", withClass(ironlbv1alpha1.LoadBalancerClass))
	waitIPs(t, ns, "later", "10.19.0.1")
	consistently(t, "a class-less Service is not ours", time.Second, func() (bool, string) {
		ips := ingressIPs(getService(t, ns, "classless"))
		return len(ips) == 0, fmt.Sprintf("got %v", ips)
	})
}

func TestTypeChangeReleases(t *testing.T) {
	startController(t, testOptions())
	ns := namespace(t, nil)
	createPool(t, "type-change", poolFor(ns, "10.20.0.0/32"))
	s := createService(t, ns, "moving")
	waitIPs(t, ns, "moving", "10.20.0.0")
	createService(t, ns, "waiting")
	waitEvent(t, ns, "waiting", "PoolExhausted")
	update(t, s, func() { s.Spec.Type = corev1.ServiceTypeClusterIP })
	eventually(t, "status and finalizer cleared", func() (bool, string) {
		got := getService(t, ns, "moving")
		return len(got.Status.LoadBalancer.Ingress) == 0 && !servicehelper.HasLBFinalizer(got), fmt.Sprintf("%v %v", ingressIPs(got), got.Finalizers)
	})
	waitIPs(t, ns, "waiting", "10.20.0.0")
}

func TestDeletingPoolInUseIsHeld(t *testing.T) {
	startController(t, testOptions())
	ns := namespace(t, nil)
	createPool(t, "held", poolFor(ns, "10.21.0.0/30"))
	s := createService(t, ns, "holder")
	waitIPs(t, ns, "holder", "10.21.0.0")
	eventually(t, "pool finalizer", func() (bool, string) {
		p := getPool(t, "held")
		return slices.Contains(p.Finalizers, ironlbv1alpha1.PoolProtectionFinalizer), fmt.Sprintf("%v", p.Finalizers)
	})
	if err := k8s.Delete(context.Background(), getPool(t, "held")); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, "held", "InUse", metav1.ConditionTrue, ns+"/holder")
	waitCondition(t, "held", "Ready", metav1.ConditionFalse, "deleted")
	// A deleting pool gives nothing new, and the holder keeps its address.
	createService(t, ns, "newcomer")
	waitEvent(t, ns, "newcomer", "NoPool")
	waitIPs(t, ns, "holder", "10.21.0.0")

	if err := k8s.Delete(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pool goes once unused", func() (bool, string) {
		err := k8s.Get(context.Background(), client.ObjectKey{Name: "held"}, &ironlbv1alpha1.IPPool{})
		return err != nil, "still there"
	})
}

func TestShrinkingPoolKeepsIPsAndReportsOrphans(t *testing.T) {
	startController(t, testOptions())
	ns := namespace(t, nil)
	pool := createPool(t, "shrink", poolFor(ns, "10.22.0.0/30"))
	createService(t, ns, "a")
	waitIPs(t, ns, "a", "10.22.0.0")
	createService(t, ns, "b")
	waitIPs(t, ns, "b", "10.22.0.1")
	update(t, pool, func() { pool.Spec.Addresses = addresses("10.22.0.0/32", "10.22.0.2/31") })
	waitCondition(t, "shrink", "Orphans", metav1.ConditionTrue, ns+"/b")
	waitEvent(t, ns, "b", "AddressOutsidePool")
	// A later Service gets one of the pool's new addresses, not b's (the
	// controller has acted on the shrink when the window starts).
	createService(t, ns, "c")
	waitIPs(t, ns, "c", "10.22.0.2")
	consistently(t, "the orphan keeps its address", time.Second, func() (bool, string) {
		got := ingressIPs(getService(t, ns, "b"))
		return slices.Equal(got, []string{"10.22.0.1"}), fmt.Sprintf("%v", got)
	})
}

func TestPoolProblemsAreConditions(t *testing.T) {
	startController(t, testOptions())
	ns := namespace(t, nil)
	createPool(t, "overlap-a", poolFor(ns, "10.23.0.0/24"))
	createPool(t, "overlap-b", poolFor(ns, "10.23.0.200-10.23.1.10"))
	waitCondition(t, "overlap-a", "Overlap", metav1.ConditionTrue, "overlap-b")
	waitCondition(t, "overlap-b", "Overlap", metav1.ConditionTrue, "overlap-a")
	// A reversed IPv6 range passes admission (CEL cannot order IPv6), so the
	// controller reports it and serves the pool's valid entries.
	createPool(t, "reversed-v6", poolFor(ns, "fd00:23::9-fd00:23::1", "10.23.5.0/32"))
	waitCondition(t, "reversed-v6", "Ready", metav1.ConditionFalse, "spec.addresses[0]", "start is after end")
	waitEvent(t, "", "reversed-v6", "InvalidAddresses")
	createService(t, ns, "still-served", withAnnotation(ironlbv1alpha1.AnnotationPool, "reversed-v6"))
	waitIPs(t, ns, "still-served", "10.23.5.0")
}

// TestIPStability: a Service keeps its IP when it adds or changes a sharing
// key, switches to externalTrafficPolicy Local, or edits a Local selector,
// whenever the sharing rules allow it (each case is set up so that a
// release and a new allocation would give another IP); a change that does
// clash keeps the IP, with a SharingConflict Event, until the clash is
// gone.
func TestIPStability(t *testing.T) {
	startController(t, testOptions())
	ns := namespace(t, nil)
	createPool(t, "stable", poolFor(ns, "10.15.0.0/29"))
	edit := func(name string, mutate func(*corev1.Service)) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			s := getService(t, ns, name)
			mutate(s)
			return k8s.Update(context.Background(), s)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	processed := func(name string) {
		t.Helper()
		// The controller has seen the edit once the Service's generation
		// is observed, or, for annotations, once a later Service of ours
		// got its IP: the controller works through its queue.
		probe := fmt.Sprintf("probe-%d", time.Now().UnixNano())
		createService(t, ns, probe, withPorts(9))
		eventually(t, "the probe gets an IP", func() (bool, string) {
			return len(ingressIPs(getService(t, ns, probe))) == 1, "none yet"
		})
		if err := k8s.Delete(context.Background(), getService(t, ns, probe)); err != nil {
			t.Fatal(err)
		}
	}

	// web takes .1 with .0 freed below it: a new allocation would give .0.
	createService(t, ns, "first", withPorts(80))
	waitIPs(t, ns, "first", "10.15.0.0")
	createService(t, ns, "web", withPorts(80))
	waitIPs(t, ns, "web", "10.15.0.1")
	if err := k8s.Delete(context.Background(), getService(t, ns, "first")); err != nil {
		t.Fatal(err)
	}
	// An IP shared under key k elsewhere: a new allocation with k would
	// take it.
	createService(t, ns, "kshare", withAnnotation(ironlbv1alpha1.AnnotationSharingKey, "k"), withPorts(443))
	kIP := ingressIPs(waitIPsAny(t, ns, "kshare"))[0]

	edit("web", func(s *corev1.Service) { s.Annotations = map[string]string{ironlbv1alpha1.AnnotationSharingKey: "k"} })
	processed("web")
	waitIPs(t, ns, "web", "10.15.0.1")
	if kIP == "10.15.0.1" {
		t.Fatal("test setup: kshare took web's IP")
	}

	edit("web", func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.Selector = map[string]string{"app": "web"}
	})
	processed("web")
	waitIPs(t, ns, "web", "10.15.0.1")
	edit("web", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "web2"} })
	processed("web")
	waitIPs(t, ns, "web", "10.15.0.1")

	// A clash: web2 shares web's IP under k, then web2's key changes.
	createService(t, ns, "web2", withAnnotation(ironlbv1alpha1.AnnotationSharingKey, "k"), withPorts(8080),
		withLocal(map[string]string{"app": "web2"}), withAnnotation(ironlbv1alpha1.AnnotationIPs, "10.15.0.1"))
	waitIPs(t, ns, "web2", "10.15.0.1")
	edit("web2", func(s *corev1.Service) { s.Annotations[ironlbv1alpha1.AnnotationSharingKey] = "other" })
	waitEvent(t, ns, "web2", "SharingConflict")
	waitIPs(t, ns, "web2", "10.15.0.1")
	// web goes: the clash is gone, web2 keeps its IP under its new key.
	if err := k8s.Delete(context.Background(), getService(t, ns, "web")); err != nil {
		t.Fatal(err)
	}
	processed("web2")
	waitIPs(t, ns, "web2", "10.15.0.1")
}

// waitIPsAny waits until the Service has an IP, whichever.
func waitIPsAny(t *testing.T, ns, name string) *corev1.Service {
	t.Helper()
	var s *corev1.Service
	eventually(t, ns+"/"+name+" gets an IP", func() (bool, string) {
		s = getService(t, ns, name)
		return len(ingressIPs(s)) > 0, "none yet"
	})
	return s
}

// TestGrowingPoolMovesNothing: a pool that grows serves a waiting Service
// from its new addresses and moves none of the IPs already given.
func TestGrowingPoolMovesNothing(t *testing.T) {
	startController(t, testOptions())
	ns := namespace(t, nil)
	pool := createPool(t, "grow", poolFor(ns, "10.24.0.0/31"))
	createService(t, ns, "a")
	waitIPs(t, ns, "a", "10.24.0.0")
	createService(t, ns, "b")
	waitIPs(t, ns, "b", "10.24.0.1")
	createService(t, ns, "c")
	waitEvent(t, ns, "c", "PoolExhausted")
	update(t, pool, func() { pool.Spec.Addresses = addresses("10.24.0.0/30") })
	waitIPs(t, ns, "c", "10.24.0.2")
	for name, ip := range map[string]string{"a": "10.24.0.0", "b": "10.24.0.1"} {
		if got := ingressIPs(getService(t, ns, name)); !slices.Equal(got, []string{ip}) {
			t.Errorf("%s moved from %s to %v when the pool grew", name, ip, got)
		}
	}
}
