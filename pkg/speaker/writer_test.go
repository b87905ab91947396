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
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/ironlb/ironlb/internal/kube"
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
