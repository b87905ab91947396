package speaker

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/ironlb/ironlb/internal/kube"
	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/dataplane"
)

// TestWarnProblems: an IP that is not announced, or a data plane that
// cannot be programmed, is a Warning Event with its reason, sent once per
// warnEvery however many syncs see it.
func TestWarnProblems(t *testing.T) {
	scheme, err := kube.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(svc, node).Build()
	rec := events.NewFakeRecorder(16)
	w := newWriter(logr.Discard(), c, rec, "n1")
	key := types.NamespacedName{Namespace: "ns", Name: "web"}
	ip := netip.MustParseAddr("192.0.2.1")
	w.publishProblems([]problem{
		{service: key, ip: ip, reason: "NoInterface", message: "192.0.2.1 is not announced: eht0"},
		{service: key, ip: ip, reason: "DataplaneFailed", message: "could not be programmed"},
	})
	w.publishDataplaneError(errors.New("map full"))
	for range 3 {
		w.warnProblems(t.Context())
	}
	var got []string
	for len(rec.Events) > 0 {
		got = append(got, <-rec.Events)
	}
	want := []string{"Warning NoInterface", "Warning DataplaneFailed could not", "Warning DataplaneFailed the XDP data plane of node n1"}
	if len(got) != len(want) {
		t.Fatalf("events %q, want one each of %q", got, want)
	}
	for i, wnt := range want {
		if !strings.HasPrefix(got[i], wnt) {
			t.Errorf("event %d: %q, want %q...", i, got[i], wnt)
		}
	}
}

// TestWriteAnnouncements: the writer keeps one Announcement per (Service,
// IP, protocol) this node announces, labelled and owned by the Service,
// sends the Announcing Event once, updates the spec when it changes, and
// removes what this node stopped announcing and, for an IP it owns, what a
// dead node left behind (not a live node's).
func TestWriteAnnouncements(t *testing.T) {
	scheme, err := kube.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", UID: "svc-uid"}}
	ip := netip.MustParseAddr("192.0.2.1")
	leftBy := func(node string) *ironlbv1alpha1.Announcement {
		return &ironlbv1alpha1.Announcement{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: AnnouncementName("web", ip.String(), node, ironlbv1alpha1.ProtocolL2)},
			Spec:       ironlbv1alpha1.AnnouncementSpec{Service: "web", IP: ip.String(), Node: node, Protocol: ironlbv1alpha1.ProtocolL2},
		}
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(svc, leftBy("dead"), leftBy("alive")).Build()
	rec := events.NewFakeRecorder(16)
	w := newWriter(logr.Discard(), c, rec, "n1")
	key := types.NamespacedName{Namespace: "ns", Name: "web"}
	mine := func(ifaces ...string) []announcement {
		return []announcement{{service: key, ip: ip, protocol: ironlbv1alpha1.ProtocolL2, interfaces: ifaces}}
	}
	owned := []ownedIP{{ip: ip, services: []types.NamespacedName{key}, protocol: ironlbv1alpha1.ProtocolL2}}
	alive := map[string]bool{"n1": true, "alive": true}
	list := func() map[string]ironlbv1alpha1.Announcement {
		t.Helper()
		var l ironlbv1alpha1.AnnouncementList
		if err := c.List(ctx, &l); err != nil {
			t.Fatal(err)
		}
		out := map[string]ironlbv1alpha1.Announcement{}
		for _, a := range l.Items {
			out[a.Spec.Node] = a
		}
		return out
	}

	w.publish(mine("eth0"), owned, alive)
	if err := w.write(ctx); err != nil {
		t.Fatal(err)
	}
	got := list()
	a, ok := got["n1"]
	if !ok {
		t.Fatalf("no Announcement of n1: %v", got)
	}
	if a.Labels[ironlbv1alpha1.LabelNode] != "n1" || a.Labels[ironlbv1alpha1.LabelService] != "web" || a.Labels[ironlbv1alpha1.LabelProtocol] != "L2" ||
		len(a.OwnerReferences) != 1 || a.OwnerReferences[0].UID != "svc-uid" || strings.Join(a.Spec.Interfaces, ",") != "eth0" {
		t.Errorf("Announcement %+v", a)
	}
	if _, ok := got["dead"]; ok {
		t.Error("a dead node's Announcement for an IP this node owns is still there")
	}
	if _, ok := got["alive"]; !ok {
		t.Error("a live node's Announcement was removed")
	}

	w.publish(mine("eth1"), owned, alive)
	if err := w.write(ctx); err != nil {
		t.Fatal(err)
	}
	if a := list()["n1"]; strings.Join(a.Spec.Interfaces, ",") != "eth1" {
		t.Errorf("interfaces %v after the change, want eth1", a.Spec.Interfaces)
	}
	var evs []string
	for len(rec.Events) > 0 {
		evs = append(evs, <-rec.Events)
	}
	if len(evs) != 1 || !strings.HasPrefix(evs[0], "Normal Announcing 192.0.2.1 announced by node n1 on eth0 (ARP)") {
		t.Errorf("events %q, want one Announcing", evs)
	}

	w.publish(nil, nil, alive)
	if err := w.write(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := list()["n1"]; ok {
		t.Error("n1's Announcement outlived its announcement")
	}
}

// TestWriteSessions: the node's entry in a BGPPeer's status says what the
// session does; a session that comes up is a Normal Event, one that goes
// down a Warning (once), one that never came up a Warning only when its
// message reports a failure; a peer the node no longer keeps loses the
// entry.
func TestWriteSessions(t *testing.T) {
	scheme, err := kube.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	peers := []client.Object{}
	for _, n := range []string{"up", "new", "broken"} {
		peers = append(peers, &ironlbv1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(peers...).WithStatusSubresource(peers...).Build()
	rec := events.NewFakeRecorder(16)
	w := newWriter(logr.Discard(), c, rec, "n1")
	write := func(s ...session) []string {
		t.Helper()
		w.sessions.publish(s)
		if err := w.sessions.write(ctx); err != nil {
			t.Fatal(err)
		}
		var evs []string
		for len(rec.Events) > 0 {
			evs = append(evs, <-rec.Events)
		}
		return evs
	}
	status := func(name string) []ironlbv1alpha1.BGPSessionStatus {
		t.Helper()
		var p ironlbv1alpha1.BGPPeer
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &p); err != nil {
			t.Fatal(err)
		}
		return p.Status.Nodes
	}

	evs := write(session{peer: "up", state: "Established", prefixes: 2},
		session{peer: "new", state: "Active", message: "not established with 192.0.2.1 (AS 1, ours AS 2)"},
		session{peer: "broken", state: "Idle", message: "passwordSecretRef: no key", failing: true})
	if st := status("up"); len(st) != 1 || st[0].Node != "n1" || st[0].State != "Established" || st[0].Prefixes != 2 {
		t.Errorf("up's status %+v", st)
	}
	if st := status("broken"); len(st) != 1 || st[0].Message != "passwordSecretRef: no key" {
		t.Errorf("broken's status %+v", st)
	}
	want := []string{"Normal SessionEstablished", "Warning SessionNotEstablished"}
	if len(evs) != len(want) || !strings.HasPrefix(evs[0], want[0]) || !strings.HasPrefix(evs[1], want[1]) || !strings.Contains(evs[1], "passwordSecretRef") {
		t.Errorf("events %q, want %q (nothing for a session on its way up)", evs, want)
	}

	down := session{peer: "up", state: "Active", message: "not established with 192.0.2.1 (AS 1, ours AS 2)"}
	if evs := write(down); len(evs) != 1 || !strings.HasPrefix(evs[0], "Warning SessionDown") {
		t.Errorf("events %q, want one SessionDown", evs)
	}
	if st := status("new"); len(st) != 0 {
		t.Errorf("a peer the node no longer keeps still has its entry: %+v", st)
	}
	down.message += ": the peer does not answer"
	if evs := write(down); len(evs) != 0 {
		t.Errorf("events %q, want none (already warned)", evs)
	}
}

// TestSYNCookieEvents: a port whose SYNs the node starts answering with
// SYN cookies gets one Warning Event on its Service, however many looks
// see it on, and a Normal one when they stop; a second flood within
// warnEvery stays quiet (and so does its end).
func TestSYNCookieEvents(t *testing.T) {
	scheme, err := kube.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(svc, node).Build()
	rec := events.NewFakeRecorder(16)
	w := newWriter(logr.Discard(), c, rec, "n1")
	port := dataplane.Key{VIP: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: dataplane.TCP}
	on := map[dataplane.Key]string{}
	unusable := false
	w.setCookies(func() (map[dataplane.Key]string, bool) { return on, unusable })
	look := func() []string {
		w.eventCookies(t.Context())
		var got []string
		for len(rec.Events) > 0 {
			got = append(got, <-rec.Events)
		}
		return got
	}
	if got := look(); len(got) != 0 {
		t.Fatalf("events %q before any flood", got)
	}
	on[port] = "ns/web"
	got := append(look(), look()...)
	if len(got) != 1 || !strings.HasPrefix(got[0], "Warning SYNCookies node n1 answers SYNs to 192.0.2.1:80/TCP") {
		t.Fatalf("events %q, want one SYNCookies Warning", got)
	}
	delete(on, port)
	if got := look(); len(got) != 1 || !strings.HasPrefix(got[0], "Normal SYNCookiesOff") {
		t.Fatalf("events %q, want one SYNCookiesOff", got)
	}
	on[port] = "ns/web"
	got = look()
	delete(on, port)
	if got = append(got, look()...); len(got) != 0 {
		t.Fatalf("events %q for a second flood within warnEvery, want none", got)
	}
	// A driver without metadata room: one Warning on the Node.
	unusable = true
	if got := append(look(), look()...); len(got) != 1 || !strings.HasPrefix(got[0], "Warning SYNCookiesUnsupported node n1") {
		t.Fatalf("events %q, want one SYNCookiesUnsupported", got)
	}
}
