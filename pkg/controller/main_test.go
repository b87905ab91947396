package controller_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ironlb/ironlb/internal/testenv"
	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/controller"
)

var (
	env *testenv.Env
	k8s client.Client
)

func TestMain(m *testing.M) {
	if os.Getenv("IRONLB_TEST_LOG") != "" {
		log.SetLogger(zap.New(zap.UseDevMode(true)))
	}
	testenv.Main(m, &env, &k8s)
}

// testOptions run a controller with fast leader election and no listeners.
func testOptions() controller.Options {
	o := controller.DefaultOptions()
	o.LeaderElectionNamespace = "default"
	// Quick to hand over, yet a leader that stops renewing has stopped
	// writing before another can take the Lease (see NewManager).
	o.LeaseDuration, o.RenewDeadline, o.RetryPeriod = 4*time.Second, 2*time.Second, 200*time.Millisecond
	o.MetricsAddr, o.HealthAddr = "0", "0"
	o.SeveralPerProcess = true
	o.Namespace, o.MemberlistSecret = "default", "" // memberkey_test.go tests the key
	return o
}

// startController runs a controller until the returned stop is called (or
// the test ends) and returns a function that stops it and waits.
func startController(t *testing.T, opts controller.Options) (stop func()) {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	mgr, err := controller.NewManager(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once atomic.Bool
	stop = func() {
		if once.Swap(true) {
			return
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("controller stopped with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("controller did not stop within 30s")
		}
	}
	t.Cleanup(stop)
	return stop
}

var nsCounter atomic.Int32

// namespace creates a namespace for one test.
func namespace(t *testing.T, labels map[string]string) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%s", nsCounter.Add(1), strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())))
	if len(name) > 60 {
		name = name[:60]
	}
	name = strings.TrimRight(name, "-")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return name
}

// createPool creates a pool and deletes it when the test ends.
func createPool(t *testing.T, name string, spec ironlbv1alpha1.IPPoolSpec) *ironlbv1alpha1.IPPool {
	t.Helper()
	p := &ironlbv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deletePool(t, name) })
	return p
}

// deletePool deletes a pool and, should no controller be running to
// release its finalizer, removes that too.
func deletePool(t *testing.T, name string) {
	ctx := context.Background()
	p := &ironlbv1alpha1.IPPool{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: name}, p); err != nil {
		return
	}
	_ = k8s.Delete(ctx, p)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if err := k8s.Get(ctx, client.ObjectKey{Name: name}, p); apierrors.IsNotFound(err) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.Finalizers = nil
	_ = k8s.Update(ctx, p)
}

func addresses(a ...string) []ironlbv1alpha1.AddressRange {
	out := make([]ironlbv1alpha1.AddressRange, len(a))
	for i, s := range a {
		out[i] = ironlbv1alpha1.AddressRange(s)
	}
	return out
}

// poolFor returns a pool spec restricted to one namespace, so concurrent
// tests' pools never serve each other's Services.
func poolFor(ns string, a ...string) ironlbv1alpha1.IPPoolSpec {
	return ironlbv1alpha1.IPPoolSpec{Addresses: addresses(a...), AllocateTo: &ironlbv1alpha1.AllocateTo{Namespaces: []string{ns}}}
}

type svcMod func(*corev1.Service)

func withAnnotation(k, v string) svcMod {
	return func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}

func withPorts(ports ...int32) svcMod {
	return func(s *corev1.Service) {
		s.Spec.Ports = nil
		for _, p := range ports {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("p%d", p), Port: p, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(p)})
		}
	}
}

func withLocal(selector map[string]string) svcMod {
	return func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.Selector = selector
	}
}

func withFamilies(policy corev1.IPFamilyPolicy, fams ...corev1.IPFamily) svcMod {
	return func(s *corev1.Service) {
		s.Spec.IPFamilyPolicy = &policy
		s.Spec.IPFamilies = fams
	}
}

func withClass(c string) svcMod {
	return func(s *corev1.Service) { s.Spec.LoadBalancerClass = &c }
}

// createService creates a LoadBalancer Service and deletes it when the test
// ends.
func createService(t *testing.T, ns, name string, mods ...svcMod) *corev1.Service {
	t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": name},
		},
	}
	withPorts(80)(s)
	for _, m := range mods {
		m(s)
	}
	if err := k8s.Create(context.Background(), s); err != nil {
		t.Fatalf("create service %s/%s: %v", ns, name, err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), s) })
	return s
}

// eventually polls cond every 50 ms until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within 30s; last: %s", what, last)
}

// consistently checks cond every 50 ms for d and fails as soon as it does
// not hold.
func consistently(t *testing.T, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ok, msg := cond(); !ok {
			t.Fatalf("%s: %s", what, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func getService(t *testing.T, ns, name string) *corev1.Service {
	t.Helper()
	s := &corev1.Service{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		t.Fatal(err)
	}
	return s
}

func ingressIPs(s *corev1.Service) []string {
	var out []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		out = append(out, in.IP)
	}
	return out
}

// waitIPs waits until the Service's status shows exactly want, in order.
func waitIPs(t *testing.T, ns, name string, want ...string) *corev1.Service {
	t.Helper()
	var s *corev1.Service
	eventually(t, fmt.Sprintf("%s/%s gets %v", ns, name, want), func() (bool, string) {
		s = getService(t, ns, name)
		got := ingressIPs(s)
		return slices.Equal(got, want), fmt.Sprintf("status shows %v", got)
	})
	return s
}

// waitEvent waits for an Event of the given reason on the named object.
func waitEvent(t *testing.T, ns, name, reason string) corev1.Event {
	t.Helper()
	var found corev1.Event
	eventually(t, fmt.Sprintf("event %s on %s/%s", reason, ns, name), func() (bool, string) {
		var list corev1.EventList
		if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range list.Items {
			if e.InvolvedObject.Name == name {
				if e.Reason == reason {
					found = e
					return true, ""
				}
				seen = append(seen, e.Reason)
			}
		}
		return false, fmt.Sprintf("events seen: %v", seen)
	})
	return found
}

func getPool(t *testing.T, name string) *ironlbv1alpha1.IPPool {
	t.Helper()
	p := &ironlbv1alpha1.IPPool{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitCondition waits for a pool condition of the given status whose
// message contains each of contains.
func waitCondition(t *testing.T, pool, typ string, status metav1.ConditionStatus, contains ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("pool %s condition %s=%s", pool, typ, status), func() (bool, string) {
		p := &ironlbv1alpha1.IPPool{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: pool}, p); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(p.Status.Conditions, typ)
		if c == nil {
			return false, "no condition"
		}
		if c.Status != status {
			return false, fmt.Sprintf("status %s: %s", c.Status, c.Message)
		}
		for _, s := range contains {
			if !strings.Contains(c.Message, s) {
				return false, fmt.Sprintf("message %q lacks %q", c.Message, s)
			}
		}
		return true, ""
	})
}

func update(t *testing.T, obj client.Object, mutate func()) {
	t.Helper()
	for range 10 {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			t.Fatal(err)
		}
		mutate()
		err := k8s.Update(context.Background(), obj)
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) {
			t.Fatal(err)
		}
	}
	t.Fatal("update kept conflicting")
}
