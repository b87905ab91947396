package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/pkg/lab"
)

// documented returns the metric names docs/configuration.md lists under a
// heading (the tables of "## Metrics (speaker)" or "(controller)").
func documented(t *testing.T, heading string) []string {
	t.Helper()
	b, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, heading)
	if i < 0 {
		t.Fatalf("docs/configuration.md has no %q", heading)
	}
	doc = doc[i+len(heading):]
	if j := strings.Index(doc, "\n## "); j >= 0 {
		doc = doc[:j]
	}
	var out []string
	for _, m := range regexp.MustCompile("`(ironlb_[a-z0-9_]+)`").FindAllStringSubmatch(doc, -1) {
		out = append(out, m[1])
	}
	if len(out) == 0 {
		t.Fatalf("no metric under %q", heading)
	}
	return out
}

// scrape GETs a metrics endpoint, from inside namespace ns when not empty.
func scrape(t *testing.T, ns, addr string) string {
	t.Helper()
	s, err := tryScrape(ns, addr)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tryScrape is scrape for polling: a failure is an error to retry on.
func tryScrape(ns, addr string) (string, error) {
	tr := &http.Transport{}
	if ns != "" {
		tr.DialContext = func(ctx context.Context, network, a string) (net.Conn, error) {
			return lab.DialIn(ctx, ns, network, a)
		}
	}
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// value returns the value of the first sample of name whose labels
// contain all of the given label pairs.
func value(text, name string, labels ...string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		return v, err == nil
	}
	return 0, false
}

// TestMetrics scrapes the controller and a speaker: every metric the
// configuration reference documents is there, with sane values.
func TestMetrics(t *testing.T) {
	waitSessions(t, 30*time.Second)
	ctrl := scrape(t, "", "127.0.0.1:17472")
	for _, name := range documented(t, "## Metrics (controller)") {
		if _, ok := value(ctrl, name); !ok {
			t.Errorf("the controller exports no %s", name)
		}
	}
	if v, _ := value(ctrl, "ironlb_pool_addresses_total", `pool="lab"`, `family="IPv4"`); v != 254 {
		t.Errorf("ironlb_pool_addresses_total{pool=lab,family=IPv4} = %v, want 254", v)
	}
	if v, _ := value(ctrl, "ironlb_allocations_total", `result="success"`); v < 1 {
		t.Errorf("ironlb_allocations_total{result=success} = %v, want at least 1", v)
	}

	var sp string
	eventually(t, 20*time.Second, func() error {
		var err error
		if sp, err = tryScrape("lab-node-a", "127.0.0.1:7473"); err != nil {
			return err
		}
		if v, _ := value(sp, "ironlb_bgp_session_up", `peer="router-v4"`); v != 1 {
			return fmt.Errorf("ironlb_bgp_session_up{peer=router-v4} = %v", v)
		}
		return nil
	})
	for _, name := range documented(t, "## Metrics (speaker)") {
		if strings.HasPrefix(name, "ironlb_dataplane_") && cfg.Dataplane != "xdp" {
			continue
		}
		if strings.HasPrefix(name, "ironlb_bfd_session_") {
			continue // exported per peer with bfd: TestBGPLinkCut checks them
		}
		if _, ok := value(sp, name); !ok {
			t.Errorf("the speaker exports no %s", name)
		}
	}
	if v, _ := value(sp, "ironlb_members"); v != float64(cfg.Nodes) {
		t.Errorf("ironlb_members = %v, want %d", v, cfg.Nodes)
	}
	if cfg.Dataplane == "xdp" {
		if v, _ := value(sp, "ironlb_dataplane_conntrack_capacity", `table="tier1"`); v != 131072 {
			t.Errorf("ironlb_dataplane_conntrack_capacity{table=tier1} = %v, want 131072", v)
		}
		if _, ok := value(sp, "ironlb_dataplane_packets_total", `vip="`+vip4.String()+`"`); !ok {
			t.Errorf("no ironlb_dataplane_packets_total series for %s", vip4)
		}
	}
}
