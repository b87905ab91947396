// Package convert turns MetalLB's configuration into ironlb's: its
// IPAddressPools, L2Advertisements, BGPAdvertisements, BGPPeers and
// Communities (metallb.io v1beta1/v1beta2) and the MetalLB annotations of
// Services. It is pure (YAML in, objects and a report out), so the CLI and
// its tests share it.
package convert

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsyaml "sigs.k8s.io/yaml"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
)

// Namespace is where converted password Secrets go: the speaker reads
// Secrets there only.
const Namespace = ironlbv1alpha1.SystemNamespace

// Result is what a conversion produced: ironlb objects to apply, and what
// could not be carried over (each a sentence naming the object and field).
type Result struct {
	Objects []client.Object
	Report  []string
}

func (r *Result) note(format string, args ...any) {
	r.Report = append(r.Report, fmt.Sprintf(format, args...))
}

// MetalLB converts the YAML documents of r. Objects that are neither
// MetalLB's nor Services are reported and skipped.
func MetalLB(in io.Reader) (*Result, error) {
	var docs []*unstructured.Unstructured
	dec := yaml.NewYAMLOrJSONDecoder(in, 4096)
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read YAML: %w", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if u.IsList() {
			l, err := u.ToList()
			if err != nil {
				return nil, err
			}
			for i := range l.Items {
				docs = append(docs, &l.Items[i])
			}
			continue
		}
		docs = append(docs, u)
	}
	res := &Result{}
	// Community aliases first: advertisements may name them.
	aliases := map[string]string{}
	for _, u := range docs {
		if isMetalLB(u) && u.GetKind() == "Community" {
			comms, _, _ := unstructured.NestedSlice(u.Object, "spec", "communities")
			for _, c := range comms {
				m, _ := c.(map[string]any)
				name, _ := m["name"].(string)
				value, _ := m["value"].(string)
				if name != "" && value != "" {
					aliases[name] = value
				}
			}
		}
	}
	// BFD profiles too: peers name them, and ironlb inlines them.
	bfd := map[string]*unstructured.Unstructured{}
	for _, u := range docs {
		if isMetalLB(u) && u.GetKind() == "BFDProfile" {
			bfd[u.GetName()] = u
		}
	}
	for _, u := range docs {
		switch {
		case isMetalLB(u):
			switch u.GetKind() {
			case "IPAddressPool":
				res.Objects = append(res.Objects, pool(u, res))
			case "L2Advertisement":
				res.Objects = append(res.Objects, l2(u, res))
			case "BGPAdvertisement":
				res.Objects = append(res.Objects, bgpAdv(u, aliases, res))
			case "BGPPeer":
				res.Objects = append(res.Objects, peer(u, bfd, res)...)
			case "Community", "BFDProfile":
				// Resolved into the advertisements and the peers.
			default:
				res.note("%s %s: MetalLB kind without an ironlb counterpart; skipped", u.GetKind(), u.GetName())
			}
		case u.GetAPIVersion() == "v1" && u.GetKind() == "Service":
			if s := service(u, res); s != nil {
				res.Objects = append(res.Objects, s)
			}
		default:
			res.note("%s %s (%s): not MetalLB's; skipped", u.GetKind(), u.GetName(), u.GetAPIVersion())
		}
	}
	return res, nil
}

func isMetalLB(u *unstructured.Unstructured) bool {
	return strings.HasPrefix(u.GetAPIVersion(), "metallb.io/")
}

func meta(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name} }

func strs(u *unstructured.Unstructured, fields ...string) []string {
	v, _, _ := unstructured.NestedStringSlice(u.Object, fields...)
	return v
}

// selectors reads a list of label selectors; ironlb takes one, so more
// than one is reported and only the first is kept.
func selectors(u *unstructured.Unstructured, res *Result, what string, fields ...string) *metav1.LabelSelector {
	raw, ok, _ := unstructured.NestedSlice(u.Object, fields...)
	if !ok || len(raw) == 0 {
		return nil
	}
	var out []metav1.LabelSelector
	for _, r := range raw {
		m, ok := r.(map[string]any)
		if !ok {
			continue
		}
		var s metav1.LabelSelector
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &s); err == nil {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil
	}
	if len(out) > 1 {
		res.note("%s %s: %d %s (any of them); ironlb takes one selector, the first was kept: merge them by hand if they differ",
			u.GetKind(), u.GetName(), len(out), what)
	}
	return &out[0]
}

func pool(u *unstructured.Unstructured, res *Result) client.Object {
	p := &ironlbv1alpha1.IPPool{TypeMeta: typeMeta("IPPool"), ObjectMeta: meta(u.GetName())}
	for _, a := range strs(u, "spec", "addresses") {
		p.Spec.Addresses = append(p.Spec.Addresses, ironlbv1alpha1.AddressRange(strings.ReplaceAll(a, " ", "")))
	}
	if v, ok, _ := unstructured.NestedBool(u.Object, "spec", "autoAssign"); ok && !v {
		p.Spec.AutoAssign = new(false)
	}
	if v, ok, _ := unstructured.NestedBool(u.Object, "spec", "avoidBuggyIPs"); ok {
		p.Spec.AvoidBuggyIPs = v
	}
	if _, ok, _ := unstructured.NestedMap(u.Object, "spec", "serviceAllocation"); ok {
		at := &ironlbv1alpha1.AllocateTo{}
		if v, ok, _ := num(u, "spec", "serviceAllocation", "priority"); ok {
			at.Priority = new(int32(v))
		}
		at.Namespaces = strs(u, "spec", "serviceAllocation", "namespaces")
		at.NamespaceSelector = selectors(u, res, "namespaceSelectors", "spec", "serviceAllocation", "namespaceSelectors")
		at.ServiceSelector = selectors(u, res, "serviceSelectors", "spec", "serviceAllocation", "serviceSelectors")
		p.Spec.AllocateTo = at
	}
	return p
}

func poolSelection(u *unstructured.Unstructured, res *Result) ironlbv1alpha1.PoolSelection {
	sel := ironlbv1alpha1.PoolSelection{IPPools: strs(u, "spec", "ipAddressPools")}
	ps := selectors(u, res, "ipAddressPoolSelectors", "spec", "ipAddressPoolSelectors")
	if ps != nil && len(sel.IPPools) > 0 {
		res.note("%s %s: both ipAddressPools and ipAddressPoolSelectors (either matches in MetalLB); ironlb takes one: the names were kept, label the pools or split the advertisement",
			u.GetKind(), u.GetName())
		ps = nil
	}
	sel.IPPoolSelector = ps
	return sel
}

func l2(u *unstructured.Unstructured, res *Result) client.Object {
	a := &ironlbv1alpha1.L2Advertisement{TypeMeta: typeMeta("L2Advertisement"), ObjectMeta: meta(u.GetName())}
	a.Spec.PoolSelection = poolSelection(u, res)
	a.Spec.NodeSelector = selectors(u, res, "nodeSelectors", "spec", "nodeSelectors")
	a.Spec.Interfaces = strs(u, "spec", "interfaces")
	return a
}

func bgpAdv(u *unstructured.Unstructured, aliases map[string]string, res *Result) client.Object {
	a := &ironlbv1alpha1.BGPAdvertisement{TypeMeta: typeMeta("BGPAdvertisement"), ObjectMeta: meta(u.GetName())}
	a.Spec.PoolSelection = poolSelection(u, res)
	a.Spec.NodeSelector = selectors(u, res, "nodeSelectors", "spec", "nodeSelectors")
	a.Spec.Peers = strs(u, "spec", "peers")
	if v, ok, _ := num(u, "spec", "aggregationLength"); ok {
		a.Spec.AggregationLength = new(int32(v))
	}
	if v, ok, _ := num(u, "spec", "aggregationLengthV6"); ok {
		a.Spec.AggregationLengthV6 = new(int32(v))
	}
	if v, ok, _ := num(u, "spec", "localPref"); ok {
		a.Spec.LocalPref = new(v)
	}
	for _, c := range strs(u, "spec", "communities") {
		if v, ok := aliases[c]; ok {
			c = v
		}
		switch {
		case strings.HasPrefix(c, "large:"):
			a.Spec.Communities = append(a.Spec.Communities, ironlbv1alpha1.Community(c))
		case strings.Count(c, ":") == 1 || ironlbv1alpha1.WellKnownCommunities[c] != "":
			a.Spec.Communities = append(a.Spec.Communities, ironlbv1alpha1.Community(c))
		default:
			res.note("BGPAdvertisement %s: community %q is neither ASN:VALUE, large:G:L1:L2, a well-known name nor a Community alias in the input; left out",
				u.GetName(), c)
		}
	}
	return a
}

func peer(u *unstructured.Unstructured, profiles map[string]*unstructured.Unstructured, res *Result) []client.Object {
	p := &ironlbv1alpha1.BGPPeer{TypeMeta: typeMeta("BGPPeer"), ObjectMeta: meta(u.GetName())}
	s := &p.Spec
	s.PeerAddress, _, _ = unstructured.NestedString(u.Object, "spec", "peerAddress")
	s.PeerASN, _, _ = num(u, "spec", "peerASN")
	s.MyASN, _, _ = num(u, "spec", "myASN")
	if v, ok, _ := num(u, "spec", "peerPort"); ok {
		s.PeerPort = int32(v)
	}
	s.SourceAddress, _, _ = unstructured.NestedString(u.Object, "spec", "sourceAddress")
	s.EBGPMultiHop, _, _ = unstructured.NestedBool(u.Object, "spec", "ebgpMultiHop")
	for field, dst := range map[string]**metav1.Duration{"holdTime": &s.HoldTime, "keepaliveTime": &s.KeepaliveTime} {
		if v, ok, _ := unstructured.NestedString(u.Object, "spec", field); ok {
			var d metav1.Duration
			if err := d.UnmarshalJSON([]byte(`"` + v + `"`)); err == nil {
				*dst = &d
			} else {
				res.note("BGPPeer %s: %s %q is not a duration; left out", u.GetName(), field, v)
			}
		}
	}
	s.NodeSelector = selectors(u, res, "nodeSelectors", "spec", "nodeSelectors")
	out := []client.Object{p}
	if pw, ok, _ := unstructured.NestedString(u.Object, "spec", "password"); ok && pw != "" {
		name := u.GetName() + "-bgp-password"
		out = append(out, &corev1.Secret{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name},
			StringData: map[string]string{"password": pw},
		})
		s.PasswordSecretRef = &ironlbv1alpha1.SecretKeyRef{Namespace: Namespace, Name: name, Key: "password"}
		res.note("BGPPeer %s: its password was inline; it now lives in the Secret %s/%s (keep that file private)", u.GetName(), Namespace, name)
	}
	if ref, ok, _ := unstructured.NestedMap(u.Object, "spec", "passwordSecret"); ok {
		name, _ := ref["name"].(string)
		ns, _ := ref["namespace"].(string)
		if ns == "" {
			ns = "metallb-system"
		}
		// MetalLB's Secret is of type kubernetes.io/basic-auth, key "password".
		s.PasswordSecretRef = &ironlbv1alpha1.SecretKeyRef{Namespace: Namespace, Name: name, Key: "password"}
		if ns != Namespace {
			res.note("BGPPeer %s: copy the Secret %s/%s to %s (the speaker reads Secrets in its own namespace only)", u.GetName(), ns, name, Namespace)
		}
	}
	if name, ok, _ := unstructured.NestedString(u.Object, "spec", "bfdProfile"); ok && name != "" {
		if prof := profiles[name]; prof != nil {
			s.BFD = bfdSpec(prof, u.GetName(), s.EBGPMultiHop, res)
		} else {
			res.note("BGPPeer %s: its BFDProfile %s is not in the input; the peer runs without BFD", u.GetName(), name)
		}
	}
	if gr, _, _ := unstructured.NestedBool(u.Object, "spec", "enableGracefulRestart"); gr {
		// MetalLB's FRR mode offers a restart time of 120 s.
		s.GracefulRestart = &ironlbv1alpha1.GracefulRestartSpec{RestartTime: &metav1.Duration{Duration: 120 * time.Second}}
	}
	spec, _ := u.Object["spec"].(map[string]any)
	// disableMP (one session per family) is ironlb's default; MetalLB's
	// FRR mode otherwise carries both families: see addressFamilies.
	s.RouterID, _, _ = unstructured.NestedString(u.Object, "spec", "routerID")
	if vrf, _, _ := unstructured.NestedString(u.Object, "spec", "vrf"); vrf != "" {
		s.VRF = vrf
		if s.BFD != nil {
			s.BFD = nil
			res.note("BGPPeer %s: BFD does not run in a VRF in ironlb yet; the session in VRF %s runs without it", u.GetName(), vrf)
		}
	}
	for _, f := range []string{"connectTime", "dynamicASN", "interface"} {
		if v, ok := spec[f]; ok && v != nil && v != false && v != "" {
			res.note("BGPPeer %s: %s is not supported by ironlb; left out", u.GetName(), f)
		}
	}
	return out
}

// bfdSpec inlines a MetalLB BFDProfile (intervals in milliseconds) into a
// peer's spec.bfd.
func bfdSpec(prof *unstructured.Unstructured, peer string, multihop bool, res *Result) *ironlbv1alpha1.BFDSpec {
	out := &ironlbv1alpha1.BFDSpec{}
	ms := func(field string) *metav1.Duration {
		v, ok, _ := num(prof, "spec", field)
		if !ok {
			return nil
		}
		return &metav1.Duration{Duration: time.Duration(v) * time.Millisecond}
	}
	out.ReceiveInterval, out.TransmitInterval = ms("receiveInterval"), ms("transmitInterval")
	if v, ok, _ := num(prof, "spec", "detectMultiplier"); ok {
		out.DetectMultiplier = int32(min(max(v, 0), 255))
	}
	if v, ok, _ := num(prof, "spec", "minimumTtl"); ok {
		if multihop {
			out.MinimumTTL = new(int32(min(max(v, 1), 254)))
		} else {
			res.note("BGPPeer %s: BFDProfile %s's minimumTtl applies to multihop sessions only (a single-hop session requires TTL 255); left out", peer, prof.GetName())
		}
	}
	if v, _, _ := unstructured.NestedBool(prof.Object, "spec", "echoMode"); v {
		res.note("BGPPeer %s: BFDProfile %s's echoMode is not supported (ironlb runs BFD in asynchronous mode); left out", peer, prof.GetName())
	}
	if v, _, _ := unstructured.NestedBool(prof.Object, "spec", "passiveMode"); v {
		res.note("BGPPeer %s: BFDProfile %s's passiveMode is not supported (ironlb's speakers always send first); left out", peer, prof.GetName())
	}
	return out
}

// The Service annotations MetalLB reads, under both of its prefixes.
var annotations = map[string]string{
	"address-pool":    ironlbv1alpha1.AnnotationPool,
	"loadBalancerIPs": ironlbv1alpha1.AnnotationIPs,
	"allow-shared-ip": ironlbv1alpha1.AnnotationSharingKey,
}

func service(u *unstructured.Unstructured, res *Result) client.Object {
	ann := u.GetAnnotations()
	var svc corev1.Service
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &svc); err != nil {
		res.note("Service %s/%s: %v; skipped", u.GetNamespace(), u.GetName(), err)
		return nil
	}
	changed := false
	for k, v := range ann {
		for _, prefix := range []string{"metallb.universe.tf/", "metallb.io/"} {
			name, ok := strings.CutPrefix(k, prefix)
			if !ok {
				continue
			}
			delete(svc.Annotations, k)
			changed = true
			if to, ok := annotations[name]; ok {
				svc.Annotations[to] = v
			} else {
				res.note("Service %s/%s: annotation %s has no ironlb counterpart; dropped", u.GetNamespace(), u.GetName(), k)
			}
		}
	}
	if svc.Spec.LoadBalancerClass != nil && strings.Contains(*svc.Spec.LoadBalancerClass, "metallb") {
		res.note("Service %s/%s: loadBalancerClass %s is immutable; recreate the Service with ironlb.dev/ironlb (or none, with --default-class)",
			u.GetNamespace(), u.GetName(), *svc.Spec.LoadBalancerClass)
	}
	if !changed {
		return nil
	}
	svc.Status = corev1.ServiceStatus{}
	svc.ResourceVersion, svc.UID, svc.ManagedFields, svc.CreationTimestamp = "", "", nil, metav1.Time{}
	svc.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}
	return &svc
}

func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: ironlbv1alpha1.GroupVersion.String(), Kind: kind}
}

// YAML renders the objects as one multi-document YAML stream.
func YAML(objs []client.Object) ([]byte, error) {
	var b bytes.Buffer
	for i, o := range objs {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return nil, err
		}
		unstructured.RemoveNestedField(m, "metadata", "creationTimestamp")
		unstructured.RemoveNestedField(m, "status")
		y, err := sigsyaml.Marshal(m)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	return b.Bytes(), nil
}

// num reads a number, which JSON decoding may have made an int64 or a
// float64.
func num(u *unstructured.Unstructured, fields ...string) (int64, bool, error) {
	v, ok, err := unstructured.NestedFieldNoCopy(u.Object, fields...)
	if !ok || err != nil {
		return 0, false, err
	}
	switch n := v.(type) {
	case int64:
		return n, true, nil
	case float64:
		return int64(n), true, nil
	case int:
		return int64(n), true, nil
	}
	return 0, false, fmt.Errorf("%s: not a number", strings.Join(fields, "."))
}
