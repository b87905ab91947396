package controller

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
)

// TestReportSourceRanges: entries that are no CIDR (kept from an older API
// server, which the current one no longer lets anyone write) give one
// Warning Event per list, naming them; a corrected list gives none.
func TestReportSourceRanges(t *testing.T) {
	rec := events.NewFakeRecorder(10)
	r := &ServiceReconciler{state: &state{badRanges: map[types.UID]string{}}, recorder: rec}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", UID: "u1"},
		Spec: corev1.ServiceSpec{LoadBalancerSourceRanges: []string{"10.0.0.0/8", "10.0.0.0/33", "nope"}}}
	r.reportSourceRanges(svc)
	r.reportSourceRanges(svc) // the same list again: no second Event
	svc.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8"}
	r.reportSourceRanges(svc)
	close(rec.Events)
	var got []string
	for e := range rec.Events {
		got = append(got, e)
	}
	if len(got) != 1 || !strings.Contains(got[0], "Warning InvalidSourceRanges") || !strings.Contains(got[0], "10.0.0.0/33, nope") {
		t.Errorf("events %q, want one Warning InvalidSourceRanges naming 10.0.0.0/33 and nope", got)
	}
}
