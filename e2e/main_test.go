// Package e2e runs ironlb end to end in the one-machine lab: a real API
// server, real network namespaces on a real bridge, real kube-proxy, the
// real controller and speakers, real ARP, NDP, TCP and UDP. It needs root.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/lab"
)

var (
	cfg lab.Config
	cl  client.Client
	// vip4 and vip6 are the demo Service's IPs.
	vip4, vip6 netip.Addr
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipped: the lab needs root (network namespaces, veths, raw sockets); CI runs it as root")
		os.Exit(0)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	cfg = lab.DefaultConfig(filepath.Join(root, ".lab"))
	cfg.Bin = filepath.Join(root, "bin")
	cfg.K8sBin = filepath.Join(root, "bin", "k8s")
	if v := os.Getenv("IRONLB_K8S_BIN"); v != "" {
		cfg.K8sBin = v
	}
	// IRONLB_E2E_DATAPLANE=kernel runs the suite with the speakers only
	// announcing and kube-proxy forwarding (the fallback users are
	// offered); tests that need the XDP data plane skip.
	if v := os.Getenv("IRONLB_E2E_DATAPLANE"); v != "" {
		cfg.Dataplane = v
	}
	ctx := context.Background()
	ips, err := cfg.Up(ctx, root, os.Stdout)
	if err != nil {
		fmt.Println("e2e: lab up:", err)
		_ = lab.Down(ctx, cfg.Dir)
		return 1
	}
	for _, ip := range ips {
		if ip.Is4() {
			vip4 = ip
		} else {
			vip6 = ip
		}
	}
	if cl, err = cfg.Client(); err != nil {
		fmt.Println(err)
		return 1
	}
	code := m.Run()
	if !runLast() && code == 0 {
		code = 1
	}
	if code != 0 {
		fmt.Printf("e2e: failed; logs are in %s/logs\n", cfg.Dir)
	}
	if os.Getenv("IRONLB_E2E_KEEP") == "" {
		if err := lab.Down(ctx, cfg.Dir); err != nil {
			fmt.Println("e2e: lab down:", err)
			return 1
		}
		// Down leaves nothing: no namespace (and so no link), no process.
		left, err := lab.Leftovers(ctx, cfg.Dir)
		if err != nil || len(left) > 0 {
			fmt.Printf("e2e: FAIL: lab down left %v (%v)\n", left, err)
			return 1
		}
		fmt.Println("e2e: lab down left no namespace, link or process behind")
	}
	return code
}

// last are the tests that run after all the others, in this order (an
// explicit order, not their names' or files'): the RBAC check reads the
// daemons' logs of the whole run, before the outage, whose restarted API
// server refuses everyone until its RBAC caches fill; the outage leaves
// the controller without its Lease for a while.
var last = []testing.InternalTest{
	{Name: "TestNoRBACRefusals", F: noRBACRefusals},
	{Name: "TestAPIServerOutage", F: apiServerOutage},
}

// runLast runs last with go test's flags (-run, -skip, -v...) and tells
// whether they passed.
func runLast() bool {
	match := func(pat, name string) (bool, error) { return regexp.MatchString(pat, name) }
	// Only when -run selects one of them: RunTests warns about an empty run.
	pat := strings.Split(flag.Lookup("test.run").Value.String(), "/")[0]
	if !slices.ContainsFunc(last, func(t testing.InternalTest) bool { ok, _ := match(pat, t.Name); return ok }) {
		return true
	}
	return testing.RunTests(match, last)
}

// eventually polls cond every 100 ms until it returns nil or limit passes.
func eventually(t *testing.T, limit time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// announcers returns the nodes with an L2 Announcement of the IP for the
// Service.
func announcers(ctx context.Context, svc string, ip netip.Addr) ([]string, error) {
	var list ironlbv1alpha1.AnnouncementList
	if err := cl.List(ctx, &list, client.InNamespace("default")); err != nil {
		return nil, err
	}
	var out []string
	for _, a := range list.Items {
		if a.Spec.Service == svc && a.Spec.IP == ip.String() && a.Spec.Protocol == ironlbv1alpha1.ProtocolL2 {
			out = append(out, a.Spec.Node)
		}
	}
	slices.Sort(out)
	return out, nil
}

// oneAnnouncer waits until exactly one node announces the IP, and returns it.
func oneAnnouncer(t *testing.T, svc string, ip netip.Addr, want func(string) error) string {
	t.Helper()
	var node string
	eventually(t, 20*time.Second, func() error {
		got, err := announcers(t.Context(), svc, ip)
		if err != nil {
			return err
		}
		if len(got) != 1 {
			return fmt.Errorf("%s of %s is announced by %v, want exactly one node", ip, svc, got)
		}
		if want != nil {
			if err := want(got[0]); err != nil {
				return err
			}
		}
		node = got[0]
		return nil
	})
	return node
}

// forbidden returns the lines of the daemons' logs where the API server
// refused them. Every daemon's log must be there: a log that cannot be
// read would otherwise count as a clean one.
func forbidden(dir string, nodes []lab.Node) ([]string, error) {
	names := []string{"controller.log"}
	for _, n := range nodes {
		names = append(names, lab.SpeakerName(n)+".log")
	}
	var out []string
	for _, base := range names {
		b, err := os.ReadFile(filepath.Join(dir, "logs", base))
		if err != nil {
			return nil, err
		}
		if len(b) == 0 {
			return nil, fmt.Errorf("%s is empty", base)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "is forbidden") {
				out = append(out, base+": "+line)
			}
		}
	}
	return out, nil
}
