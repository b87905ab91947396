package convert

import (
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
)

func TestMetalLB(t *testing.T) {
	f, err := os.Open("testdata/metallb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	res, err := MetalLB(f)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]any{}
	for _, o := range res.Objects {
		byName[o.GetObjectKind().GroupVersionKind().Kind+"/"+o.GetName()] = o
	}
	if len(res.Objects) != 8 {
		t.Errorf("%d objects, want 8 (2 pools, L2, BGP advertisement, 2 peers, a Secret, a Service): %v", len(res.Objects), keys(byName))
	}

	p := byName["IPPool/first-pool"].(*ironlbv1alpha1.IPPool)
	if len(p.Spec.Addresses) != 3 || !p.Spec.AvoidBuggyIPs || p.Spec.AutoAssign != nil {
		t.Errorf("first-pool: %+v", p.Spec)
	}
	at := p.Spec.AllocateTo
	if at == nil || *at.Priority != 50 || len(at.Namespaces) != 2 || at.NamespaceSelector.MatchLabels["foo"] != "bar" ||
		at.ServiceSelector.MatchExpressions[0].Key != "environment" {
		t.Errorf("first-pool allocateTo: %+v", at)
	}
	r := byName["IPPool/reserved"].(*ironlbv1alpha1.IPPool)
	if r.Spec.AutoAssign == nil || *r.Spec.AutoAssign || r.Spec.Addresses[0] != "192.168.20.10-192.168.20.20" {
		t.Errorf("reserved: %+v", r.Spec)
	}
	l2 := byName["L2Advertisement/example"].(*ironlbv1alpha1.L2Advertisement)
	if l2.Spec.IPPools[0] != "first-pool" || len(l2.Spec.Interfaces) != 2 || l2.Spec.NodeSelector.MatchLabels["kubernetes.io/hostname"] != "kind-worker" {
		t.Errorf("L2: %+v", l2.Spec)
	}
	adv := byName["BGPAdvertisement/local"].(*ironlbv1alpha1.BGPAdvertisement)
	want := []ironlbv1alpha1.Community{"1234:1", "no-export", "large:64512:1:2"}
	if *adv.Spec.LocalPref != 100 || *adv.Spec.AggregationLength != 32 || adv.Spec.Peers[0] != "peer-a" ||
		len(adv.Spec.Communities) != 3 || adv.Spec.Communities[0] != want[0] || adv.Spec.Communities[2] != want[2] {
		t.Errorf("BGP advertisement: %+v", adv.Spec)
	}
	a := byName["BGPPeer/peer-a"].(*ironlbv1alpha1.BGPPeer)
	if a.Spec.PeerASN != 64501 || a.Spec.MyASN != 64500 || a.Spec.PeerPort != 180 || !a.Spec.EBGPMultiHop ||
		a.Spec.HoldTime.Seconds() != 90 || a.Spec.KeepaliveTime.Seconds() != 30 ||
		a.Spec.PasswordSecretRef.Name != "peer-a-bgp-password" || a.Spec.NodeSelector.MatchLabels["rack"] != "frontend" {
		t.Errorf("peer-a: %+v", a.Spec)
	}
	// MetalLB's BFDProfile "fast", inlined; echo mode reported below.
	if f := a.Spec.BFD; f == nil || f.ReceiveInterval.Duration != 300*time.Millisecond || f.TransmitInterval.Duration != 200*time.Millisecond ||
		f.DetectMultiplier != 5 || f.MinimumTTL == nil || *f.MinimumTTL != 250 {
		t.Errorf("peer-a's BFD: %+v", a.Spec.BFD)
	}
	if gr := a.Spec.GracefulRestart; gr == nil || gr.RestartTime.Duration != 120*time.Second {
		t.Errorf("peer-a's graceful restart: %+v", a.Spec.GracefulRestart)
	}
	if b := byName["BGPPeer/peer-b"].(*ironlbv1alpha1.BGPPeer); b.Spec.GracefulRestart != nil {
		t.Errorf("peer-b has graceful restart it did not ask for: %+v", b.Spec.GracefulRestart)
	}
	sec := byName["Secret/peer-a-bgp-password"].(*corev1.Secret)
	if sec.Namespace != Namespace || sec.StringData["password"] != "s3cr3t" {
		t.Errorf("peer-a's Secret: %+v", sec)
	}
	b := byName["BGPPeer/peer-b"].(*ironlbv1alpha1.BGPPeer)
	if b.Spec.PasswordSecretRef == nil || b.Spec.PasswordSecretRef.Namespace != Namespace || b.Spec.PasswordSecretRef.Name != "peer-b-md5" {
		t.Errorf("peer-b: %+v", b.Spec)
	}
	if b.Spec.VRF != "red" || b.Spec.RouterID != "192.0.2.9" {
		t.Errorf("peer-b's vrf %q and routerID %q, want red and 192.0.2.9", b.Spec.VRF, b.Spec.RouterID)
	}
	svc := byName["Service/nginx"].(*corev1.Service)
	for k, v := range map[string]string{"ironlb.dev/ip-pool": "reserved", "ironlb.dev/load-balancer-ips": "192.168.20.11",
		"ironlb.dev/sharing-key": "key-to-share", "app.example.com/owner": "web-team"} {
		if svc.Annotations[k] != v {
			t.Errorf("nginx annotation %s = %q, want %q (all: %v)", k, svc.Annotations[k], v, svc.Annotations)
		}
	}
	for k := range svc.Annotations {
		if strings.Contains(k, "metallb") {
			t.Errorf("nginx keeps %s", k)
		}
	}
	// What could not be converted is said, naming the object.
	report := strings.Join(res.Report, "\n")
	for _, want := range []string{
		"L2Advertisement example: 2 nodeSelectors",
		`community "NO_ADVERTISE"`,
		"BFDProfile fast's echoMode is not supported",
		"BGPPeer peer-a: its password was inline",
		"copy the Secret metallb-system/peer-b-md5 to ironlb-system",
		"ip-allocated-from-pool has no ironlb counterpart",
		"BGPPeer peer-b: connectTime is not supported",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if _, err := YAML(res.Objects); err != nil {
		t.Fatal(err)
	}
}

func TestMetalLBRejectsGarbage(t *testing.T) {
	if _, err := MetalLB(strings.NewReader("kind: [unclosed")); err == nil {
		t.Error("broken YAML converted without an error")
	}
	res, err := MetalLB(strings.NewReader(""))
	if err != nil || len(res.Objects) != 0 {
		t.Errorf("empty input: %v %v", res, err)
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
