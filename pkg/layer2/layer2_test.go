//go:build linux

package layer2

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"

	"github.com/ironlb/ironlb/internal/nsrun"
)

const speakerLink, clientLink = "l2spk0", "l2cli0"

// pair makes two network namespaces of our own joined by a veth, removed
// when the test ends: "speaker" (announces) and "client" (asks).
func pair(t *testing.T) (speakerNS, clientNS string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces; CI runs as root")
	}
	speakerNS, clientNS = "ironlbtest-l2-speaker", "ironlbtest-l2-client"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	for _, ns := range []string{speakerNS, clientNS} {
		_ = exec.Command("ip", "netns", "delete", ns).Run() // a leftover of a crashed run
		run("netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", ns).Run() })
	}
	// Names no other namespace has: Go resolves IPv6 zones by name in a
	// process-wide cache, which one process spanning namespaces confuses.
	run("-n", speakerNS, "link", "add", speakerLink, "type", "veth", "peer", "name", clientLink, "netns", clientNS)
	run("-n", speakerNS, "addr", "add", "fe80::1/64", "dev", speakerLink, "nodad")
	run("-n", clientNS, "addr", "add", "192.0.2.2/24", "dev", clientLink)
	run("-n", clientNS, "addr", "add", "fe80::2/64", "dev", clientLink, "nodad")
	run("-n", speakerNS, "link", "set", speakerLink, "up")
	run("-n", clientNS, "link", "set", clientLink, "up")
	// The links carry traffic once the kernel has added their multicast
	// routes, a moment after they go up.
	for _, side := range [][2]string{{speakerNS, speakerLink}, {clientNS, clientLink}} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			out, _ := exec.Command("ip", "-n", side[0], "-6", "route", "show", "table", "local", "dev", side[1]).Output()
			if strings.Contains(string(out), "multicast ff00::/8") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s in %s has no multicast route after 5s", side[1], side[0])
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return speakerNS, clientNS
}

func inNS(t *testing.T, ns string, fn func() error) {
	t.Helper()
	if err := nsrun.In(ns, fn); err != nil {
		t.Fatal(err)
	}
}

func TestAnnouncerAnswersARPAndNDP(t *testing.T) {
	speakerNS, clientNS := pair(t)
	vip4 := netip.MustParseAddr("192.0.2.10")
	vip6 := netip.MustParseAddr("2001:db8::10")

	var speakerMAC net.HardwareAddr
	var arpc *arp.Client
	var ndpc *ndp.Conn
	inNS(t, speakerNS, func() error {
		ifi, err := net.InterfaceByName(speakerLink)
		speakerMAC = ifi.HardwareAddr
		return err
	})
	inNS(t, clientNS, func() error {
		ifi, err := net.InterfaceByName(clientLink)
		if err != nil {
			return err
		}
		if arpc, err = arp.Dial(ifi); err != nil {
			return err
		}
		ndpc, _, err = ndp.Listen(ifi, ndp.Addr("fe80::2"))
		return err
	})
	defer func() { _ = arpc.Close() }()
	defer func() { _ = ndpc.Close() }()

	m := NewMetrics(nil)
	a := New(logr.Discard(), Options{Gratuitous: []time.Duration{0}}, m)
	ctx := t.Context()
	go a.Run(ctx)
	inNS(t, speakerNS, func() error {
		return a.Set(map[string][]netip.Addr{speakerLink: {vip4, vip6}})
	})

	// A gratuitous ARP arrives unasked: sender and target are the VIP.
	if err := arpc.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for {
		p, _, err := arpc.Read()
		if err != nil {
			t.Fatalf("no gratuitous ARP for %s: %v", vip4, err)
		}
		if p.SenderIP == vip4 && p.TargetIP == vip4 {
			if p.SenderHardwareAddr.String() != speakerMAC.String() {
				t.Errorf("gratuitous ARP names %s, want %s", p.SenderHardwareAddr, speakerMAC)
			}
			break
		}
	}
	// A request is answered with the speaker's MAC.
	if err := arpc.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	mac, err := arpc.Resolve(vip4)
	if err != nil {
		t.Fatalf("resolve %s: %v", vip4, err)
	}
	if mac.String() != speakerMAC.String() {
		t.Errorf("ARP answered %s, want %s", mac, speakerMAC)
	}

	// A Neighbor Solicitation is answered with a solicited, overriding NA.
	group, err := ndp.SolicitedNodeMulticast(vip6)
	if err != nil {
		t.Fatal(err)
	}
	ns := &ndp.NeighborSolicitation{TargetAddress: vip6}
	// Zones resolve against the calling thread's namespace.
	inNS(t, clientNS, func() error { return ndpc.WriteTo(ns, nil, group) })
	if err := ndpc.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for {
		msg, _, _, err := ndpc.ReadFrom()
		if err != nil {
			t.Fatalf("no Neighbor Advertisement for %s: %v", vip6, err)
		}
		na, ok := msg.(*ndp.NeighborAdvertisement)
		if !ok || na.TargetAddress != vip6 || !na.Solicited {
			continue // the unsolicited ones from the burst, or other traffic
		}
		if !na.Override {
			t.Error("the advertisement does not override")
		}
		var got string
		for _, o := range na.Options {
			if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
				got = lla.Addr.String()
			}
		}
		if got != speakerMAC.String() {
			t.Errorf("NA names %q, want %s", got, speakerMAC)
		}
		break
	}

	// Another node claims the IP (a gratuitous ARP with its own MAC): the
	// owner answers with gratuitous ARPs of its own.
	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	claim, err := arp.NewPacket(arp.OperationRequest, other, vip4, ethernet.Broadcast, vip4)
	if err != nil {
		t.Fatal(err)
	}
	if err := arpc.WriteTo(claim, ethernet.Broadcast); err != nil {
		t.Fatal(err)
	}
	if err := arpc.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for {
		p, _, err := arpc.Read()
		if err != nil {
			t.Fatalf("no gratuitous ARP in answer to another node's claim: %v", err)
		}
		if p.SenderIP == vip4 && p.TargetIP == vip4 && p.SenderHardwareAddr.String() == speakerMAC.String() {
			break
		}
	}

	// An interface the node lacks: an error, and Serving says the IP is
	// answered on the one that exists only.
	var setErr error
	inNS(t, speakerNS, func() error {
		setErr = a.Set(map[string][]netip.Addr{speakerLink: {vip4, vip6}, "nosuch0": {vip4}})
		return nil
	})
	if setErr == nil || !strings.Contains(setErr.Error(), "nosuch0") {
		t.Errorf("Set with a missing interface: %v, want an error naming it", setErr)
	}
	if got := a.Serving(); !slices.Equal(got[vip4], []string{speakerLink}) || !slices.Equal(got[vip6], []string{speakerLink}) {
		t.Errorf("Serving = %v, want both IPs on %s only", got, speakerLink)
	}

	// Once told to stop, the speaker no longer answers.
	inNS(t, speakerNS, func() error { return a.Set(nil) })
	if err := arpc.SetDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if mac, err := arpc.Resolve(vip4); err == nil {
		t.Errorf("after Set(nil) %s is still answered by %s", vip4, mac)
	}
	// And its receive loops end with their sockets, instead of spinning.
	done := make(chan struct{})
	go func() { a.servers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Error("the receive loops still run 5 s after their sockets were closed")
	}
}
