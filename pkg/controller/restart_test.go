package controller_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// listIPs returns each Service of the namespace with the IPs its status
// shows.
func listIPs(t *testing.T, ns string) map[string][]string {
	t.Helper()
	var list corev1.ServiceList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for i := range list.Items {
		out[list.Items[i].Name] = ingressIPs(&list.Items[i])
	}
	return out
}

// duplicates returns a description of any IP shown by two Services.
func duplicates(ips map[string][]string) string {
	owner := map[string]string{}
	for name, list := range ips {
		for _, ip := range list {
			if other, ok := owner[ip]; ok {
				return fmt.Sprintf("%s held by %s and %s", ip, other, name)
			}
			owner[ip] = name
		}
	}
	return ""
}

func createMany(t *testing.T, ns, prefix string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 20)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s := &corev1.Service{}
			s.Namespace, s.Name = ns, fmt.Sprintf("%s-%03d", prefix, i)
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			withPorts(80)(s)
			errs <- k8s.Create(context.Background(), s)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestRestartKeepsEveryIP restarts the controller under 200 Services, with
// holes in the pool and new Services created while it is down: no Service
// that held an IP may see it change.
func TestRestartKeepsEveryIP(t *testing.T) {
	stop := startController(t, testOptions())
	ns := namespace(t, nil)
	createPool(t, "restart", poolFor(ns, "10.30.0.0/23"))
	createMany(t, ns, "svc", 200)
	var before map[string][]string
	eventually(t, "200 Services get IPs", func() (bool, string) {
		before = listIPs(t, ns)
		n := 0
		for _, ips := range before {
			if len(ips) == 1 {
				n++
			}
		}
		return n == 200, fmt.Sprintf("%d of 200", n)
	})
	// Holes: delete every seventh Service, so the lowest free addresses lie
	// between held ones.
	for i := 0; i < 200; i += 7 {
		name := fmt.Sprintf("svc-%03d", i)
		if err := k8s.Delete(context.Background(), getService(t, ns, name)); err != nil {
			t.Fatal(err)
		}
		delete(before, name)
	}
	eventually(t, "deleted Services gone", func() (bool, string) {
		n := len(listIPs(t, ns))
		return n == len(before), fmt.Sprintf("%d Services", n)
	})
	stop()

	// While no controller runs, new Services arrive.
	createMany(t, ns, "new", 20)
	startController(t, testOptions())
	eventually(t, "new Services get IPs", func() (bool, string) {
		now := listIPs(t, ns)
		for i := range 20 {
			if len(now[fmt.Sprintf("new-%03d", i)]) != 1 {
				return false, fmt.Sprintf("new-%03d has %v", i, now[fmt.Sprintf("new-%03d", i)])
			}
		}
		return true, ""
	})
	after := listIPs(t, ns)
	if d := duplicates(after); d != "" {
		t.Fatal(d)
	}
	for name, ips := range before {
		if fmt.Sprint(after[name]) != fmt.Sprint(ips) {
			t.Errorf("%s moved from %v to %v", name, ips, after[name])
		}
	}
}

// TestTwoReplicasNeverShareAnIP runs two controllers with leader election
// while Services come and go, stops the leader half way, and checks at every
// step that no IP is shown by two Services.
func TestTwoReplicasNeverShareAnIP(t *testing.T) {
	before := leaseHolder(t)
	stopA := startController(t, testOptions())
	// A alone takes the Lease: its holder is then A's identity.
	var idA string
	eventually(t, "the first replica holds the Lease", func() (bool, string) {
		idA = leaseHolder(t)
		return idA != "" && idA != before, "holder " + idA
	})
	stopB := startController(t, testOptions())
	ns := namespace(t, nil)
	createPool(t, "replicas", poolFor(ns, "10.31.0.0/26"))
	rng := rand.New(rand.NewPCG(1, 2))
	live := map[int]bool{}
	stopped := ""
	deadline := time.Now().Add(20 * time.Second)
	for step := 0; step < 200 && time.Now().Before(deadline); step++ {
		if step >= 100 && stopped == "" {
			// Stop the leader, whichever it is now: the other must take
			// over cleanly.
			holder := leaseHolder(t)
			if holder == idA {
				stopA()
			} else {
				stopB()
			}
			stopped = holder
			eventually(t, "the other replica takes the Lease", func() (bool, string) {
				h := leaseHolder(t)
				return h != "" && h != stopped, "holder " + h
			})
		}
		i := rng.IntN(40)
		name := fmt.Sprintf("churn-%02d", i)
		if live[i] {
			err := k8s.Delete(context.Background(), getService(t, ns, name))
			if err != nil && !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
			delete(live, i)
		} else {
			s := &corev1.Service{}
			s.Namespace, s.Name = ns, name
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			withPorts(80)(s)
			if err := k8s.Create(context.Background(), s); err != nil {
				if !apierrors.IsAlreadyExists(err) {
					t.Fatal(err)
				}
				// Still going from an earlier delete: leave it be.
				continue
			}
			live[i] = true
		}
		if d := duplicates(listIPs(t, ns)); d != "" {
			t.Fatalf("step %d: %s", step, d)
		}
	}
	if stopped == "" {
		t.Fatal("the churn ended before a leader was stopped: the test proved nothing about a takeover")
	}
	eventually(t, "every live Service has one IP, none shared", func() (bool, string) {
		now := listIPs(t, ns)
		if d := duplicates(now); d != "" {
			t.Fatal(d)
		}
		for i := range live {
			name := fmt.Sprintf("churn-%02d", i)
			if len(now[name]) != 1 {
				return false, fmt.Sprintf("%s has %v; %s", name, now[name], debugService(t, ns, name))
			}
		}
		return true, ""
	})
}

func debugService(t *testing.T, ns, name string) string {
	svc := getService(t, ns, name)
	var evs eventsv1.EventList
	_ = k8s.List(context.Background(), &evs, client.InNamespace(ns))
	out := fmt.Sprintf("uid %s del %v fin %v;", svc.UID, svc.DeletionTimestamp, svc.Finalizers)
	for _, e := range evs.Items {
		if e.Regarding.Name == name {
			out += fmt.Sprintf(" [%s %s %s]", e.Reason, e.Note, e.Regarding.UID)
		}
	}
	return out
}

// leaseHolder is the holder of the controllers' Lease ("" when none).
func leaseHolder(t *testing.T) string {
	t.Helper()
	var l coordinationv1.Lease
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "ironlb-controller"}, &l); err != nil {
		if apierrors.IsNotFound(err) {
			return ""
		}
		t.Fatal(err)
	}
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// TestLeaseReleasedOnStop: a leader that stops (SIGTERM) releases its
// Lease, so the standby takes over at its next retry, long before the
// Lease would have expired.
func TestLeaseReleasedOnStop(t *testing.T) {
	opts := testOptions()
	opts.LeaseDuration, opts.RenewDeadline = 30*time.Second, 20*time.Second
	before := leaseHolder(t)
	stopA := startController(t, opts)
	var idA string
	eventually(t, "the first replica holds the Lease", func() (bool, string) {
		idA = leaseHolder(t)
		return idA != "" && idA != before, "holder " + idA
	})
	startController(t, opts)
	stopA()
	stopped := time.Now()
	var idB string
	eventually(t, "the standby takes the Lease", func() (bool, string) {
		idB = leaseHolder(t)
		return idB != "" && idB != idA, "holder " + idB
	})
	// Without the release it would wait out the 30 s Lease.
	if took := time.Since(stopped); took > opts.LeaseDuration/3 {
		t.Errorf("the standby took over %s after the leader stopped: the Lease was not released", took.Round(time.Millisecond))
	} else {
		t.Logf("the standby took over %s after the leader stopped", took.Round(time.Millisecond))
	}
}
