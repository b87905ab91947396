package speaker

import (
	"net/netip"
	"strings"
	"testing"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/bgp"
	"github.com/ironlb/ironlb/pkg/dataplane"
)

// TestPlaceSession: where a node's session runs from, for each way a
// BGPPeer can say it, and why a node keeps none.
func TestPlaceSession(t *testing.T) {
	a := netip.MustParseAddr
	self := dataplane.Self{V4: a("10.0.0.5"), V6: a("fd00::5")}
	l := links{
		exists: map[string]bool{"eth0": true, "uplink": true, "red": true, "red0": true, "bare": true},
		addrs: map[string][]netip.Addr{
			"eth0": {a("10.0.0.5"), a("fd00::5")}, "uplink": {a("fd10::7"), a("10.10.0.7")},
			"red0": {a("172.16.0.5"), a("fd16::5")},
		},
		vrf:    map[string]bool{"red": true},
		master: map[string]string{"red0": "red"},
	}
	for _, tc := range []struct {
		name    string
		peer    bgp.Peer
		spec    ironlbv1alpha1.BGPPeerSpec
		want    bgp.Peer // Source, Listen, VRF, NextHop4, NextHop6
		wantErr string
	}{
		{name: "plain", peer: bgp.Peer{Address: a("10.0.0.1")},
			want: bgp.Peer{NextHop4: a("10.0.0.5"), NextHop6: a("fd00::5")}},
		{name: "source interface, IPv4 peer", peer: bgp.Peer{Address: a("10.10.0.1")}, spec: ironlbv1alpha1.BGPPeerSpec{SourceInterface: "uplink"},
			want: bgp.Peer{Source: a("10.10.0.7"), NextHop4: a("10.0.0.5"), NextHop6: a("fd00::5")}},
		{name: "source interface, IPv6 peer", peer: bgp.Peer{Address: a("fd10::1")}, spec: ironlbv1alpha1.BGPPeerSpec{SourceInterface: "uplink"},
			want: bgp.Peer{Source: a("fd10::7"), NextHop4: a("10.0.0.5"), NextHop6: a("fd00::5")}},
		{name: "source interface missing", peer: bgp.Peer{Address: a("10.10.0.1")}, spec: ironlbv1alpha1.BGPPeerSpec{SourceInterface: "eth9"},
			wantErr: "no interface eth9"},
		{name: "source interface without the family", peer: bgp.Peer{Address: a("10.10.0.1")}, spec: ironlbv1alpha1.BGPPeerSpec{SourceInterface: "bare"},
			wantErr: "bare has no global IPv4 address"},
		{name: "vrf", peer: bgp.Peer{Address: a("172.16.0.1")}, spec: ironlbv1alpha1.BGPPeerSpec{VRF: "red"},
			want: bgp.Peer{VRF: "red", NextHop4: a("172.16.0.5"), NextHop6: a("fd16::5")}},
		{name: "vrf missing", peer: bgp.Peer{Address: a("172.16.0.1")}, spec: ironlbv1alpha1.BGPPeerSpec{VRF: "blue"},
			wantErr: "no VRF device blue"},
		{name: "not a vrf", peer: bgp.Peer{Address: a("172.16.0.1")}, spec: ironlbv1alpha1.BGPPeerSpec{VRF: "eth0"},
			wantErr: "no VRF device eth0"},
		{name: "dynamic on the InternalIP", peer: bgp.Peer{Dynamic: netip.MustParsePrefix("fd00::/64")},
			want: bgp.Peer{Listen: a("fd00::5"), Source: a("fd00::5"), NextHop4: a("10.0.0.5"), NextHop6: a("fd00::5")}},
		{name: "dynamic on an interface", peer: bgp.Peer{Dynamic: netip.MustParsePrefix("10.10.0.0/24")}, spec: ironlbv1alpha1.BGPPeerSpec{SourceInterface: "uplink"},
			want: bgp.Peer{Listen: a("10.10.0.7"), Source: a("10.10.0.7"), NextHop4: a("10.0.0.5"), NextHop6: a("fd00::5")}},
		{name: "dynamic from the other family", peer: bgp.Peer{Dynamic: netip.MustParsePrefix("10.10.0.0/24"), Source: a("fd00::5")},
			wantErr: "not of the prefix's family"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bp := tc.peer
			err := placeSession(&bp, &tc.spec, self, l)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := bgp.Peer{Source: bp.Source, Listen: bp.Listen, VRF: bp.VRF, NextHop4: bp.NextHop4, NextHop6: bp.NextHop6}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestAgreeOnRouterID: the first peer by name that sets a router ID sets
// the node's; one that disagrees keeps no session and says why; peers
// that set none run with it.
func TestAgreeOnRouterID(t *testing.T) {
	a := netip.MustParseAddr
	problems := map[string]string{}
	got := agreeOnRouterID([]bgp.Peer{{Name: "a"}, {Name: "b", RouterID: a("192.0.2.1")}, {Name: "c", RouterID: a("192.0.2.2")}, {Name: "d", RouterID: a("192.0.2.1")}}, problems)
	var names []string
	for _, p := range got {
		names = append(names, p.Name)
		if p.RouterID != a("192.0.2.1") {
			t.Errorf("%s runs with router ID %s", p.Name, p.RouterID)
		}
	}
	if strings.Join(names, ",") != "a,b,d" {
		t.Errorf("kept %v, want a, b, d", names)
	}
	if !strings.Contains(problems["c"], "conflicts with BGPPeer b's 192.0.2.1") {
		t.Errorf("c's problem: %q", problems["c"])
	}
	if got := agreeOnRouterID([]bgp.Peer{{Name: "a"}}, map[string]string{}); got[0].RouterID.IsValid() {
		t.Errorf("no override, yet router ID %s", got[0].RouterID)
	}
}
