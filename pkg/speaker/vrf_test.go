package speaker

import (
	"net/netip"
	"os"
	"os/exec"
	"testing"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/bgp"
	"github.com/ironlb/ironlb/pkg/dataplane"
)

// TestReadLinksVRF (in e2e/vm's VM): the speaker finds a real VRF device
// and its member, and a BGPPeer with that vrf gets the member's addresses
// as next hops; one naming an interface that is not a VRF gets none.
func TestReadLinksVRF(t *testing.T) {
	if os.Getenv("IRONLB_VM") == "" { // set by e2e/vm
		t.Skip("needs a kernel with VRF, and creates devices: runs in the VM of e2e/vm (make test runs it)")
	}
	for _, args := range [][]string{
		{"link", "add", "blue", "type", "vrf", "table", "20"},
		{"link", "add", "vb0", "type", "veth", "peer", "name", "vb1"},
		{"link", "set", "vb0", "master", "blue"},
		{"addr", "add", "172.16.0.5/24", "dev", "vb0"},
		{"addr", "add", "fd16::5/64", "dev", "vb0", "nodad"},
		{"link", "set", "blue", "up"},
		{"link", "set", "vb0", "up"},
		{"link", "set", "vb1", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	l, err := readLinks()
	if err != nil {
		t.Fatal(err)
	}
	if !l.vrf["blue"] || l.vrf["vb0"] || l.master["vb0"] != "blue" {
		t.Fatalf("vrf %v, master %v", l.vrf, l.master)
	}
	bp := bgp.Peer{Address: netip.MustParseAddr("172.16.0.1")}
	self := dataplane.Self{V4: netip.MustParseAddr("10.0.0.5")}
	if err := placeSession(&bp, &ironlbv1alpha1.BGPPeerSpec{VRF: "blue"}, self, l); err != nil {
		t.Fatal(err)
	}
	if bp.VRF != "blue" || bp.NextHop4 != netip.MustParseAddr("172.16.0.5") || bp.NextHop6 != netip.MustParseAddr("fd16::5") {
		t.Errorf("placed %+v", bp)
	}
	if err := placeSession(&bgp.Peer{Address: netip.MustParseAddr("172.16.0.1")}, &ironlbv1alpha1.BGPPeerSpec{VRF: "vb0"}, self, l); err == nil {
		t.Error("a veth passed for a VRF device")
	}
}
