// Package config turns Kubernetes objects into the plain structs of the pure
// allocator (pkg/ipam), and holds the helpers the controller and the speaker
// share to read them (label selectors, pool selection, annotations). It is
// the only bridge between the two worlds for the allocator, which never sees
// an API type.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	netutils "k8s.io/utils/net"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/ipam"
)

// IsOurs reports whether ironlb should give the Service an IP: it is of type
// LoadBalancer and of our class, or of no class when defaultClass is on.
func IsOurs(svc *corev1.Service, defaultClass bool) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil {
		return defaultClass
	}
	return *svc.Spec.LoadBalancerClass == ironlbv1alpha1.LoadBalancerClass
}

// Pool converts an IPPool. Entries that do not parse are returned as an error
// that lists them all, together with the pool made of the entries that do, so
// a pool with one bad entry keeps serving the Services that hold its other
// addresses.
func Pool(p *ironlbv1alpha1.IPPool) (ipam.Pool, error) {
	out := ipam.Pool{
		Name:          p.Name,
		AutoAssign:    p.Spec.AutoAssign == nil || *p.Spec.AutoAssign,
		AvoidBuggyIPs: p.Spec.AvoidBuggyIPs,
		Deleting:      p.DeletionTimestamp != nil,
	}
	var errs []error
	for i, a := range p.Spec.Addresses {
		r, err := ipam.ParseRange(string(a))
		if err != nil {
			errs = append(errs, fmt.Errorf("spec.addresses[%d]: %w", i, err))
			continue
		}
		out.Addresses = append(out.Addresses, r)
	}
	if at := p.Spec.AllocateTo; at != nil {
		if at.Priority != nil {
			out.Priority, out.HasPriority = *at.Priority, true
		}
		out.Namespaces = at.Namespaces
		var err error
		if out.NamespaceSelector, err = matcher(at.NamespaceSelector); err != nil {
			errs = append(errs, fmt.Errorf("spec.allocateTo.namespaceSelector: %w", err))
			out.NamespaceSelector = func(map[string]string) bool { return false }
		}
		if out.ServiceSelector, err = matcher(at.ServiceSelector); err != nil {
			errs = append(errs, fmt.Errorf("spec.allocateTo.serviceSelector: %w", err))
			out.ServiceSelector = func(map[string]string) bool { return false }
		}
	}
	return out, errors.Join(errs...)
}

// matcher turns a label selector into an ipam.Matcher; nil stays nil (select
// everything).
func matcher(sel *metav1.LabelSelector) (ipam.Matcher, error) {
	if sel == nil {
		return nil, nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, err
	}
	return func(l map[string]string) bool { return s.Matches(labels.Set(l)) }, nil
}

// Service converts a LoadBalancer Service and the labels of its namespace
// into an allocation request. Annotations that do not parse are an error
// whose text says which.
func Service(svc *corev1.Service, nsLabels map[string]string) (ipam.Service, error) {
	out := ipam.Service{
		Key:             svc.Namespace + "/" + svc.Name,
		Namespace:       svc.Namespace,
		NamespaceLabels: nsLabels,
		Labels:          svc.Labels,
		Pool:            svc.Annotations[ironlbv1alpha1.AnnotationPool],
		SharingKey:      svc.Annotations[ironlbv1alpha1.AnnotationSharingKey],
	}
	for _, f := range svc.Spec.IPFamilies {
		switch f {
		case corev1.IPv4Protocol:
			out.Families = append(out.Families, ipam.IPv4)
		case corev1.IPv6Protocol:
			out.Families = append(out.Families, ipam.IPv6)
		}
	}
	if p := svc.Spec.IPFamilyPolicy; p != nil {
		switch *p {
		case corev1.IPFamilyPolicyPreferDualStack:
			out.Policy = ipam.PreferDualStack
		case corev1.IPFamilyPolicyRequireDualStack:
			out.Policy = ipam.RequireDualStack
		}
	}
	requested := svc.Annotations[ironlbv1alpha1.AnnotationIPs]
	if requested == "" {
		requested = svc.Spec.LoadBalancerIP // deprecated, still honoured
	}
	for _, s := range strings.Split(requested, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return out, fmt.Errorf("annotation %s: %q is not an IP address", ironlbv1alpha1.AnnotationIPs, s)
		}
		out.RequestedIPs = append(out.RequestedIPs, ip.Unmap())
	}
	if _, err := NewFlowsPerSource(svc); err != nil {
		return out, err
	}
	for _, p := range svc.Spec.Ports {
		out.Ports = append(out.Ports, ipam.Port{Protocol: string(p.Protocol), Port: p.Port})
	}
	if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		// Services on Local may share only with the same pods behind them.
		keys := make([]string, 0, len(svc.Spec.Selector))
		for k, v := range svc.Spec.Selector {
			keys = append(keys, k+"="+v)
		}
		slices.Sort(keys)
		out.BackendKey = "local:" + strings.Join(keys, ",")
	}
	return out, nil
}

// StatusIPs returns the IPs in a Service's status.loadBalancer.ingress.
func StatusIPs(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if ip, err := netip.ParseAddr(in.IP); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// Ingress returns the status.loadBalancer.ingress entries for addresses.
func Ingress(addrs []ipam.Address) []corev1.LoadBalancerIngress {
	out := make([]corev1.LoadBalancerIngress, len(addrs))
	vip := corev1.LoadBalancerIPModeVIP
	for i, a := range addrs {
		out[i] = corev1.LoadBalancerIngress{IP: a.IP.String(), IPMode: &vip}
	}
	return out
}

// SourceRanges parses a Service's loadBalancerSourceRanges as kube-proxy
// does: spaces trimmed, IPv4 octets with leading zeros read as decimal,
// host bits cleared. An entry that is no CIDR is ignored, as kube-proxy
// ignores it, and returned in bad so that it can be reported.
func SourceRanges(in []string) (ranges []netip.Prefix, bad []string) {
	for _, raw := range in {
		s := strings.TrimSpace(raw)
		if s == "" {
			continue
		}
		_, n, err := netutils.ParseCIDRSloppy(s)
		if err != nil {
			bad = append(bad, raw)
			continue
		}
		ip, _ := netip.AddrFromSlice(n.IP)
		bits, _ := n.Mask.Size()
		ranges = append(ranges, netip.PrefixFrom(ip.Unmap(), bits).Masked())
	}
	return ranges, bad
}

// RangesOfFamily keeps the source ranges of one family, as kube-proxy does.
// A zero-length prefix (0.0.0.0/0, ::/0) means open, returned as no
// ranges; and, as for kube-proxy, a family without ranges is open, even
// when the list names the other family.
func RangesOfFamily(ranges []netip.Prefix, v4 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range ranges {
		if r.Addr().Is4() != v4 {
			continue
		}
		if r.Bits() == 0 {
			return nil
		}
		out = append(out, r)
	}
	return out
}

// MaxNewFlowsPerSource bounds the per-source limit's annotation.
const MaxNewFlowsPerSource = 1_000_000_000

// NewFlowsPerSource reads the ironlb.dev/new-flows-per-source annotation:
// 0 (no limit) when absent, else a whole number of new flows a second
// from 1 to MaxNewFlowsPerSource.
func NewFlowsPerSource(svc *corev1.Service) (uint32, error) {
	v, ok := svc.Annotations[ironlbv1alpha1.AnnotationNewFlowsPerSource]
	if !ok {
		return 0, nil
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
	if err != nil || n == 0 || n > MaxNewFlowsPerSource {
		return 0, fmt.Errorf("annotation %s: %q is not a whole number of new flows a second from 1 to %d",
			ironlbv1alpha1.AnnotationNewFlowsPerSource, v, MaxNewFlowsPerSource)
	}
	return uint32(n), nil
}
