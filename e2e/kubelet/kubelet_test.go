// Package kubelet runs ironlb as a user installs it, in the kubelet lab
// (ironlb-lab up --kubelet): a real containerd and kubelet in every node,
// kube-controller-manager and kube-scheduler, the images `make images`
// built imported into each node, and the kustomize base applied as
// `kubectl apply --server-side -k manifests/` does. Nothing here writes a
// Node's status or an EndpointSlice: readiness, rollouts and node death
// come from Kubernetes itself. It needs root.
package kubelet

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/client-go/kubernetes"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/lab"
)

var (
	cfg        lab.Config
	cl         client.Client
	root       string
	vip4, vip6 netip.Addr
)

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	if os.Geteuid() != 0 {
		fmt.Println("e2e/kubelet: skipped: the lab needs root; CI runs it as root")
		os.Exit(0)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if root, err = filepath.Abs("../.."); err != nil {
		fmt.Println(err)
		return 1
	}
	cfg = lab.DefaultConfig(filepath.Join(root, ".lab"))
	cfg.Bin = filepath.Join(root, "bin")
	cfg.K8sBin = filepath.Join(root, "bin", "k8s")
	if v := os.Getenv("IRONLB_K8S_BIN"); v != "" {
		cfg.K8sBin = v
	}
	cfg.Kubelet = true
	cfg.Images = filepath.Join(root, "_output", "images")
	ctx := context.Background()
	start := time.Now()
	ips, err := cfg.Up(ctx, root, os.Stdout)
	if err != nil {
		fmt.Println("e2e/kubelet: lab up:", err)
		fmt.Printf("e2e/kubelet: logs are in %s/logs\n", cfg.Dir)
		_ = lab.Down(ctx, cfg.Dir)
		return 1
	}
	fmt.Printf("e2e/kubelet: lab up, ironlb installed and the demo VIP answering in %s\n", time.Since(start).Round(100*time.Millisecond))
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
	if code != 0 {
		fmt.Printf("e2e/kubelet: failed; logs are in %s/logs\n", cfg.Dir)
	}
	if os.Getenv("IRONLB_E2E_KEEP") == "" {
		if err := lab.Down(ctx, cfg.Dir); err != nil {
			fmt.Println("e2e/kubelet: lab down:", err)
			return 1
		}
		left, err := lab.Leftovers(ctx, cfg.Dir)
		if err != nil || len(left) > 0 {
			fmt.Printf("e2e/kubelet: FAIL: lab down left %v (%v)\n", left, err)
			return 1
		}
		fmt.Println("e2e/kubelet: lab down left no namespace, process, cgroup, mount or node folder behind")
	}
	return code
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

// Capability numbers (linux/capability.h).
const (
	capNetAdmin = 12
	capNetRaw   = 13
	capPerfmon  = 38
	capBPF      = 39
)

// procIn finds the process named comm whose network namespace is ns's
// (a lab namespace) or, with ns empty, any.
func procIn(t *testing.T, comm, ns string) []int {
	t.Helper()
	var want uint64
	if ns != "" {
		st, err := os.Stat("/run/netns/" + ns)
		if err != nil {
			t.Fatal(err)
		}
		want = inode(st)
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []int
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || strings.TrimSpace(string(b)) != comm {
			continue
		}
		if ns != "" {
			st, err := os.Stat(filepath.Join(d, "ns", "net"))
			if err != nil || inode(st) != want {
				continue
			}
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		out = append(out, pid)
	}
	return out
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// status reads a field of /proc/PID/status.
func status(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

// TestInstalledAsShipped: the kustomize base, applied as a user applies
// it, runs on real kubelets with the shipped securityContext: the
// controller's two replicas as uid 65532 with no capability, a speaker on
// every node as root with exactly NET_ADMIN, NET_RAW, BPF and PERFMON and
// no privilege escalation, XDP attached to every node's eth0, and the
// demo VIP answering from every backend with the client's own address
// (forwarded by XDP: kube-proxy's Cluster path would masquerade the
// traffic it sends to another node).
func TestInstalledAsShipped(t *testing.T) {
	ctx := t.Context()
	if err := lab.WaitInstalled(ctx, cl, cfg.Nodes, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// comm holds the first 15 bytes of the name.
	ctrl := procIn(t, "ironlb-controller"[:15], "")
	if len(ctrl) != 2 {
		t.Fatalf("%d ironlb-controller processes on the machine, want the Deployment's 2", len(ctrl))
	}
	for _, pid := range ctrl {
		if uid := strings.Fields(status(t, pid, "Uid")); uid[1] != "65532" {
			t.Errorf("controller %d runs as uid %v, want 65532", pid, uid)
		}
		if c := status(t, pid, "CapEff"); c != "0000000000000000" {
			t.Errorf("controller %d has capabilities %s, want none", pid, c)
		}
	}
	wantCaps := fmt.Sprintf("%016x", uint64(1)<<capNetAdmin|1<<capNetRaw|1<<capPerfmon|1<<capBPF)
	for _, n := range cfg.NodeList() {
		pids := procIn(t, "ironlb-speaker", n.NS)
		if len(pids) != 1 {
			t.Fatalf("%d speakers in %s, want 1", len(pids), n.NS)
		}
		pid := pids[0]
		if c := status(t, pid, "CapEff"); c != wantCaps {
			t.Errorf("speaker on %s has capabilities %s, want %s (NET_ADMIN, NET_RAW, BPF, PERFMON)", n.Name, c, wantCaps)
		}
		if v := status(t, pid, "NoNewPrivs"); v != "1" {
			t.Errorf("speaker on %s: NoNewPrivs %s, want 1 (allowPrivilegeEscalation: false)", n.Name, v)
		}
		out, err := exec.CommandContext(ctx, "ip", "-n", n.NS, "link", "show", "eth0").CombinedOutput()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "ironlb_xdp") {
			t.Errorf("%s: no ironlb XDP program on eth0: %s", n.Name, out)
		}
		if _, err := os.Stat(filepath.Join(cfg.PinDir(n), "link_xdp_eth0")); err != nil {
			t.Errorf("%s: the speaker's pins are not in the node's bpffs: %v", n.Name, err)
		}
	}
	var pods corev1.PodList
	if err := cl.List(ctx, &pods, client.InNamespace("default"), client.MatchingLabels{"app": lab.DemoService}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, p := range pods.Items {
		want[p.Name] = true
	}
	if len(want) != lab.PodsPerNode*cfg.Nodes {
		t.Fatalf("%d demo pods, want %d", len(want), lab.PodsPerNode*cfg.Nodes)
	}
	for _, vip := range []netip.Addr{vip4, vip6} {
		client := lab.ClientIPv4
		if vip.Is6() {
			client = lab.ClientIPv6
		}
		// Each request is a new connection from a new port: Maglev
		// spreads them over every pod.
		seen := map[string]bool{}
		eventually(t, 30*time.Second, func() error {
			body, err := cfg.Get(ctx, vip)
			if err != nil {
				return err
			}
			f := strings.Fields(body)
			if len(f) != 2 || !want[f[0]] || f[1] != client {
				t.Fatalf("http://%s/ answered %q, want a demo pod and the client's address %s", vip, body, client)
			}
			seen[f[0]] = true
			if len(seen) < len(want) {
				return fmt.Errorf("http://%s/: answers from %d of %d pods", vip, len(seen), len(want))
			}
			return nil
		})
	}
}

// TestImagesReproducible: the speaker and controller images that run on
// the nodes are the ones the source gives. The binaries are built again
// from this tree and packed again by the image tool with the same inputs
// as make images (the commit's time and hash); the image IDs (config
// digests) must equal those of the images the pods run, as the kubelet
// reports them.
func TestImagesReproducible(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	gobuild := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", bin+"/",
		"./cmd/ironlb-controller", "./cmd/ironlb-speaker", "./cmd/ironlbctl")
	gobuild.Dir = root
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	git := func(args ...string) string {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("git %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	tool := exec.CommandContext(ctx, "go", "run", ".", "--bin", bin, "--out", filepath.Join(dir, "out"),
		"--repo", "ghcr.io/ironlb", "--tag", lab.ImageTag, "--revision", git("rev-parse", "HEAD"))
	tool.Dir = filepath.Join(root, "hack", "tools", "images")
	tool.Env = append(os.Environ(), "SOURCE_DATE_EPOCH="+git("log", "-1", "--format=%ct"))
	out, err := tool.CombinedOutput()
	if err != nil {
		t.Fatalf("images tool: %v: %s", err, out)
	}
	want := map[string]string{} // image name -> image ID
	for _, line := range strings.Split(string(out), "\n") {
		ref, _, ok := strings.Cut(line, "@")
		_, id, ok2 := strings.Cut(line, "(image ID ")
		if ok && ok2 {
			want[ref] = strings.TrimSuffix(id, ")")
		}
	}
	var pods corev1.PodList
	if err := cl.List(ctx, &pods, client.InNamespace(lab.SystemNS)); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, p := range pods.Items {
		for _, cs := range p.Status.ContainerStatuses {
			w, ok := want[strings.TrimPrefix(cs.Image, "docker.io/")]
			if !ok {
				continue
			}
			checked++
			if got := cs.ImageID[strings.LastIndex(cs.ImageID, "sha256:"):]; got != w {
				t.Errorf("%s runs %s as %s; rebuilt from the source it is %s", p.Name, cs.Image, cs.ImageID, w)
			}
		}
	}
	if checked < cfg.Nodes+2 {
		t.Fatalf("compared %d containers (images %v), want the %d speakers and 2 controllers", checked, want, cfg.Nodes)
	}
}

// TestDataplaneDumpThroughAPIServer: `ironlbctl dataplane dump --node N`
// reaches the speaker's loopback-only debug endpoint through the API
// server and the node's kubelet, as kubectl port-forward does, with the
// caller's own RBAC: a user who may read pods but not port-forward gets
// nothing.
func TestDataplaneDumpThroughAPIServer(t *testing.T) {
	ctx := t.Context()
	for _, n := range cfg.NodeList() {
		out, errOut, code := ironlbctl(t, cfg.Kubeconfig(), "dataplane", "dump", "--node", n.Name)
		if code != 0 {
			t.Fatalf("dataplane dump --node %s: exit %d: %s", n.Name, code, errOut)
		}
		for _, want := range []string{"node " + n.Name + " (" + n.IPv4.String(), vip4.String() + ":80/TCP", "[" + vip6.String() + "]:80/TCP", "conntrack tier1"} {
			if !strings.Contains(out, want) {
				t.Errorf("dump of %s lacks %q:\n%s", n.Name, want, out)
			}
		}
	}
	// A user with get and list on pods only.
	const sa = "pod-reader"
	objs := []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: sa}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: lab.SystemNS, Name: sa},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: lab.SystemNS, Name: sa},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: sa},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "default", Name: sa}}},
	}
	for _, o := range objs {
		if err := cl.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cl.Delete(context.WithoutCancel(ctx), o) }()
	}
	rc, err := cfg.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts("default").CreateToken(ctx, sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := os.ReadFile(cfg.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	kc := string(admin)
	i := strings.Index(kc, "token: ")
	j := strings.Index(kc[i:], "\n")
	kc = kc[:i] + "token: " + tr.Status.Token + kc[i+j:]
	readerKC := filepath.Join(t.TempDir(), "reader.kubeconfig")
	if err := os.WriteFile(readerKC, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := ironlbctl(t, readerKC, "dataplane", "dump", "--node", "node-a")
	if code == 0 || strings.Contains(out, "conntrack") {
		t.Fatalf("a user without pods/portforward got a dump (exit %d):\n%s", code, out)
	}
	if !strings.Contains(strings.ToLower(errOut), "forbidden") {
		t.Errorf("the refusal does not say forbidden: %s", errOut)
	}
}

func ironlbctl(t *testing.T, kubeconfig string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(cfg.Bin, "ironlbctl"), append([]string{"--kubeconfig", kubeconfig}, args...)...)
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

// echoConn is a long-lived TCP connection to the demo's echo port.
type echoConn struct {
	conn net.Conn
	r    *bufio.Reader
	pod  string
	n    int
}

func dialEcho(t *testing.T, vip netip.Addr) *echoConn {
	t.Helper()
	conn, err := lab.DialIn(t.Context(), lab.ClientNS, "tcp", net.JoinHostPort(vip.String(), "7"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	e := &echoConn{conn: conn, r: bufio.NewReader(conn)}
	if err := e.exchange(); err != nil {
		t.Fatal(err)
	}
	return e
}

// exchange sends a line and reads its echo; the same pod must answer.
func (e *echoConn) exchange() error {
	e.n++
	_ = e.conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(e.conn, "line %d\n", e.n); err != nil {
		return err
	}
	line, err := e.r.ReadString('\n')
	if err != nil {
		return err
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[2] != strconv.Itoa(e.n) {
		return fmt.Errorf("echo answered %q", line)
	}
	if e.pod != "" && f[0] != e.pod {
		return fmt.Errorf("answered by %s, then by %s", e.pod, f[0])
	}
	e.pod = f[0]
	return nil
}

// TestRollingUpdateKeepsConnections: a rolling update of the speaker
// DaemonSet to a second image tag (built by the same tool, imported into
// every node) replaces every speaker, one node at a time, while 50
// established TCP connections through the VIP keep exchanging data with
// no reset, and the Service's IPs never change.
func TestRollingUpdateKeepsConnections(t *testing.T) {
	ctx := t.Context()
	const tag = "v0.1.0-next"
	dir := t.TempDir()
	build := exec.CommandContext(ctx, "go", "run", ".", "--bin", filepath.Join(cfg.Images, "bin"), "--out", dir, "--tag", tag, "--epoch", "1")
	build.Dir = filepath.Join(root, "hack", "tools", "images")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the second tag: %v: %s", err, out)
	}
	for _, n := range cfg.NodeList() {
		if err := cfg.ImportImages(ctx, n, dir, "ironlb-speaker.tar"); err != nil {
			t.Fatal(err)
		}
	}
	before := serviceIPs(t)
	oldPods := speakerPods(t)
	conns := make([]*echoConn, 50)
	for i := range conns {
		conns[i] = dialEcho(t, vip4)
	}
	var ds appsv1.DaemonSet
	if err := cl.Get(ctx, types.NamespacedName{Namespace: lab.SystemNS, Name: "ironlb-speaker"}, &ds); err != nil {
		t.Fatal(err)
	}
	oldImage := ds.Spec.Template.Spec.Containers[0].Image
	newImage := strings.Replace(oldImage, ":"+lab.ImageTag, ":"+tag, 1)
	if newImage == oldImage {
		t.Fatalf("image %s does not carry the tag %s", oldImage, lab.ImageTag)
	}
	ds.Spec.Template.Spec.Containers[0].Image = newImage
	start := time.Now()
	if err := cl.Update(ctx, &ds); err != nil {
		t.Fatal(err)
	}
	rounds := 0
	deadline := time.Now().Add(3 * time.Minute)
	for {
		rounds++
		for i, c := range conns {
			if err := c.exchange(); err != nil {
				t.Fatalf("connection %d (pod %s) broke during the rollout, round %d, %s in: %v", i, c.pod, rounds, time.Since(start).Round(time.Millisecond), err)
			}
		}
		if got := serviceIPs(t); !slices.Equal(got, before) {
			t.Fatalf("the Service's IPs changed during the rollout: %v, then %v", before, got)
		}
		if lab.DaemonSetRolledOut(ctx, cl, cfg.Nodes) == nil && speakersOn(t, newImage) == cfg.Nodes {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rollout did not finish in 3 minutes: %v", lab.DaemonSetRolledOut(ctx, cl, cfg.Nodes))
		}
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(start)
	for _, p := range speakerPods(t) {
		if slices.Contains(oldPods, p) {
			t.Errorf("speaker pod %s was not replaced", p)
		}
	}
	for i, c := range conns {
		if err := c.exchange(); err != nil {
			t.Fatalf("connection %d broke after the rollout: %v", i, err)
		}
	}
	t.Logf("FIGURE rolling update of %d speakers: %s, %d connections x %d exchanges, none reset, IPs %v unchanged", cfg.Nodes, took.Round(100*time.Millisecond), len(conns), rounds, before)
}

func serviceIPs(t *testing.T) []netip.Addr {
	t.Helper()
	var svc corev1.Service
	if err := cl.Get(t.Context(), types.NamespacedName{Namespace: "default", Name: lab.DemoService}, &svc); err != nil {
		t.Fatal(err)
	}
	return lab.ServiceIPs(&svc)
}

func speakerList(t *testing.T) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := cl.List(t.Context(), &pods, client.InNamespace(lab.SystemNS), client.MatchingLabels{"app.kubernetes.io/component": "speaker"}); err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

func speakerPods(t *testing.T) []string {
	var out []string
	for _, p := range speakerList(t) {
		out = append(out, p.Name)
	}
	return out
}

// speakersOn counts the ready speaker pods running image.
func speakersOn(t *testing.T, image string) int {
	n := 0
	for _, p := range speakerList(t) {
		if p.DeletionTimestamp != nil || p.Spec.Containers[0].Image != image {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				n++
			}
		}
	}
	return n
}

// announcer returns the node announcing ip by layer 2, once exactly one
// node other than the excluded ones does.
func announcer(t *testing.T, ip netip.Addr, exclude ...string) string {
	t.Helper()
	var node string
	eventually(t, 20*time.Second, func() error {
		var list ironlbv1alpha1.AnnouncementList
		if err := cl.List(t.Context(), &list, client.InNamespace("default")); err != nil {
			return err
		}
		var got []string
		for _, a := range list.Items {
			if a.Spec.IP == ip.String() && a.Spec.Protocol == ironlbv1alpha1.ProtocolL2 {
				got = append(got, a.Spec.Node)
			}
		}
		if len(got) != 1 {
			return fmt.Errorf("%s announced by %v, want one node", ip, got)
		}
		if slices.Contains(exclude, got[0]) {
			return fmt.Errorf("%s still announced by %s", ip, got[0])
		}
		node = got[0]
		return nil
	})
	return node
}

// udpEcho sends one datagram to the demo's UDP echo from a new socket and
// waits up to wait for the answer.
func udpEcho(ctx context.Context, vip netip.Addr, wait time.Duration) error {
	conn, err := lab.DialIn(ctx, lab.ClientNS, "udp", net.JoinHostPort(vip.String(), "7"))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	if _, err := conn.Write([]byte("probe")); err != nil {
		return err
	}
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if !strings.HasSuffix(string(buf[:n]), " probe") {
		return fmt.Errorf("UDP echo answered %q", buf[:n])
	}
	return nil
}

// TestNodeDeath cuts the link of the node announcing the VIP, as a pulled
// cable (or a dead machine) would: the kubelet stops reporting, the
// speaker stops answering memberlist. The VIP moves to another node by
// memberlist well before Kubernetes marks the Node NotReady, and
// connections to pods on the surviving nodes survive.
func TestNodeDeath(t *testing.T) {
	ctx := t.Context()
	owner := announcer(t, vip4)
	n, _ := cfg.NodeByName(owner)
	podNode := map[string]string{}
	var pods corev1.PodList
	if err := cl.List(ctx, &pods, client.InNamespace("default"), client.MatchingLabels{"app": lab.DemoService}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		podNode[p.Name] = p.Spec.NodeName
	}
	var survivors []*echoConn
	for len(survivors) < 10 {
		c := dialEcho(t, vip4)
		if podNode[c.pod] != owner {
			survivors = append(survivors, c)
		}
	}
	t0 := time.Now()
	if err := cfg.CutLink(ctx, n); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := cfg.RestoreLink(context.WithoutCancel(ctx), n); err != nil {
				t.Error(err)
			}
		}
	}
	defer restore()
	// A UDP echo every 20 ms, each from a new port (a new flow), until
	// one is answered: through another node, the only way left.
	var failover time.Duration
	deadline := time.Now().Add(30 * time.Second)
	for failover == 0 {
		if udpEcho(ctx, vip4, 20*time.Millisecond) == nil {
			failover = time.Since(t0)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the VIP did not answer through another node within 30 s of %s's link going down", owner)
		}
	}
	// The new owner records its Announcement after it answers ARP, and
	// the dead node's record goes after that: poll for it.
	newOwner := announcer(t, vip4, owner)
	recorded := time.Since(t0)
	for i, c := range survivors {
		if err := c.exchange(); err != nil {
			t.Errorf("connection %d to %s (on %s, alive) broke when %s died: %v", i, c.pod, podNode[c.pod], owner, err)
		}
	}
	var notReady time.Duration
	eventually(t, 2*time.Minute, func() error {
		var node corev1.Node
		if err := cl.Get(ctx, types.NamespacedName{Name: owner}, &node); err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
				notReady = time.Since(t0)
				return nil
			}
		}
		return fmt.Errorf("%s is still Ready", owner)
	})
	if notReady < 2*failover {
		t.Errorf("failover took %s, NotReady came after %s: want the VIP to move well before Kubernetes notices", failover, notReady)
	}
	t.Logf("FIGURE node death (link cut of %s): VIP answering through another node after %s; Announcement on %s after %s; Node NotReady after %s (%.0fx later)", owner, failover.Round(time.Millisecond), newOwner, recorded.Round(time.Millisecond), notReady.Round(100*time.Millisecond), float64(notReady)/float64(failover))
	restore()
	if err := lab.WaitNodesReady(ctx, cl, cfg.Nodes, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitInstalled(ctx, cl, cfg.Nodes, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// TestUninstall (last: it removes ironlb): `kubectl delete -k manifests/`
// leaves nothing behind. The speakers see their namespace terminating and,
// as they stop, detach XDP and TC and remove their pins and neighbour
// entries; BGP routes are withdrawn; the controller lets go of every
// Service (finalizer and status) and pool, so the CRDs and the namespace
// go away and a Service can be deleted afterwards.
func TestUninstall(t *testing.T) {
	ctx := t.Context()
	// A Service in the BGP pool, so that there are routes to withdraw.
	bgp := lab.DemoServiceObject("bgp")
	bgp.Annotations = map[string]string{"ironlb.dev/ip-pool": lab.BGPPool}
	bgp.Spec.IPFamilyPolicy = new(corev1.IPFamilyPolicySingleStack)
	bgp.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	if err := cl.Create(ctx, bgp); err != nil {
		t.Fatal(err)
	}
	ips, err := lab.WaitServiceIPs(ctx, cl, types.NamespacedName{Namespace: "default", Name: "bgp"}, 1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	route := ips[0].String() + "/32"
	eventually(t, 30*time.Second, func() error {
		if cfg.BirdRoute(ctx, route) == "" {
			return fmt.Errorf("BIRD has no route to %s", route)
		}
		return nil
	})
	start := time.Now()
	if err := lab.DeleteKustomize(ctx, cfg, filepath.Join(root, "manifests")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, func() error {
		var ns corev1.Namespace
		if err := cl.Get(ctx, types.NamespacedName{Name: lab.SystemNS}, &ns); err == nil {
			return fmt.Errorf("namespace %s is still there (%s)", lab.SystemNS, ns.Status.Phase)
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		crd := &unstructured.Unstructured{}
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		if err := cl.Get(ctx, types.NamespacedName{Name: "ippools.ironlb.dev"}, crd); err == nil {
			var held []string
			var pools ironlbv1alpha1.IPPoolList
			if err := cl.List(ctx, &pools); err == nil {
				for _, p := range pools.Items {
					held = append(held, fmt.Sprintf("%s %v", p.Name, p.Finalizers))
				}
			}
			return fmt.Errorf("the IPPool CRD is still there; pools: %v", held)
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		return nil
	})
	t.Logf("FIGURE uninstall: namespace and CRDs gone %s after kubectl delete -k", time.Since(start).Round(100*time.Millisecond))
	for _, name := range []string{lab.DemoService, "bgp"} {
		var svc corev1.Service
		if err := cl.Get(ctx, types.NamespacedName{Namespace: "default", Name: name}, &svc); err != nil {
			t.Fatal(err)
		}
		if len(svc.Finalizers) > 0 || len(svc.Status.LoadBalancer.Ingress) > 0 {
			t.Errorf("Service %s after the uninstall: finalizers %v, ingress %v; want none (nobody serves it)", name, svc.Finalizers, svc.Status.LoadBalancer.Ingress)
		}
	}
	nothingLeftOnNodes(t, append([]netip.Addr{vip4, vip6}, ips...))
	eventually(t, 30*time.Second, func() error {
		if r := cfg.BirdRoute(ctx, route); r != "" {
			return fmt.Errorf("BIRD still has a route to %s:\n%s", route, r)
		}
		return nil
	})
	// Without a finalizer left, Services delete at once.
	for _, name := range []string{lab.DemoService, "bgp"} {
		if err := cl.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, func() error {
		var svcs corev1.ServiceList
		if err := cl.List(ctx, &svcs, client.InNamespace("default")); err != nil {
			return err
		}
		for _, s := range svcs.Items {
			if s.Spec.Type == corev1.ServiceTypeLoadBalancer {
				return fmt.Errorf("Service %s is still there (finalizers %v)", s.Name, s.Finalizers)
			}
		}
		return nil
	})
}

// nothingLeftOnNodes checks that no speaker runs and that no node keeps an
// ironlb program on eth0, a pin, or a neighbour entry or address of vips.
func nothingLeftOnNodes(t *testing.T, vips []netip.Addr) {
	t.Helper()
	ctx := t.Context()
	for _, n := range cfg.NodeList() {
		eventually(t, 30*time.Second, func() error {
			if pids := procIn(t, "ironlb-speaker", n.NS); len(pids) > 0 {
				return fmt.Errorf("a speaker still runs on %s", n.Name)
			}
			return nil
		})
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", n.NS, "bpftool", "net", "show", "dev", "eth0").CombinedOutput()
		if err != nil {
			t.Fatalf("bpftool net on %s: %v: %s", n.Name, err, out)
		}
		if strings.Contains(string(out), "ironlb") {
			t.Errorf("%s: programs still attached to eth0:\n%s", n.Name, out)
		}
		if _, err := os.Stat(cfg.PinDir(n)); !os.IsNotExist(err) {
			t.Errorf("%s: pins left in %s (%v)", n.Name, cfg.PinDir(n), err)
		}
		for _, args := range [][]string{{"neigh", "show"}, {"-6", "neigh", "show"}, {"addr", "show"}} {
			out, err := exec.CommandContext(ctx, "ip", append([]string{"-n", n.NS}, args...)...).CombinedOutput()
			if err != nil {
				t.Fatal(err)
			}
			for _, vip := range vips {
				if strings.Contains(string(out), vip.String()+" ") {
					t.Errorf("%s: %s still mentions %s:\n%s", n.Name, strings.Join(args, " "), vip, out)
				}
			}
		}
	}
}

// TestHelm (after TestUninstall): the chart, installed with Helm's own
// library on the same cluster (helm install --create-namespace; the pool
// and advertisement from its values), serves a VIP through XDP; helm
// uninstall then leaves nothing: no speaker, program, pin, neighbour
// entry, pool or finalizer. Helm keeps, by design, the CRDs and a
// namespace it created with --create-namespace.
func TestHelm(t *testing.T) {
	ctx := t.Context()
	values := filepath.Join(t.TempDir(), "values.yaml")
	v := fmt.Sprintf(`ipPools:
- name: helm
  spec: {addresses: [%q, %q], avoidBuggyIPs: true}
l2Advertisements:
- name: helm
  spec: {ipPools: [helm]}
`, lab.PoolIPv4, "fd89:100::1-fd89:100::ff")
	if err := os.WriteFile(values, []byte(v), 0o600); err != nil {
		t.Fatal(err)
	}
	helm := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, "go", append([]string{"run", "./helm"}, append(args, "--kubeconfig", cfg.Kubeconfig(), "--namespace", lab.SystemNS, "--release", "ironlb")...)...)
		cmd.Dir = filepath.Join(root, "hack", "tools", "chart")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", args[0], err, out)
		}
		t.Logf("%s", bytes.TrimSpace(out))
	}
	start := time.Now()
	helm("install", "--create-namespace", "--chart", filepath.Join(root, "charts", "ironlb"), "--values", values)
	if err := lab.WaitInstalled(ctx, cl, cfg.Nodes, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := cl.Create(ctx, lab.DemoServiceObject(lab.DemoService)); err != nil {
		t.Fatal(err)
	}
	ips, err := lab.WaitServiceIPs(ctx, cl, types.NamespacedName{Namespace: "default", Name: lab.DemoService}, 2, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range ips {
		body, err := cfg.WaitHTTP(ctx, ip, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(body, lab.DemoService+"-") {
			t.Fatalf("http://%s/ answered %q", ip, body)
		}
	}
	t.Logf("FIGURE helm install: the VIP answered %s after helm install began", time.Since(start).Round(100*time.Millisecond))
	for _, n := range cfg.NodeList() {
		if _, err := os.Stat(filepath.Join(cfg.PinDir(n), "link_xdp_eth0")); err != nil {
			t.Fatalf("%s: no XDP link pinned after helm install: %v", n.Name, err)
		}
	}
	helm("uninstall")
	eventually(t, 2*time.Minute, func() error {
		var pools ironlbv1alpha1.IPPoolList
		if err := cl.List(ctx, &pools); err != nil {
			return err
		}
		if len(pools.Items) > 0 {
			return fmt.Errorf("pool %s is still there (finalizers %v)", pools.Items[0].Name, pools.Items[0].Finalizers)
		}
		return nil
	})
	var svc corev1.Service
	if err := cl.Get(ctx, types.NamespacedName{Namespace: "default", Name: lab.DemoService}, &svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.Finalizers) > 0 || len(svc.Status.LoadBalancer.Ingress) > 0 {
		t.Errorf("Service after helm uninstall: finalizers %v, ingress %v; want none", svc.Finalizers, svc.Status.LoadBalancer.Ingress)
	}
	nothingLeftOnNodes(t, ips)
}
