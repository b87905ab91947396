package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Up builds the lab from scratch: it first removes whatever an earlier lab
// left, then starts the control plane, the network, the agent, kube-proxy,
// the controller and a speaker per node, and creates the sample objects.
// It returns the demo Service's IPs once the first answers over HTTP from
// the client namespace.
func (c Config) Up(ctx context.Context, root string, out io.Writer) ([]netip.Addr, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces, veths, raw sockets)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found: run hack/deps.sh (or make lab) to install the lab's packages", tool)
		}
	}
	for _, b := range []string{filepath.Join(c.K8sBin, "etcd"), filepath.Join(c.K8sBin, "kube-apiserver"), filepath.Join(c.K8sBin, "kube-proxy"),
		filepath.Join(c.Bin, "ironlb-controller"), filepath.Join(c.Bin, "ironlb-speaker"), filepath.Join(c.Bin, "ironlb-lab")} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("%s is missing: run make build kube-binaries (or make lab)", b)
		}
	}
	if c.Dataplane != "kernel" && c.Dataplane != "xdp" {
		return nil, fmt.Errorf("--dataplane=%s: want xdp or kernel", c.Dataplane)
	}
	if err := Down(ctx, c.Dir); err != nil {
		return nil, fmt.Errorf("clean an earlier lab: %w", err)
	}
	if err := os.RemoveAll(c.path("logs")); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	if err := c.save(); err != nil {
		return nil, err
	}
	step := func(what string) { _, _ = fmt.Fprintf(out, "lab: %s\n", what) }

	if c.Kubelet {
		var applied time.Time
		if err := c.upKubelet(ctx, root, step, &applied); err != nil {
			return nil, err
		}
		ips, err := c.waitDemo(ctx, step)
		if err == nil {
			step(fmt.Sprintf("the demo VIP answered %s after kubectl apply -k began (rollout, sample objects and demo pods included)", time.Since(applied).Round(100*time.Millisecond)))
		}
		return ips, err
	}
	step("starting etcd and kube-apiserver on 127.0.0.1:" + strconv.Itoa(c.APIPort))
	if err := c.startControlPlane(ctx); err != nil {
		return nil, err
	}
	step(fmt.Sprintf("building the network: %d nodes, %d pods, client, router", c.Nodes, len(c.Pods())))
	if err := c.buildNetwork(ctx); err != nil {
		return nil, err
	}
	step("starting BIRD in " + RouterNS + " (BGP with every node, ECMP)")
	if err := c.startBird(ctx); err != nil {
		return nil, err
	}
	step("starting the agent (API forwarders, backends)")
	if err := c.Start("agent", "", filepath.Join(c.Bin, "ironlb-lab"), "agent", "--dir", c.Dir); err != nil {
		return nil, err
	}
	if err := c.waitAgent(ctx); err != nil {
		return nil, err
	}
	step("creating CRDs, nodes, the sample pool, advertisement and Service")
	if err := c.createObjects(ctx, CRDDir(root)); err != nil {
		return nil, err
	}
	if c.Dataplane == "kernel" {
		step("starting kube-proxy on every node")
		for _, n := range c.NodeList() {
			if err := c.StartKubeProxy(n); err != nil {
				return nil, err
			}
		}
	} else {
		step("preparing the xdp data plane: a bpffs under " + c.BPFFS() + ", NAPI on the bridge side of each node")
		if err := c.mountBPFFS(); err != nil {
			return nil, err
		}
		if err := c.enableVethXDP(); err != nil {
			return nil, err
		}
	}
	step("starting ironlb-controller and a speaker per node")
	if err := c.StartController(); err != nil {
		return nil, err
	}
	for _, n := range c.NodeList() {
		if err := c.StartSpeaker(n); err != nil {
			return nil, err
		}
	}
	return c.waitDemo(ctx, step)
}

// waitDemo waits for the demo Service's IPs and for the first to answer
// over HTTP from the client.
func (c Config) waitDemo(ctx context.Context, step func(string)) ([]netip.Addr, error) {
	cl, err := c.Client()
	if err != nil {
		return nil, err
	}
	ips, err := WaitServiceIPs(ctx, cl, types.NamespacedName{Namespace: "default", Name: DemoService}, 2, 60*time.Second)
	if err != nil {
		return nil, err
	}
	step("waiting for the VIP to answer from lab-client")
	if _, err := c.WaitHTTP(ctx, ips[0], 90*time.Second); err != nil {
		return nil, err
	}
	return ips, nil
}

// StartKubeProxy runs kube-proxy (nftables mode) in a node's namespace.
func (c Config) StartKubeProxy(n Node) error {
	kubeconfig := c.Kubeconfig()
	if c.Kubelet {
		kubeconfig = c.pkiPath("kube-proxy.kubeconfig")
	}
	return c.Start("kube-proxy-"+n.Name, n.NS, filepath.Join(c.K8sBin, "kube-proxy"),
		"--kubeconfig", kubeconfig,
		"--hostname-override", n.Name,
		"--proxy-mode", "nftables",
		"--conntrack-max-per-core=0",
		"--oom-score-adj=0",
		"--cluster-cidr", "10.244.0.0/16,fd89:244::/48",
		"--metrics-bind-address", "127.0.0.1:10249",
		"--healthz-bind-address", "127.0.0.1:10256",
	)
}

// StartController runs the controller in the root namespace, its ports on
// loopback only.
func (c Config) StartController() error {
	return c.Start("controller", "", filepath.Join(c.Bin, "ironlb-controller"),
		"--kubeconfig", c.DaemonKubeconfig("ironlb-controller"),
		"--leader-elect-namespace", SystemNS,
		"--metrics-addr", "127.0.0.1:17472",
		"--health-addr", "127.0.0.1:17473",
	)
}

// SpeakerName is the process name of a node's speaker.
func SpeakerName(n Node) string { return "speaker-" + n.Name }

// StartSpeaker runs the speaker in a node's namespace.
func (c Config) StartSpeaker(n Node) error { return c.StartSpeakerWith(n, c.Dataplane) }

// StartSpeakerWith runs the speaker in a node's namespace with another
// data plane than the lab's, and extra flags.
func (c Config) StartSpeakerWith(n Node, dataplane string, extra ...string) error {
	argv := []string{filepath.Join(c.Bin, "ironlb-speaker"),
		"--kubeconfig", c.DaemonKubeconfig("ironlb-speaker"),
		"--node-name", n.Name,
		"--dataplane", dataplane,
		"--bpffs", c.path("bpffs", n.Name),
		"--interfaces", "eth0",
		"--xdp-endpoint-redirect",
	}
	if c.MemberlistInsecure {
		argv = append(argv, "--memberlist-insecure")
	}
	argv = append(argv, extra...)
	return c.Start(SpeakerName(n), n.NS, argv...)
}

// CutLink takes a node off the network, as a pulled cable would: the
// bridge side of its eth0 goes down.
func (c Config) CutLink(ctx context.Context, n Node) error {
	return ipn(ctx, FabricNS, "link", "set", n.FabricLink, "down")
}

// RestoreLink puts a cut node back on the network.
func (c Config) RestoreLink(ctx context.Context, n Node) error {
	return ipn(ctx, FabricNS, "link", "set", n.FabricLink, "up")
}

// waitAgent polls until the API forwarder answers inside the first node.
func (c Config) waitAgent(ctx context.Context) error {
	n := c.NodeList()[0]
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := DialIn(ctx, n.NS, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.APIPort)))
		if err == nil {
			_ = conn.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent does not serve (see %s): %w", c.path("logs", "agent.log"), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Get does one HTTP GET of http://VIP/ from the client namespace.
func (c Config) Get(ctx context.Context, vip netip.Addr) (string, error) {
	hc := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return DialIn(ctx, ClientNS, network, addr)
			},
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(vip.String(), "80")+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return strings.TrimSpace(string(b)), err
}

// WaitHTTP polls http://VIP/ from the client until a backend answers.
func (c Config) WaitHTTP(ctx context.Context, vip netip.Addr, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		body, err := c.Get(ctx, vip)
		if err == nil {
			return body, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("http://%s/ does not answer from %s after %s: %w", vip, ClientNS, limit, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Down stops every process of the lab in dir and deletes every lab
// namespace. It is safe to run when nothing is up.
func Down(ctx context.Context, dir string) error {
	var errs []error
	c, err := Load(dir)
	if err != nil {
		// No config: still stop what the pid files name.
		c = Config{Dir: dir}
	}
	errs = append(errs, c.stopAll(3*time.Second))
	// What the kubelet lab leaves running beyond its recorded processes:
	// containerd's shims (they carry the lab's marker) and the
	// containers, in the lab's cgroups.
	c.killMarked()
	errs = append(errs, kubeletDown())
	errs = append(errs, deleteNetwork(ctx))
	errs = append(errs, unmountBPFFS(filepath.Join(dir, "bpffs")))
	// The nodes' folders hold containerd's snapshots, which were mounted
	// only in the nodes' own mount namespaces, gone with their processes.
	// Refuse to remove anything that is still a mount point here.
	nodes := filepath.Join(dir, "nodes")
	if mps, err := mountsUnder(nodes); err != nil || len(mps) > 0 {
		errs = append(errs, fmt.Errorf("not removing %s: still mounted: %v %v", nodes, mps, err))
	} else {
		errs = append(errs, os.RemoveAll(nodes))
	}
	for _, sub := range []string{"pids", "etcd", "pki", "lab.json", "kubeconfig"} {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, sub)))
	}
	return errors.Join(errs...)
}

// Leftovers lists what a lab left behind: lab namespaces and processes
// that carry the lab's marker. After Down it must be empty.
func Leftovers(ctx context.Context, dir string) ([]string, error) {
	var out []string
	names, err := Namespaces(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		out = append(out, "namespace "+n)
	}
	if onBPFFS(filepath.Join(dir, "bpffs")) {
		out = append(out, "bpffs mount "+filepath.Join(dir, "bpffs"))
	}
	for _, cg := range labCgroups() {
		out = append(out, "cgroup "+cg)
	}
	if mps, err := mountsUnder(dir); err == nil {
		for _, mp := range mps {
			out = append(out, "mount "+mp)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "nodes")); err == nil {
		out = append(out, "folder "+filepath.Join(dir, "nodes"))
	}
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return nil, err
	}
	c := Config{Dir: dir}
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if c.ours(pid) {
			cmdline, _ := os.ReadFile(filepath.Join(p, "cmdline"))
			out = append(out, fmt.Sprintf("process %d %s", pid, strings.ReplaceAll(string(cmdline), "\x00", " ")))
		}
	}
	return out, nil
}

// Exec runs a command inside a lab namespace, wired to the caller's
// terminal.
func (c Config) Exec(ctx context.Context, name string, argv []string, stdin io.Reader, stdout, stderr io.Writer) error {
	ns, err := c.NamespaceFor(name)
	if err != nil {
		return err
	}
	if len(argv) == 0 {
		return errors.New("no command given")
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig())
	return cmd.Run()
}
