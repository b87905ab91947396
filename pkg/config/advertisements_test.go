package config

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
)

func pool(name string, addrs ...string) ironlbv1alpha1.IPPool {
	p := ironlbv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pool": name}}}
	for _, a := range addrs {
		p.Spec.Addresses = append(p.Spec.Addresses, ironlbv1alpha1.AddressRange(a))
	}
	return p
}

func bgpAdv(name string, mutate func(*ironlbv1alpha1.BGPAdvertisementSpec)) ironlbv1alpha1.BGPAdvertisement {
	a := ironlbv1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 3}}
	if mutate != nil {
		mutate(&a.Spec)
	}
	return a
}

func cond(cs []metav1.Condition, t string) metav1.Condition {
	for _, c := range cs {
		if c.Type == t {
			return c
		}
	}
	return metav1.Condition{}
}

func TestAdvertisementConditions(t *testing.T) {
	i32 := func(v int32) *int32 { return &v }
	i64 := func(v int64) *int64 { return &v }
	nodes := []corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "r1", Labels: map[string]string{"rack": "1"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "r2", Labels: map[string]string{"rack": "2"}}},
	}
	w := AdvertisementWorld{
		Pools: []ironlbv1alpha1.IPPool{pool("a", "192.0.2.0/26"), pool("b", "198.51.100.10-198.51.100.20")},
		Peers: []ironlbv1alpha1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "tor"}}, {ObjectMeta: metav1.ObjectMeta{Name: "core"}}},
		Nodes: nodes,
		L2: []ironlbv1alpha1.L2Advertisement{
			{ObjectMeta: metav1.ObjectMeta{Name: "ok"}, Spec: ironlbv1alpha1.L2AdvertisementSpec{PoolSelection: ironlbv1alpha1.PoolSelection{IPPools: []string{"a"}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "missing"}, Spec: ironlbv1alpha1.L2AdvertisementSpec{PoolSelection: ironlbv1alpha1.PoolSelection{IPPools: []string{"nope"}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "some-missing"}, Spec: ironlbv1alpha1.L2AdvertisementSpec{PoolSelection: ironlbv1alpha1.PoolSelection{IPPools: []string{"a", "nope"}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "badsel"}, Spec: ironlbv1alpha1.L2AdvertisementSpec{NodeSelector: &metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Bogus"}}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "nomatch"}, Spec: ironlbv1alpha1.L2AdvertisementSpec{PoolSelection: ironlbv1alpha1.PoolSelection{
				IPPoolSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pool": "zzz"}}}}},
		},
		BGP: []ironlbv1alpha1.BGPAdvertisement{
			bgpAdv("host-routes", func(s *ironlbv1alpha1.BGPAdvertisementSpec) { s.IPPools = []string{"a"} }),
			bgpAdv("agg-inside", func(s *ironlbv1alpha1.BGPAdvertisementSpec) {
				s.IPPools = []string{"a"}
				s.AggregationLength = i32(26)
				s.Peers = []string{"core"}
			}),
			bgpAdv("agg-too-wide", func(s *ironlbv1alpha1.BGPAdvertisementSpec) { s.IPPools = []string{"a"}; s.AggregationLength = i32(24) }),
			bgpAdv("range-unaligned", func(s *ironlbv1alpha1.BGPAdvertisementSpec) { s.IPPools = []string{"b"}; s.AggregationLength = i32(30) }),
			bgpAdv("no-peer", func(s *ironlbv1alpha1.BGPAdvertisementSpec) { s.IPPools = []string{"a"}; s.Peers = []string{"ghost"} }),
			// Same prefixes of b to tor from r1 with other communities.
			bgpAdv("rack1-x", func(s *ironlbv1alpha1.BGPAdvertisementSpec) {
				s.IPPools = []string{"b"}
				s.Peers = []string{"tor"}
				s.Communities = []ironlbv1alpha1.Community{"65000:1"}
				s.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "1"}}
			}),
			bgpAdv("rack1-y", func(s *ironlbv1alpha1.BGPAdvertisementSpec) {
				s.IPPools = []string{"b"}
				s.Communities = []ironlbv1alpha1.Community{"65000:2"}
				s.LocalPref = i64(200)
				s.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "1"}}
			}),
			// Per-rack communities on disjoint nodes: no conflict.
			bgpAdv("rack2", func(s *ironlbv1alpha1.BGPAdvertisementSpec) {
				s.IPPools = []string{"b"}
				s.Communities = []ironlbv1alpha1.Community{"65000:3"}
				s.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "2"}}
			}),
		},
	}
	l2, bgp := AdvertisementConditions(w)
	for name, want := range map[string]string{"ok": ReasonAccepted, "missing": ReasonPoolNotFound, "some-missing": ReasonAccepted,
		"badsel": ReasonInvalidSelector, "nomatch": ReasonPoolNotFound} {
		if c := cond(l2[name], ConditionAccepted); c.Reason != want || (c.Status == metav1.ConditionTrue) != (want == ReasonAccepted) {
			t.Errorf("L2Advertisement %s: Accepted %s/%s (%s), want %s", name, c.Status, c.Reason, c.Message, want)
		}
	}
	if c := cond(l2["some-missing"], ConditionAccepted); !strings.Contains(c.Message, "nope") {
		t.Errorf("a partly missing pool is not named: %q", c.Message)
	}
	for name, want := range map[string]string{"host-routes": ReasonAccepted, "agg-inside": ReasonAccepted,
		"agg-too-wide": ReasonAggregationWiderThanPool, "range-unaligned": ReasonAggregationWiderThanPool,
		"no-peer": ReasonPeerNotFound, "rack1-x": ReasonAccepted} {
		c := cond(bgp[name], ConditionAccepted)
		if c.Reason != want || c.ObservedGeneration != 3 {
			t.Errorf("BGPAdvertisement %s: Accepted %s/%s (%s), want %s", name, c.Status, c.Reason, c.Message, want)
		}
	}
	for name, want := range map[string]bool{"rack1-x": true, "rack1-y": true, "rack2": false, "host-routes": false, "agg-inside": false} {
		c := cond(bgp[name], ConditionConflict)
		if (c.Status == metav1.ConditionTrue) != want {
			t.Errorf("BGPAdvertisement %s: Conflict %s (%s), want %v", name, c.Status, c.Message, want)
		}
	}
	if c := cond(bgp["rack1-x"], ConditionConflict); !strings.Contains(c.Message, "rack1-y") || !strings.Contains(c.Message, "tor") {
		t.Errorf("the conflict does not name the other advertisement and the peer: %q", c.Message)
	}
}
