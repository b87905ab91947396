package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// vmEnv is set inside the VM that e2e/vm boots, whose kernel has VRF
// support (this machine's has not): the tests that need a real VRF device
// run only there, in the VM's own namespaces.
const vmEnv = "IRONLB_VM"

// TestVRFDevice (in e2e/vm's VM): a peer with a VRF opens its session
// bound to a real VRF device, whose table alone has the route to the
// router; the VIP route reaches BIRD over that session, into the table
// BIRD keeps for it, next to the same route over the default VRF's
// session, which stays up.
func TestVRFDevice(t *testing.T) {
	if os.Getenv(vmEnv) == "" {
		t.Skip("needs a kernel with VRF: runs in the VM of e2e/vm (make test runs it)")
	}
	// v2 (10.201.0.1/24) into VRF red: its connected route moves to
	// table 10, and the main table has no way to 10.201.0.2.
	for _, args := range [][]string{
		{"link", "add", "red", "type", "vrf", "table", "10"},
		{"link", "set", "red", "up"},
		{"addr", "del", "10.201.0.1/32", "dev", "v2"},
		{"link", "set", "v2", "master", "red"},
		{"addr", "add", "10.201.0.1/24", "dev", "v2"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	if out, _ := exec.Command("ip", "route", "get", "10.201.0.2").CombinedOutput(); !strings.Contains(string(out), "unreachable") {
		t.Fatalf("the main table reaches 10.201.0.2; the test proves nothing:\n%s", out)
	}
	b := startBirdConf(t, `
ipv4 table red4;
protocol bgp node {
	local 10.200.0.2 as 64512;
	neighbor 10.200.0.1 as 64512;
	passive on;
	hold time 9;
	ipv4 { import all; export none; };
}
protocol bgp red {
	local 10.201.0.2 as 64512;
	neighbor 10.201.0.1 as 64512;
	passive on;
	hold time 9;
	ipv4 { table red4; import all; export none; };
}
`)
	ctx := context.Background()
	srv := New(testr.New(t), netip.MustParseAddr("10.200.0.1"), nil)
	t.Cleanup(func() { _ = srv.Stop(ctx) })
	def := Peer{Name: "default", Address: netip.MustParseAddr("10.200.0.2"), ASN: 64512, MyASN: 64512, HoldTime: 9 * time.Second}
	red := Peer{Name: "red", Address: netip.MustParseAddr("10.201.0.2"), ASN: 64512, MyASN: 64512, HoldTime: 9 * time.Second}
	vip := Route{Prefix: netip.MustParsePrefix("10.89.100.1/32"), Peers: []string{"default", "red"}}
	if err := srv.Apply(ctx, []Peer{def, red}, []Route{vip}); err != nil {
		t.Fatal(err)
	}
	b.eventually(30*time.Second, "the default VRF's session", func() error {
		if !b.up("node") {
			return fmt.Errorf("not established")
		}
		return nil
	})
	// Several connection attempts (ConnectRetry 2 s) without the VRF.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if b.up("red") {
			t.Fatal("the session to the VRF's router came up without the VRF")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A flap of the default VRF's session would show as a new Since.
	before := srv.States()["default"]
	red.VRF = "red"
	if err := srv.Apply(ctx, []Peer{def, red}, []Route{vip}); err != nil {
		t.Fatal(err)
	}
	b.eventually(30*time.Second, "the VIP over the VRF's session, in BIRD's table for it", func() error {
		out, err := b.birdc("show", "route", "table", "red4", "for", "10.89.100.1/32", "all")
		if err != nil {
			return err
		}
		if !b.up("red") || !strings.Contains(out, "[red ") || !strings.Contains(out, "BGP.next_hop: 10.201.0.1") {
			return fmt.Errorf("not yet:\n%s", out)
		}
		return nil
	})
	out, err := b.birdc("show", "route", "table", "master4", "for", "10.89.100.1/32", "all")
	if err != nil || !strings.Contains(out, "[node ") || !strings.Contains(out, "BGP.next_hop: 10.200.0.1") || strings.Contains(out, "[red ") {
		t.Errorf("the default VRF's table: %v\n%s", err, out)
	}
	if after := srv.States()["default"]; !b.up("node") || after != before {
		t.Errorf("the default VRF's session changed meanwhile: %+v, then %+v", before, after)
	}
	t.Logf("BIRD has 10.89.100.1/32 over the session bound to VRF red (table red4) and over the default VRF's session (master4)")
}
