package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/lab"
)

// TestBGPGracefulRestartBFD: graceful restart and BFD on the same
// sessions. Whether the routes stay through a speaker restart is the
// router's choice: the speaker's BFD stops with it (BFD runs in the
// speaker, so it sends the C bit clear: control-plane dependent), and a
// router that closes the BGP session on any BFD Down (BIRD's "bfd on",
// which does so even on the AdminDown a stopping speaker sends) withdraws
// them; one that takes a BFD Down as a graceful restart (BIRD's "bfd
// graceful", FRR's check-control-plane-failure) keeps them, for SIGTERM
// and kill -9 alike.
func TestBGPGracefulRestartBFD(t *testing.T) {
	ctx := t.Context()
	waitSessions(t, 30*time.Second)
	ips := bgpService(t, "bgp-grbfd", nil)
	pfx := hostPrefix(ips[0])
	waitBirdNodes(t, pfx, 20*time.Second, allNodes()...)
	updatePeers(t, func(s *ironlbv1alpha1.BGPPeerSpec) {
		s.GracefulRestart = &ironlbv1alpha1.GracefulRestartSpec{RestartTime: &metav1.Duration{Duration: 30 * time.Second}}
		s.BFD = &ironlbv1alpha1.BFDSpec{
			ReceiveInterval: &metav1.Duration{Duration: lab.BFDInterval}, TransmitInterval: &metav1.Duration{Duration: lab.BFDInterval},
			DetectMultiplier: lab.BFDMultiplier,
		}
	}, lab.BGPPeerV4, lab.BGPPeerV6)
	t.Cleanup(func() {
		updatePeers(t, func(s *ironlbv1alpha1.BGPPeerSpec) { s.GracefulRestart, s.BFD = nil, nil }, lab.BGPPeerV4, lab.BGPPeerV6)
	})
	bothUp := func() {
		t.Helper()
		eventually(t, 30*time.Second, func() error {
			return onEveryNode(ctx, "BFD Up and graceful restart negotiated", func(s ironlbv1alpha1.BGPSessionStatus) bool {
				return s.State == "Established" && s.BFD == "Up" && s.GracefulRestart == "Negotiated"
			})
		})
		waitBirdNodes(t, pfx, 20*time.Second, allNodes()...)
	}
	bothUp()
	nodeB := nodeNamed(t, "node-b")
	onMissing, onPolls, onLost, _ := restartSpeaker(t, nodeB, ips[0], false)
	if onMissing == 0 {
		t.Errorf("SIGTERM with BFD and graceful restart, BIRD with bfd on: BIRD kept node-b's route (%d polls): the baseline measures nothing", onPolls)
	}

	// The router's choice for a BFD Down: BIRD's "bfd graceful".
	orig := filepath.Join(cfg.Dir, "bird.conf")
	b, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\tbfd on;") {
		t.Fatalf("the lab's bird.conf has no \"bfd on\" to change:\n%s", b)
	}
	graceful := filepath.Join(cfg.Dir, "bird-bfd-graceful.conf")
	if err := os.WriteFile(graceful, []byte(strings.Replace(string(b), "\tbfd on;", "\tbfd graceful;", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cfg.Birdc(ctx, "configure", fmt.Sprintf("%q", graceful)); err != nil || !strings.Contains(out, "Reconfigured") {
		t.Fatalf("birdc configure %s: %v: %s", graceful, err, out)
	}
	t.Cleanup(func() {
		// t.Context() is over by now.
		ctx := context.Background()
		if out, err := cfg.Birdc(ctx, "configure", fmt.Sprintf("%q", orig)); err != nil || !strings.Contains(out, "Reconfigured") {
			t.Errorf("birdc configure %s: %v: %s", orig, err, out)
		}
		if err := cfg.WaitBirdSessions(ctx, 30*time.Second); err != nil {
			t.Error(err)
		}
	})
	waitSessions(t, 30*time.Second)
	bothUp()
	termMissing, termPolls, _, _ := restartSpeaker(t, nodeB, ips[0], false)
	killMissing, killPolls, _, _ := restartSpeaker(t, nodeB, ips[0], true)
	if termMissing > 0 || killMissing > 0 {
		t.Errorf("BFD and graceful restart, BIRD with bfd graceful: BIRD lacked node-b's route, SIGTERM in %d of %d polls, kill -9 in %d of %d", termMissing, termPolls, killMissing, killPolls)
	}
	// BFD off again: every session comes back, including one that BFD
	// held closed (BIRD's reconfiguration restarts its BFD sessions).
	if out, err := cfg.Birdc(ctx, "configure", fmt.Sprintf("%q", orig)); err != nil || !strings.Contains(out, "Reconfigured") {
		t.Fatalf("birdc configure %s: %v: %s", orig, err, out)
	}
	updatePeers(t, func(s *ironlbv1alpha1.BGPPeerSpec) { s.GracefulRestart, s.BFD = nil, nil }, lab.BGPPeerV4, lab.BGPPeerV6)
	waitSessions(t, 30*time.Second)
	// BIRD discarded none of the speakers' BFD packets as malformed
	// (it logs "invalid flags" for one with both Poll and Final, which
	// every speaker sent when both ends came Up together).
	if log, err := os.ReadFile(filepath.Join(cfg.Dir, "logs", "bird.log")); err != nil {
		t.Error(err)
	} else if n := strings.Count(string(log), "invalid flags"); n > 0 {
		t.Errorf("BIRD discarded %d of the speakers' BFD packets for their flags", n)
	}
	t.Logf("FIGURE BFD (%s x %d) with graceful restart, BIRD polled every 10 ms: with BIRD's bfd on, SIGTERM lost node-b's route in %d of %d polls (for %s); with bfd graceful, SIGTERM in %d of %d, kill -9 in %d of %d",
		lab.BFDInterval, lab.BFDMultiplier, onMissing, onPolls, onLost.Round(time.Millisecond), termMissing, termPolls, killMissing, killPolls)
}
