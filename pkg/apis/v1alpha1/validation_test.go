package v1alpha1_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/internal/testenv"
	"github.com/ironlb/ironlb/pkg/apis/v1alpha1"
)

var k8s client.Client

func TestMain(m *testing.M) {
	var env *testenv.Env
	testenv.Main(m, &env, &k8s)
}

func duration(s string) *metav1.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return &metav1.Duration{Duration: d}
}

// TestValidation creates objects against the real API server and checks
// that each bad one is rejected with a message naming the field, and each
// good one is accepted.
func TestValidation(t *testing.T) {
	ippool := func(addrs ...v1alpha1.AddressRange) client.Object {
		return &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{Addresses: addrs}}
	}
	peer := func(mod func(*v1alpha1.BGPPeerSpec)) client.Object {
		s := v1alpha1.BGPPeerSpec{PeerAddress: "10.100.1.1", PeerASN: 64500, MyASN: 64512}
		mod(&s)
		return &v1alpha1.BGPPeer{Spec: s}
	}
	adv := func(comms ...v1alpha1.Community) client.Object {
		return &v1alpha1.BGPAdvertisement{Spec: v1alpha1.BGPAdvertisementSpec{Communities: comms}}
	}
	cases := map[string]struct {
		obj client.Object
		// wantErr lists substrings of the rejection; empty means accepted.
		wantErr []string
	}{
		"pool: CIDRs, ranges, both families": {obj: ippool("10.200.0.0/28", "10.200.1.10-10.200.1.20", "fd00:200::/124", "fd00::1-fd00::1:0")},
		"pool: ipv6 range with full form":    {obj: ippool("fd00:0:0:0:0:0:0:1-FD00::2")},
		// A reversed IPv6 range passes admission; the controller reports it.
		"pool: reversed ipv6 range is left to the controller": {obj: ippool("fd00::1:0-fd00::ffff")},
		"pool: single-address range":                          {obj: ippool("10.0.0.1-10.0.0.1")},
		"pool: malformed CIDR":                                {obj: ippool("10.0.0.0/33"), wantErr: []string{"spec.addresses[0]", "must be a CIDR"}},
		"pool: garbage":                                       {obj: ippool("10.0.0.0/24", "not-an-ip"), wantErr: []string{"spec.addresses[1]", "must be a CIDR"}},
		"pool: mixed families":                                {obj: ippool("10.0.0.1-fd00::1"), wantErr: []string{"spec.addresses[0]", "same IP family"}},
		"pool: reversed ipv4 range":                           {obj: ippool("10.0.0.20-10.0.0.3"), wantErr: []string{"spec.addresses[0]", "start of a range must not be after its end"}},
		"pool: reversed ipv4, octet not text":                 {obj: ippool("10.0.0.100-10.0.0.99"), wantErr: []string{"start of a range"}},

		"pool: ordered ipv4 range by number": {obj: ippool("10.0.0.9-10.0.0.10")},
		"pool: no addresses":                 {obj: ippool(), wantErr: []string{"spec.addresses", "Required"}},
		"pool: empty addresses":              {obj: &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{Addresses: []v1alpha1.AddressRange{}}}, wantErr: []string{"spec.addresses"}},
		"pool: negative priority": {obj: &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{
			Addresses: []v1alpha1.AddressRange{"10.0.0.0/24"}, AllocateTo: &v1alpha1.AllocateTo{Priority: new(int32(-1))},
		}}, wantErr: []string{"spec.allocateTo.priority"}},
		"advertisement: aggregation length 0 (the whole Internet)": {obj: &v1alpha1.BGPAdvertisement{Spec: v1alpha1.BGPAdvertisementSpec{AggregationLength: new(int32(0))}}, wantErr: []string{"spec.aggregationLength"}},
		"advertisement: IPv6 aggregation length 0":                 {obj: &v1alpha1.BGPAdvertisement{Spec: v1alpha1.BGPAdvertisementSpec{AggregationLengthV6: new(int32(0))}}, wantErr: []string{"spec.aggregationLengthV6"}},
		"advertisement: aggregation length 24":                     {obj: &v1alpha1.BGPAdvertisement{Spec: v1alpha1.BGPAdvertisementSpec{AggregationLength: new(int32(24))}}},
		"peer: valid":                                              {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.HoldTime, s.KeepaliveTime = duration("9s"), duration("3s") })},
		"peer: ASN 0":                                              {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.PeerASN = 0 }), wantErr: []string{"spec.peerASN"}},
		"peer: ASN too large":                                      {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.MyASN = 4294967296 }), wantErr: []string{"spec.myASN"}},
		"peer: 4-byte ASN":                                         {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.MyASN = 4294967295 })},
		"peer: bad address":                                        {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.PeerAddress = "10.0.0.300" }), wantErr: []string{"spec.peerAddress", "IPv4 or IPv6"}},
		"peer: bad port":                                           {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.PeerPort = 70000 }), wantErr: []string{"spec.peerPort"}},
		"peer: negative hold":                                      {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.HoldTime = duration("-1s") }), wantErr: []string{"spec.holdTime", "must not be negative"}},
		"peer: hold of 2s":                                         {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.HoldTime = duration("2s") }), wantErr: []string{"spec.holdTime", "at least 3s"}},
		"peer: negative keep":                                      {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.KeepaliveTime = duration("-3s") }), wantErr: []string{"spec.keepaliveTime", "must not be negative"}},
		"peer: BFD valid": {obj: peer(func(s *v1alpha1.BGPPeerSpec) {
			s.BFD = &v1alpha1.BFDSpec{ReceiveInterval: duration("100ms"), TransmitInterval: duration("100ms"), DetectMultiplier: 3}
		})},
		"peer: BFD multihop TTL": {obj: peer(func(s *v1alpha1.BGPPeerSpec) {
			s.EBGPMultiHop, s.BFD = true, &v1alpha1.BFDSpec{MinimumTTL: new(int32(253))}
		})},
		"peer: BFD interval 5ms": {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.BFD = &v1alpha1.BFDSpec{ReceiveInterval: duration("5ms")} }),
			wantErr: []string{"spec.bfd.receiveInterval", "between 10ms and 60s"}},
		"peer: BFD multiplier 1": {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.BFD = &v1alpha1.BFDSpec{DetectMultiplier: 1} }),
			wantErr: []string{"spec.bfd.detectMultiplier"}},
		"peer: BFD TTL single hop": {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.BFD = &v1alpha1.BFDSpec{MinimumTTL: new(int32(254))} }),
			wantErr: []string{"minimumTTL applies to multihop sessions only"}},
		"peer: BFD TTL 255": {obj: peer(func(s *v1alpha1.BGPPeerSpec) {
			s.EBGPMultiHop, s.BFD = true, &v1alpha1.BFDSpec{MinimumTTL: new(int32(255))}
		}), wantErr: []string{"spec.bfd.minimumTTL"}},
		"peer: graceful restart": {obj: peer(func(s *v1alpha1.BGPPeerSpec) {
			s.GracefulRestart = &v1alpha1.GracefulRestartSpec{RestartTime: duration("4095s")}
		})},
		"peer: graceful restart too long": {obj: peer(func(s *v1alpha1.BGPPeerSpec) {
			s.GracefulRestart = &v1alpha1.GracefulRestartSpec{RestartTime: duration("4096s")}
		}), wantErr: []string{"spec.gracefulRestart.restartTime", "between 1s and 4095s"}},
		"peer: graceful restart 500ms": {obj: peer(func(s *v1alpha1.BGPPeerSpec) {
			s.GracefulRestart = &v1alpha1.GracefulRestartSpec{RestartTime: duration("500ms")}
		}), wantErr: []string{"spec.gracefulRestart.restartTime"}},
		"peer: both families": {obj: peer(func(s *v1alpha1.BGPPeerSpec) {
			s.AddressFamilies = []v1alpha1.AddressFamily{v1alpha1.FamilyIPv4, v1alpha1.FamilyIPv6}
		})},
		"peer: family IPv5": {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.AddressFamilies = []v1alpha1.AddressFamily{"IPv5"} }),
			wantErr: []string{"spec.addressFamilies"}},
		"peer: family twice": {obj: peer(func(s *v1alpha1.BGPPeerSpec) {
			s.AddressFamilies = []v1alpha1.AddressFamily{v1alpha1.FamilyIPv4, v1alpha1.FamilyIPv4}
		}), wantErr: []string{"spec.addressFamilies"}},
		"peer: ASN from a label": {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.MyASN, s.MyASNFromLabel = 0, "example.com/bgp-asn" })},
		"peer: both ASN sources": {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.MyASNFromLabel = "rack-asn" }),
			wantErr: []string{"exactly one of myASN and myASNFromLabel"}},
		"peer: no ASN source": {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.MyASN = 0 }),
			wantErr: []string{"exactly one of myASN and myASNFromLabel"}},
		"peer: ASN label not a key": {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.MyASN, s.MyASNFromLabel = 0, "not a key!" }),
			wantErr: []string{"spec.myASNFromLabel", "must be a label key"}},
		"peer: dynamic": {obj: peer(func(s *v1alpha1.BGPPeerSpec) {
			s.PeerAddress, s.DynamicPeerPrefix = "", "10.100.1.0/24"
			s.PasswordSecretRef = &v1alpha1.SecretKeyRef{Namespace: "default", Name: "md5"}
		})},
		"peer: dynamic without a password": {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.PeerAddress, s.DynamicPeerPrefix = "", "10.100.1.0/24" }),
			wantErr: []string{"set passwordSecretRef"}},
		"peer: dynamic and an address": {obj: peer(func(s *v1alpha1.BGPPeerSpec) {
			s.DynamicPeerPrefix = "10.100.1.0/24"
			s.PasswordSecretRef = &v1alpha1.SecretKeyRef{Namespace: "default", Name: "md5"}
		}), wantErr: []string{"exactly one of peerAddress and dynamicPeerPrefix"}},
		"peer: neither address nor prefix": {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.PeerAddress = "" }),
			wantErr: []string{"exactly one of peerAddress and dynamicPeerPrefix"}},
		"peer: dynamic prefix with host bits": {obj: peer(func(s *v1alpha1.BGPPeerSpec) {
			s.PeerAddress, s.DynamicPeerPrefix = "", "10.100.1.1/24"
			s.PasswordSecretRef = &v1alpha1.SecretKeyRef{Namespace: "default", Name: "md5"}
		}), wantErr: []string{"spec.dynamicPeerPrefix", "no host bits"}},
		"peer: dynamic with bfd": {obj: peer(func(s *v1alpha1.BGPPeerSpec) {
			s.PeerAddress, s.DynamicPeerPrefix = "", "fd00:100::/64"
			s.PasswordSecretRef = &v1alpha1.SecretKeyRef{Namespace: "default", Name: "md5"}
			s.BFD = &v1alpha1.BFDSpec{}
		}), wantErr: []string{"cannot be used with dynamicPeerPrefix"}},
		"peer: source interface":             {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.SourceInterface = "eth1.100" })},
		"peer: source interface and address": {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.SourceInterface, s.SourceAddress = "eth1", "10.0.0.1" }), wantErr: []string{"at most one of sourceAddress and sourceInterface"}},
		"peer: source interface not a name":  {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.SourceInterface = "eth 1" }), wantErr: []string{"spec.sourceInterface", "interface name"}},
		"peer: router id":                    {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.RouterID = "192.0.2.7" })},
		"peer: router id IPv6":               {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.RouterID = "fd00::7" }), wantErr: []string{"spec.routerID", "IPv4"}},
		"peer: vrf":                          {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.VRF = "red" })},
		"peer: vrf with bfd":                 {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.VRF, s.BFD = "red", &v1alpha1.BFDSpec{} }), wantErr: []string{"VRF"}},
		"peer: password per node": {obj: peer(func(s *v1alpha1.BGPPeerSpec) {
			s.PasswordPerNode = true
			s.PasswordSecretRef = &v1alpha1.SecretKeyRef{Namespace: "default", Name: "md5"}
		})},
		"peer: password per node, no Secret": {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.PasswordPerNode = true }), wantErr: []string{"passwordPerNode needs passwordSecretRef"}},
		"peer: extended next hop":            {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.PeerAddress, s.ExtendedNextHop = "fd00::1", true })},
		"peer: extended next hop on IPv4":    {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.ExtendedNextHop = true }), wantErr: []string{"extendedNextHop is for IPv6 sessions"}},
		"peer: keep over hold":               {obj: peer(func(s *v1alpha1.BGPPeerSpec) { s.HoldTime, s.KeepaliveTime = duration("9s"), duration("10s") }), wantErr: []string{"keepaliveTime must not exceed holdTime"}},
		"communities: valid":                 {obj: adv("64512:100", "no-export", "large:64512:1:2", "65535:65535", "large:4294967295:0:0")},
		"community: 16-bit":                  {obj: adv("64512:65536"), wantErr: []string{"spec.communities[0]", "ASN:VALUE"}},
		"community: junk":                    {obj: adv("no-export", "hello"), wantErr: []string{"spec.communities[1]"}},
		"community: large 2^32":              {obj: adv("large:4294967296:1:2"), wantErr: []string{"spec.communities[0]"}},
		"community: large short":             {obj: adv("large:1:2"), wantErr: []string{"spec.communities[0]"}},
		"advertisement: pools and selector": {obj: &v1alpha1.L2Advertisement{Spec: v1alpha1.L2AdvertisementSpec{PoolSelection: v1alpha1.PoolSelection{
			IPPools: []string{"a"}, IPPoolSelector: &metav1.LabelSelector{},
		}}}, wantErr: []string{"not both"}},
		"announcement: bad ip": {obj: &v1alpha1.Announcement{ObjectMeta: metav1.ObjectMeta{Namespace: "default"}, Spec: v1alpha1.AnnouncementSpec{
			Service: "s", IP: "x", Node: "n", Protocol: v1alpha1.ProtocolL2,
		}}, wantErr: []string{"spec.ip"}},
		"announcement: bad protocol": {obj: &v1alpha1.Announcement{ObjectMeta: metav1.ObjectMeta{Namespace: "default"}, Spec: v1alpha1.AnnouncementSpec{
			Service: "s", IP: "10.0.0.1", Node: "n", Protocol: "OSPF",
		}}, wantErr: []string{"spec.protocol", "Unsupported value"}},
	}
	i := 0
	for name, tc := range cases {
		i++
		tc.obj.SetName(fmt.Sprintf("v%d", i))
		t.Run(name, func(t *testing.T) {
			err := k8s.Create(context.Background(), tc.obj)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want rejection mentioning %q", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestDefaults checks the defaults the schema fills in.
func TestDefaults(t *testing.T) {
	ctx := context.Background()
	p := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "defaults"}, Spec: v1alpha1.IPPoolSpec{Addresses: []v1alpha1.AddressRange{"10.9.0.0/24"}}}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	if p.Spec.AutoAssign == nil || !*p.Spec.AutoAssign {
		t.Errorf("autoAssign defaulted to %v, want true", p.Spec.AutoAssign)
	}
	peer := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "defaults"}, Spec: v1alpha1.BGPPeerSpec{PeerAddress: "fd00::1", PeerASN: 1, MyASN: 2,
		BFD: &v1alpha1.BFDSpec{}}}
	if err := k8s.Create(ctx, peer); err != nil {
		t.Fatal(err)
	}
	if peer.Spec.PeerPort != 179 || peer.Spec.HoldTime == nil || peer.Spec.HoldTime.Duration != 90*time.Second {
		t.Errorf("peer defaults: port %d, hold %v; want 179, 90s", peer.Spec.PeerPort, peer.Spec.HoldTime)
	}
	if b := peer.Spec.BFD; b.ReceiveInterval == nil || b.ReceiveInterval.Duration != 300*time.Millisecond ||
		b.TransmitInterval == nil || b.TransmitInterval.Duration != 300*time.Millisecond || b.DetectMultiplier != 3 || b.MinimumTTL != nil {
		t.Errorf("BFD defaults: %+v; want 300ms, 300ms, 3 and no minimum TTL", b)
	}
	gr := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "defaults-gr"}, Spec: v1alpha1.BGPPeerSpec{PeerAddress: "fd00::2", PeerASN: 1, MyASN: 2,
		GracefulRestart: &v1alpha1.GracefulRestartSpec{}}}
	if err := k8s.Create(ctx, gr); err != nil {
		t.Fatal(err)
	}
	if rt := gr.Spec.GracefulRestart.RestartTime; rt == nil || rt.Duration != 120*time.Second {
		t.Errorf("graceful restart default: %v, want 120s", rt)
	}
}

// TestWellKnownCommunities: the API server admits every name in
// WellKnownCommunities (what the speaker and the converter translate),
// and no other word: the CEL rule on Community and the map agree.
func TestWellKnownCommunities(t *testing.T) {
	ctx := context.Background()
	i := 0
	create := func(c v1alpha1.Community) error {
		i++
		a := &v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("wk%d", i)},
			Spec: v1alpha1.BGPAdvertisementSpec{Communities: []v1alpha1.Community{c}}}
		err := k8s.Create(ctx, a)
		if err == nil {
			_ = k8s.Delete(ctx, a)
		}
		return err
	}
	for name := range v1alpha1.WellKnownCommunities {
		if err := create(v1alpha1.Community(name)); err != nil {
			t.Errorf("well-known community %q refused: %v", name, err)
		}
	}
	for _, name := range []string{"no-exports", "internet", "local-as"} {
		if err := create(v1alpha1.Community(name)); err == nil {
			t.Errorf("%q admitted, but WellKnownCommunities has no value for it", name)
		}
	}
	// And the rule names no word the map lacks.
	crd, err := os.ReadFile(filepath.Join("..", "..", "..", "manifests", "crd", "ironlb.dev_bgpadvertisements.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`self in \[([^\]]*)\]`).FindSubmatch(crd)
	if m == nil {
		t.Fatal("no list of names in the Community rule")
	}
	var names []string
	for _, n := range strings.Split(string(m[1]), ",") {
		names = append(names, strings.Trim(strings.TrimSpace(n), "'"))
	}
	if want := slices.Sorted(maps.Keys(v1alpha1.WellKnownCommunities)); !slices.Equal(slices.Sorted(slices.Values(names)), want) {
		t.Errorf("the Community rule names %v, WellKnownCommunities %v", names, want)
	}
}
