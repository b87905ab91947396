package e2e

// These run after every other test, in the order of last (main_test.go),
// whatever the files are called: the RBAC check reads the logs of the
// whole run, and during the API server outage the controller loses its
// Lease and must then wait for it to expire before it allocates again.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/pkg/lab"
)

// noRBACRefusals (TestNoRBACRefusals): the daemons run as their service accounts, so a
// permission the manifests' RBAC lacks shows as "is forbidden" in their
// logs, even where no test noticed. Checked before the outage: a
// restarted API server refuses everyone until its RBAC caches fill.
func noRBACRefusals(t *testing.T) {
	bad, err := forbidden(cfg.Dir, cfg.NodeList())
	if err != nil {
		t.Fatalf("the daemons' logs: %v", err)
	}
	if len(bad) > 0 {
		t.Errorf("the daemons were refused by RBAC:\n%s", strings.Join(bad, "\n"))
	}
}

// apiServerOutage (TestAPIServerOutage) stops kube-apiserver: the speakers keep answering
// (and advertising over BGP) from what they last knew, and a speaker death
// is still covered, since failure detection does not need the API server.
func apiServerOutage(t *testing.T) {
	ctx := t.Context()
	bgpCheck := bgpOutage(t)
	owner := oneAnnouncer(t, lab.DemoService, vip4, nil)
	if err := cfg.Stop("kube-apiserver", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cfg.StartAPIServer(); err != nil {
			t.Fatal(err)
		}
		if err := cfg.WaitAPIServer(context.WithoutCancel(ctx), 60*time.Second); err != nil {
			t.Fatal(err)
		}
		// The controller exits when it loses its Lease, as it should;
		// start it again, as its Deployment would.
		if !cfg.Running("controller") {
			if err := cfg.StartController(); err != nil {
				t.Fatal(err)
			}
		}
	}()
	if err := cfg.WaitAPIServer(ctx, 2*time.Second); err == nil {
		t.Fatal("the API server still answers after being stopped")
	}
	// BGP: every node keeps advertising what it last knew.
	bgpCheck()
	if macs := arpingMACs(t, vip4); len(macs) != 1 || macs[0] != macOf(t, owner) {
		t.Errorf("during the outage arping %s saw %v, want only %s", vip4, macs, macOf(t, owner))
	}
	if _, err := cfg.Get(ctx, vip4); err != nil {
		t.Errorf("during the outage http://%s/: %v", vip4, err)
	}
	p, err := cfg.StartProbe(ctx, vip4)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r, err := cfg.Failover(ctx, p, lab.KillSpeaker)
	if err != nil {
		t.Fatalf("failover without an API server: %v", err)
	}
	if r.To.Name == r.From.Name {
		t.Errorf("failover without an API server stayed on %s", r.From.Name)
	}
	t.Logf("without an API server, %s of %s: answers through %s after %s", r.Death, r.From.Name, r.To.Name, r.Took.Round(time.Millisecond))
}
