package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/pkg/lab"
)

func ironlbctl(t *testing.T, ns string, args ...string) (string, string, int) {
	t.Helper()
	argv := append([]string{filepath.Join(cfg.Bin, "ironlbctl"), "--kubeconfig", cfg.Kubeconfig()}, args...)
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	cmd := exec.CommandContext(t.Context(), argv[0], argv[1:]...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// TestIronlbctl: status shows the lab's pool, the demo Service with who
// announces it, and the BGP sessions; dataplane dump shows a node's VIPs,
// ring shares and conntrack; kubectl-ironlb is the same program.
func TestIronlbctl(t *testing.T) {
	waitSessions(t, 30*time.Second)
	eventually(t, 20*time.Second, func() error {
		out, errOut, code := ironlbctl(t, "", "status")
		if code != 0 && code != 3 {
			return fmt.Errorf("status exited %d: %s", code, errOut)
		}
		for _, want := range []string{"lab ", "default/demo", vip4.String(), "L2 by node-", "on eth0", "router-v4", "Established"} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("status lacks %q:\n%s", want, out)
			}
		}
		return nil
	})
	if cfg.Dataplane == "xdp" {
		// On the node itself (--local): the debug endpoint is on its
		// loopback only. (Through the API server, ironlbctl
		// port-forwards to the speaker pod, which needs a kubelet.)
		out, errOut, code := ironlbctl(t, "lab-node-b", "dataplane", "dump", "--node", "node-b", "--local")
		if code != 0 {
			t.Fatalf("dataplane dump exited %d: %s", code, errOut)
		}
		for _, want := range []string{"node node-b (10.89.0.12", "conntrack tier1", vip4.String() + ":80/TCP", "10.89.0.11=", "10.244."} {
			if !strings.Contains(out, want) {
				t.Errorf("dump lacks %q:\n%s", want, out)
			}
		}
		// From the network it is not there: not on the debug port, not
		// beside /metrics.
		b := nodeNamed(t, "node-b")
		if c, err := lab.DialIn(t.Context(), lab.ClientNS, "tcp", netip.AddrPortFrom(b.IPv4, 7476).String()); err == nil {
			_ = c.Close()
			t.Error("lab-client connects to node-b's debug port")
		}
		hc := clientHTTP()
		resp, err := hc.Get("http://" + netip.AddrPortFrom(b.IPv4, 7473).String() + "/debug/dataplane")
		if err != nil {
			t.Fatalf("metrics port: %v", err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("the metrics port answers /debug/dataplane with %s, want 404", resp.Status)
		}
	}
	plugin := exec.CommandContext(t.Context(), filepath.Join(cfg.Bin, "kubectl-ironlb"), "--kubeconfig", cfg.Kubeconfig(), "status")
	if out, err := plugin.Output(); !strings.Contains(string(out), "default/demo") {
		t.Errorf("kubectl-ironlb status: %v\n%s", err, out)
	}
}

// TestConvertMetalLB: what ironlbctl makes of MetalLB's configuration is
// accepted by the API server (server-side apply, dry run).
func TestConvertMetalLB(t *testing.T) {
	out, errOut, code := ironlbctl(t, "", "convert", "metallb", filepath.Join("..", "pkg", "convert", "testdata", "metallb.yaml"))
	if code != 0 {
		t.Fatalf("convert exited %d: %s", code, errOut)
	}
	// MetalLB's BFDProfile is inlined into the peer (and admitted below),
	// what has no counterpart reported.
	if !strings.Contains(errOut, "note: BGPPeer peer-a: BFDProfile fast's echoMode is not supported") {
		t.Errorf("the report lacks the BFD profile's echo mode:\n%s", errOut)
	}
	if !strings.Contains(out, "detectMultiplier: 5") {
		t.Errorf("the BFD profile was not inlined:\n%s", out)
	}
	dec := yaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	n := 0
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("after %d objects, the output does not decode: %v\n%s", n, err, out)
		}
		if len(u.Object) == 0 {
			continue
		}
		n++
		err := cl.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(u),
			client.FieldOwner("ironlb-e2e-convert"), client.ForceOwnership, client.DryRunAll)
		if err != nil {
			t.Errorf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	if n != 8 {
		t.Errorf("%d objects converted, want 8:\n%s", n, out)
	}
}
