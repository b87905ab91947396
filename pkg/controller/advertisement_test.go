package controller_test

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/config"
)

// TestAdvertisementConditions runs the controller against the API server:
// advertisements say whether they are in effect, follow the pools they
// name, and two BGPAdvertisements that give the same prefixes to the same
// peer with other attributes both say so, with a Warning Event.
func TestAdvertisementConditions(t *testing.T) {
	ctx := t.Context()
	startController(t, testOptions())
	agg := int32(24)
	objs := []client.Object{
		&ironlbv1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "adv-tor"}, Spec: ironlbv1alpha1.BGPPeerSpec{
			PeerAddress: "192.0.2.254", PeerASN: 64512, MyASN: 64513}},
		&ironlbv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "adv-pool"}, Spec: ironlbv1alpha1.IPPoolSpec{
			Addresses: []ironlbv1alpha1.AddressRange{"203.0.113.64/26"}}},
		&ironlbv1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "adv-l2-later"}, Spec: ironlbv1alpha1.L2AdvertisementSpec{
			PoolSelection: ironlbv1alpha1.PoolSelection{IPPools: []string{"adv-pool-later"}}}},
		&ironlbv1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "adv-wide"}, Spec: ironlbv1alpha1.BGPAdvertisementSpec{
			PoolSelection: ironlbv1alpha1.PoolSelection{IPPools: []string{"adv-pool"}}, AggregationLength: &agg}},
		&ironlbv1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "adv-one"}, Spec: ironlbv1alpha1.BGPAdvertisementSpec{
			PoolSelection: ironlbv1alpha1.PoolSelection{IPPools: []string{"adv-pool"}}, Communities: []ironlbv1alpha1.Community{"65000:1"}}},
		&ironlbv1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "adv-two"}, Spec: ironlbv1alpha1.BGPAdvertisementSpec{
			PoolSelection: ironlbv1alpha1.PoolSelection{IPPools: []string{"adv-pool"}}, Communities: []ironlbv1alpha1.Community{"65000:2"}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "adv-node"}},
	}
	for _, o := range objs {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.WithoutCancel(ctx), o) })
	}
	status := func(obj client.Object, typ string) *metav1.Condition {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return nil
		}
		switch o := obj.(type) {
		case *ironlbv1alpha1.L2Advertisement:
			return meta.FindStatusCondition(o.Status.Conditions, typ)
		case *ironlbv1alpha1.BGPAdvertisement:
			return meta.FindStatusCondition(o.Status.Conditions, typ)
		}
		return nil
	}
	expect := func(obj client.Object, typ string, st metav1.ConditionStatus, reason string) {
		t.Helper()
		eventually(t, fmt.Sprintf("%s %s=%s/%s", obj.GetName(), typ, st, reason), func() (bool, string) {
			c := status(obj, typ)
			if c == nil {
				return false, "no condition"
			}
			return c.Status == st && c.Reason == reason, string(c.Status) + "/" + c.Reason + ": " + c.Message
		})
	}
	l2 := objs[2].(*ironlbv1alpha1.L2Advertisement)
	expect(l2, config.ConditionAccepted, metav1.ConditionFalse, config.ReasonPoolNotFound)
	expect(objs[3], config.ConditionAccepted, metav1.ConditionFalse, config.ReasonAggregationWiderThanPool)
	expect(objs[4], config.ConditionConflict, metav1.ConditionTrue, config.ReasonConflictingAttributes)
	expect(objs[5], config.ConditionConflict, metav1.ConditionTrue, config.ReasonConflictingAttributes)
	expect(objs[4], config.ConditionAccepted, metav1.ConditionTrue, config.ReasonAccepted)

	// The pool it names appears: accepted.
	later := &ironlbv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "adv-pool-later"}, Spec: ironlbv1alpha1.IPPoolSpec{
		Addresses: []ironlbv1alpha1.AddressRange{"203.0.113.192/28"}}}
	if err := k8s.Create(ctx, later); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.WithoutCancel(ctx), later) })
	expect(l2, config.ConditionAccepted, metav1.ConditionTrue, config.ReasonAccepted)

	// One of the two takes the other's communities: no conflict.
	two := objs[5].(*ironlbv1alpha1.BGPAdvertisement)
	two.Spec.Communities = []ironlbv1alpha1.Community{"65000:1"}
	if err := k8s.Update(ctx, two); err != nil {
		t.Fatal(err)
	}
	expect(objs[4], config.ConditionConflict, metav1.ConditionFalse, config.ReasonNoConflict)

	eventually(t, "a Warning Event for the conflict", func() (bool, string) {
		var list eventsv1.EventList
		if err := k8s.List(ctx, &list); err != nil {
			return false, err.Error()
		}
		for _, e := range list.Items {
			if e.Regarding.Name == "adv-one" && e.Type == corev1.EventTypeWarning && e.Reason == config.ReasonConflictingAttributes {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(list.Items))
	})
}
