package config

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/ipam"
)

// Condition types and reasons of L2Advertisements and BGPAdvertisements.
const (
	// ConditionAccepted is True when the advertisement is in effect as
	// written.
	ConditionAccepted = "Accepted"
	// ConditionConflict is True when another BGPAdvertisement gives the
	// same prefix to the same peer from the same node with other
	// attributes: which attributes the peer gets is then not defined by
	// either.
	ConditionConflict = "Conflict"

	ReasonAccepted                 = "Accepted"
	ReasonInvalidSelector          = "InvalidSelector"
	ReasonPoolNotFound             = "PoolNotFound"
	ReasonPeerNotFound             = "PeerNotFound"
	ReasonAggregationWiderThanPool = "AggregationWiderThanPool"
	ReasonConflictingAttributes    = "ConflictingAttributes"
	ReasonNoConflict               = "NoConflict"
)

// AdvertisementWorld is what the advertisements' conditions depend on.
type AdvertisementWorld struct {
	Pools []ironlbv1alpha1.IPPool
	L2    []ironlbv1alpha1.L2Advertisement
	BGP   []ironlbv1alpha1.BGPAdvertisement
	Peers []ironlbv1alpha1.BGPPeer
	Nodes []corev1.Node
}

// AdvertisementConditions computes the conditions of every advertisement:
// l2 and bgp map names to conditions (without times; the caller sets
// them). Pure: no API calls.
func AdvertisementConditions(w AdvertisementWorld) (l2, bgp map[string][]metav1.Condition) {
	l2 = map[string][]metav1.Condition{}
	bgp = map[string][]metav1.Condition{}
	for i := range w.L2 {
		a := &w.L2[i]
		l2[a.Name] = []metav1.Condition{accepted(a.Generation, checkCommon(a.Spec.PoolSelection, a.Spec.NodeSelector, w.Pools))}
	}
	conflicts := bgpConflicts(w)
	for i := range w.BGP {
		a := &w.BGP[i]
		res := checkCommon(a.Spec.PoolSelection, a.Spec.NodeSelector, w.Pools)
		if res.reason == ReasonAccepted {
			res = checkBGP(a, w)
		}
		conflict := metav1.Condition{Type: ConditionConflict, Status: metav1.ConditionFalse, Reason: ReasonNoConflict,
			ObservedGeneration: a.Generation, Message: "no other BGPAdvertisement gives the same prefixes to the same peers with other attributes"}
		if c := conflicts[a.Name]; len(c) > 0 {
			conflict.Status, conflict.Reason = metav1.ConditionTrue, ReasonConflictingAttributes
			conflict.Message = strings.Join(c, "; ")
		}
		bgp[a.Name] = []metav1.Condition{accepted(a.Generation, res), conflict}
	}
	return l2, bgp
}

type result struct {
	reason  string
	message string
}

func accepted(gen int64, r result) metav1.Condition {
	c := metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionTrue, Reason: r.reason, Message: r.message, ObservedGeneration: gen}
	if r.reason != ReasonAccepted {
		c.Status = metav1.ConditionFalse
	}
	return c
}

// checkCommon checks what both kinds share: selectors that parse, and
// pools that exist.
func checkCommon(sel ironlbv1alpha1.PoolSelection, nodeSel *metav1.LabelSelector, pools []ironlbv1alpha1.IPPool) result {
	for what, s := range map[string]*metav1.LabelSelector{"ipPoolSelector": sel.IPPoolSelector, "nodeSelector": nodeSel} {
		if s == nil {
			continue
		}
		if _, err := metav1.LabelSelectorAsSelector(s); err != nil {
			return result{ReasonInvalidSelector, fmt.Sprintf("%s: %v", what, err)}
		}
	}
	selected := SelectedPools(sel, pools)
	var missing []string
	for _, name := range sel.IPPools {
		if !slices.ContainsFunc(pools, func(p ironlbv1alpha1.IPPool) bool { return p.Name == name }) {
			missing = append(missing, name)
		}
	}
	switch {
	case len(selected) == 0 && len(missing) > 0:
		return result{ReasonPoolNotFound, fmt.Sprintf("no IPPool named %s: nothing is advertised", strings.Join(missing, ", "))}
	case len(selected) == 0:
		return result{ReasonPoolNotFound, "no IPPool matches ipPoolSelector: nothing is advertised"}
	case len(missing) > 0:
		return result{ReasonAccepted, fmt.Sprintf("advertises pools %s; no IPPool named %s yet", names(selected), strings.Join(missing, ", "))}
	}
	return result{ReasonAccepted, "advertises pools " + names(selected)}
}

// checkBGP checks what only a BGPAdvertisement has: peers that exist, and
// aggregation lengths that stay inside the pools (a covering prefix that
// reaches outside the pool entry holding an IP is never announced).
func checkBGP(a *ironlbv1alpha1.BGPAdvertisement, w AdvertisementWorld) result {
	var missing []string
	for _, p := range a.Spec.Peers {
		if !slices.ContainsFunc(w.Peers, func(x ironlbv1alpha1.BGPPeer) bool { return x.Name == p }) {
			missing = append(missing, p)
		}
	}
	if len(a.Spec.Peers) > 0 && len(missing) == len(a.Spec.Peers) {
		return result{ReasonPeerNotFound, fmt.Sprintf("no BGPPeer named %s: nothing is advertised", strings.Join(missing, ", "))}
	}
	var wide []string
	for _, p := range SelectedPools(a.Spec.PoolSelection, w.Pools) {
		for _, addr := range p.Spec.Addresses {
			r, err := ipam.ParseRange(string(addr))
			if err != nil {
				continue
			}
			bits := r.First.BitLen()
			if r.First.Is4() && a.Spec.AggregationLength != nil {
				bits = int(*a.Spec.AggregationLength)
			}
			if r.First.Is6() && a.Spec.AggregationLengthV6 != nil {
				bits = int(*a.Spec.AggregationLengthV6)
			}
			if !aligned(r, bits) {
				wide = append(wide, fmt.Sprintf("/%d reaches outside %s of pool %s", bits, addr, p.Name))
			}
		}
	}
	if len(wide) > 0 {
		return result{ReasonAggregationWiderThanPool, "aggregation length wider than the pool: " + strings.Join(wide, "; ") +
			" (the IPs there are not advertised: the prefix would claim a neighbour's addresses)"}
	}
	res := result{ReasonAccepted, "advertises pools " + names(SelectedPools(a.Spec.PoolSelection, w.Pools))}
	if len(missing) > 0 {
		res.message += "; no BGPPeer named " + strings.Join(missing, ", ") + " yet"
	}
	return res
}

// aligned tells whether every IP of r, cut to bits, stays inside r.
func aligned(r ipam.Range, bits int) bool {
	first, err := r.First.Prefix(bits)
	if err != nil {
		return false
	}
	last, err := r.Last.Prefix(bits)
	if err != nil {
		return false
	}
	return first.Addr() == r.First && lastOf(last) == r.Last
}

func lastOf(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// bgpConflicts finds, for each BGPAdvertisement, the others that give the
// same prefixes (same pool, same aggregation length of a family the pool
// has) to a peer both name, from a node both select, with other
// attributes.
func bgpConflicts(w AdvertisementWorld) map[string][]string {
	out := map[string][]string{}
	advs := slices.Clone(w.BGP)
	slices.SortFunc(advs, func(a, b ironlbv1alpha1.BGPAdvertisement) int { return cmp.Compare(a.Name, b.Name) })
	for i := range advs {
		for j := i + 1; j < len(advs); j++ {
			a, b := &advs[i], &advs[j]
			if sameAttributes(a, b) {
				continue
			}
			pool := sharedPrefixPool(a, b, w.Pools)
			if pool == "" {
				continue
			}
			peer, ok := sharedPeer(a, b, w.Peers)
			if !ok {
				continue
			}
			node, ok := sharedNode(a, b, w.Nodes)
			if !ok {
				continue
			}
			msg := func(other string) string {
				return fmt.Sprintf("BGPAdvertisement %s gives the same prefixes of pool %s to peer %s from node %s with other communities or localPref", other, pool, peer, node)
			}
			out[a.Name] = append(out[a.Name], msg(b.Name))
			out[b.Name] = append(out[b.Name], msg(a.Name))
		}
	}
	return out
}

func sameAttributes(a, b *ironlbv1alpha1.BGPAdvertisement) bool {
	ca, cb := slices.Clone(a.Spec.Communities), slices.Clone(b.Spec.Communities)
	slices.Sort(ca)
	slices.Sort(cb)
	lp := func(p *int64) int64 {
		if p == nil {
			return -1
		}
		return *p
	}
	return slices.Equal(ca, cb) && lp(a.Spec.LocalPref) == lp(b.Spec.LocalPref)
}

// sharedPrefixPool returns a pool both select where they cut the same
// prefix: the same aggregation length for a family the pool holds.
func sharedPrefixPool(a, b *ironlbv1alpha1.BGPAdvertisement, pools []ironlbv1alpha1.IPPool) string {
	pa := SelectedPools(a.Spec.PoolSelection, pools)
	for _, p := range SelectedPools(b.Spec.PoolSelection, pools) {
		if !slices.ContainsFunc(pa, func(x *ironlbv1alpha1.IPPool) bool { return x.Name == p.Name }) {
			continue
		}
		v4, v6 := false, false
		for _, addr := range p.Spec.Addresses {
			if r, err := ipam.ParseRange(string(addr)); err == nil {
				v4, v6 = v4 || r.First.Is4(), v6 || r.First.Is6()
			}
		}
		if v4 && length(a.Spec.AggregationLength, 32) == length(b.Spec.AggregationLength, 32) ||
			v6 && length(a.Spec.AggregationLengthV6, 128) == length(b.Spec.AggregationLengthV6, 128) {
			return p.Name
		}
	}
	return ""
}

func length(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}

// sharedPeer returns a BGPPeer both advertisements send to (none named
// means all).
func sharedPeer(a, b *ironlbv1alpha1.BGPAdvertisement, peers []ironlbv1alpha1.BGPPeer) (string, bool) {
	for _, p := range peers {
		if (len(a.Spec.Peers) == 0 || slices.Contains(a.Spec.Peers, p.Name)) &&
			(len(b.Spec.Peers) == 0 || slices.Contains(b.Spec.Peers, p.Name)) {
			return p.Name, true
		}
	}
	return "", false
}

// sharedNode returns a node both advertisements select.
func sharedNode(a, b *ironlbv1alpha1.BGPAdvertisement, nodes []corev1.Node) (string, bool) {
	for i := range nodes {
		n := &nodes[i]
		if Selects(a.Spec.NodeSelector, n.Labels) && Selects(b.Spec.NodeSelector, n.Labels) {
			return n.Name, true
		}
	}
	return "", false
}

// SelectsPool tells whether an advertisement's pool selection admits the
// pool: by name, by label, or every pool when it names none.
func SelectsPool(sel ironlbv1alpha1.PoolSelection, pool *ironlbv1alpha1.IPPool) bool {
	return len(sel.IPPools) == 0 && sel.IPPoolSelector == nil ||
		slices.Contains(sel.IPPools, pool.Name) ||
		sel.IPPoolSelector != nil && Selects(sel.IPPoolSelector, pool.Labels)
}

// SelectedPools returns the pools a selection admits, by name.
func SelectedPools(sel ironlbv1alpha1.PoolSelection, pools []ironlbv1alpha1.IPPool) []*ironlbv1alpha1.IPPool {
	var out []*ironlbv1alpha1.IPPool
	for i := range pools {
		if SelectsPool(sel, &pools[i]) {
			out = append(out, &pools[i])
		}
	}
	slices.SortFunc(out, func(a, b *ironlbv1alpha1.IPPool) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Selects evaluates a label selector; nil selects everything and an
// invalid one nothing.
func Selects(sel *metav1.LabelSelector, set map[string]string) bool {
	m, err := matcher(sel)
	return err == nil && (m == nil || m(set))
}

func names(pools []*ironlbv1alpha1.IPPool) string {
	out := make([]string, len(pools))
	for i, p := range pools {
		out[i] = p.Name
	}
	return strings.Join(out, ", ")
}
