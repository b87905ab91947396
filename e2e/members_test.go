package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/pkg/lab"
)

// The memberlist helper: the test binary run again inside lab-client
// (ip netns exec), so every socket memberlist opens, including the TCP
// ones of a join, is a host's on the node network that is no node.
const helperEnv = "IRONLB_E2E_MEMBERLIST"

// helperSpec is what the helper does; helperResult what it saw.
type helperSpec struct {
	Name      string
	Bind      string
	Advertise string
	// Key is a Secret value (the speakers hash it into their key); empty
	// means no encryption.
	Key     string
	Targets []string
	// Leaving makes the helper's metadata say "leaving".
	Leaving bool
	For     time.Duration
}

type helperResult struct {
	Joined     int
	JoinError  string
	MaxMembers int
}

// runHelper is called by TestMain in the helper process.
func runHelper() int {
	var spec helperSpec
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	c := memberlist.DefaultLANConfig()
	c.Name = spec.Name
	c.BindAddr, c.BindPort = spec.Bind, 7947
	c.AdvertiseAddr, c.AdvertisePort = spec.Advertise, 7947
	c.LogOutput = io.Discard
	if spec.Key != "" {
		sum := sha256.Sum256([]byte(spec.Key))
		ring, err := memberlist.NewKeyring(nil, sum[:])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		c.Keyring = ring
	}
	if spec.Leaving {
		c.Delegate = leavingDelegate{}
	}
	ml, err := memberlist.Create(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var res helperResult
	res.Joined, err = ml.Join(spec.Targets)
	if err != nil {
		res.JoinError = err.Error()
	}
	deadline := time.Now().Add(spec.For)
	for time.Now().Before(deadline) {
		res.MaxMembers = max(res.MaxMembers, ml.NumMembers())
		time.Sleep(50 * time.Millisecond)
	}
	_ = ml.Shutdown()
	_ = json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

type leavingDelegate struct{}

func (leavingDelegate) NodeMeta(int) []byte             { return []byte("leaving") }
func (leavingDelegate) NotifyMsg([]byte)                {}
func (leavingDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (leavingDelegate) LocalState(bool) []byte          { return nil }
func (leavingDelegate) MergeRemoteState([]byte, bool)   {}

// stranger runs the helper in lab-client against every node, and while it
// runs checks that every speaker still counts exactly the lab's nodes.
func stranger(t *testing.T, spec helperSpec) helperResult {
	t.Helper()
	for _, n := range cfg.NodeList() {
		spec.Targets = append(spec.Targets, netip.AddrPortFrom(n.IPv4, 7947).String())
	}
	if spec.Bind == "" {
		spec.Bind = lab.ClientIPv4
	}
	if spec.Advertise == "" {
		spec.Advertise = spec.Bind
	}
	spec.For = 2 * time.Second
	js, _ := json.Marshal(spec)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "ip", "netns", "exec", lab.ClientNS, self)
	cmd.Env = append(os.Environ(), helperEnv+"="+string(js))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for waiting := true; waiting; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("helper: %v: %s", err, errOut.String())
			}
			waiting = false
		case <-time.After(100 * time.Millisecond):
			for _, n := range cfg.NodeList() {
				if m, err := cfg.Members(t.Context(), n); err == nil && m != cfg.Nodes {
					t.Errorf("%s (key %v): %s counts %d members, want %d", spec.Name, spec.Key != "", n.Name, m, cfg.Nodes)
				}
			}
		}
	}
	var res helperResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("helper said %q: %v", out.String(), err)
	}
	return res
}

// ownerChanges sums every speaker's count of layer-2 owner changes.
func ownerChanges(t *testing.T) float64 {
	t.Helper()
	var sum float64
	for _, n := range cfg.NodeList() {
		v, _ := value(scrape(t, n.NS, "127.0.0.1:7473"), "ironlb_l2_owner_changes_total")
		sum += v
	}
	return sum
}

func memberKey(t *testing.T) *corev1.Secret {
	t.Helper()
	var sec corev1.Secret
	if err := cl.Get(t.Context(), client.ObjectKey{Namespace: lab.SystemNS, Name: "ironlb-memberlist"}, &sec); err != nil {
		t.Fatal(err)
	}
	return &sec
}

// TestMemberlistAuthenticated: a host without the key cannot join, under
// its own name or as a node, nor make a speaker count a member more or
// less, nor move an IP with a forged "leaving" for a real node; a holder
// of the key (a positive control: it does join) cannot either, because a
// "leaving" is believed only once the node stops answering. What the
// speakers send shows no node name.
func TestMemberlistAuthenticated(t *testing.T) {
	waitMembers(t)
	owner := oneAnnouncer(t, lab.DemoService, vip4, nil)
	before := ownerChanges(t)
	b := nodeNamed(t, "node-b")
	key := string(memberKey(t).Data["secretkey"])

	if r := stranger(t, helperSpec{Name: "mallory"}); r.Joined != 0 || r.MaxMembers != 1 {
		t.Errorf("without the key a stranger joined %d nodes and saw %d members", r.Joined, r.MaxMembers)
	}
	if r := stranger(t, helperSpec{Name: b.Name, Advertise: b.IPv4.String(), Leaving: true}); r.Joined != 0 || r.MaxMembers != 1 {
		t.Errorf("without the key a stranger posing as %s joined %d nodes and saw %d members", b.Name, r.Joined, r.MaxMembers)
	}
	r := stranger(t, helperSpec{Name: b.Name, Advertise: b.IPv4.String(), Key: key, Leaving: true})
	if r.Joined == 0 || r.MaxMembers < 2 {
		t.Fatalf("with the key the helper should reach the speakers (the control), joined %d: %s", r.Joined, r.JoinError)
	}
	if after := ownerChanges(t); after != before {
		t.Errorf("owner changes went from %v to %v: a forged leaving moved an IP", before, after)
	}
	if now := oneAnnouncer(t, lab.DemoService, vip4, nil); now != owner {
		t.Errorf("%s moved from %s to %s", vip4, owner, now)
	}

	// A capture of member traffic on a node's link.
	n := nodeNamed(t, "node-a")
	pcap := filepath.Join(t.TempDir(), "members.pcap")
	out, err := exec.CommandContext(t.Context(), "ip", "netns", "exec", n.NS,
		"timeout", "10", "tcpdump", "-i", "eth0", "-n", "-U", "-c", "40", "-w", pcap, "port", "7947").CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump: %v: %s", err, out)
	}
	raw, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) < 24+40*(16+42) {
		t.Fatalf("captured %d bytes: fewer than 40 member packets", len(raw))
	}
	for _, node := range cfg.NodeList() {
		if bytes.Contains(raw, []byte(node.Name)) {
			t.Errorf("member traffic shows the node name %q in plaintext", node.Name)
		}
	}
}

// TestMemberlistKeyRotation: replacing the key in the Secret, in one step,
// while connections flow, moves no IP and breaks no connection; then the
// old key opens nothing.
func TestMemberlistKeyRotation(t *testing.T) {
	waitMembers(t)
	owner := oneAnnouncer(t, lab.DemoService, vip4, nil)
	conns := openEchoes(t, vip4, 20)
	before := ownerChanges(t)
	sec := memberKey(t)
	old := string(sec.Data["secretkey"])
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	sec.Data["secretkey"] = []byte(base64.StdEncoding.EncodeToString(raw))
	if err := cl.Update(t.Context(), sec); err != nil {
		t.Fatal(err)
	}
	rv := `resource_version="` + sec.ResourceVersion + `"`
	start := time.Now()
	eventually(t, 60*time.Second, func() error {
		for _, n := range cfg.NodeList() {
			m, err := tryScrape(n.NS, "127.0.0.1:7473")
			if err != nil {
				return err
			}
			if v, _ := value(m, "ironlb_members"); v != float64(cfg.Nodes) {
				t.Errorf("during the rotation %s counts %v members", n.Name, v)
			}
			keys, _ := value(m, "ironlb_memberlist_keys")
			pending, _ := value(m, "ironlb_memberlist_key_rotation_pending")
			applied, _ := value(m, "ironlb_memberlist_key_secret_info", rv)
			if keys != 1 || pending != 0 || applied != 1 {
				return fmt.Errorf("%s: %v keys, pending %v, Secret %s applied %v", n.Name, keys, pending, sec.ResourceVersion, applied)
			}
		}
		return nil
	})
	t.Logf("rotation done on every speaker in %s", time.Since(start).Round(time.Millisecond))
	checkEchoes(t, conns, "a key rotation")
	if after := ownerChanges(t); after != before {
		t.Errorf("owner changes went from %v to %v during a key rotation", before, after)
	}
	if now := oneAnnouncer(t, lab.DemoService, vip4, nil); now != owner {
		t.Errorf("%s moved from %s to %s during a key rotation", vip4, owner, now)
	}
	if r := stranger(t, helperSpec{Name: "old-key", Key: old}); r.Joined != 0 || r.MaxMembers != 1 {
		t.Errorf("the retired key still joins: %d nodes, %d members", r.Joined, r.MaxMembers)
	}
}

// TestSpeakerRefusesWithoutKey: a speaker whose memberlist Secret does not
// exist exits, saying why and how to fix it, without joining anything or
// touching the node's data plane.
func TestSpeakerRefusesWithoutKey(t *testing.T) {
	n := nodeNamed(t, "node-c")
	bpffs := t.TempDir()
	cmd := exec.CommandContext(t.Context(), "ip", "netns", "exec", n.NS, filepath.Join(cfg.Bin, "ironlb-speaker"),
		"--kubeconfig", cfg.DaemonKubeconfig("ironlb-speaker"),
		"--node-name", n.Name,
		"--bpffs", bpffs,
		"--interfaces", "eth0",
		"--metrics-addr", "0", "--health-addr", "0", "--debug-addr", "0",
		"--memberlist-secret-name", "no-such-secret",
		"--memberlist-key-wait", "2s")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the speaker ran without a key:\n%s", out)
	}
	for _, want := range []string{"no memberlist key", "no-such-secret", "--memberlist-insecure"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("its output does not say %q:\n%s", want, out)
		}
	}
	if entries, _ := os.ReadDir(bpffs); len(entries) != 0 {
		t.Errorf("it touched the data plane: %d entries in its bpffs", len(entries))
	}
}
