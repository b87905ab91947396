package lab

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
)

// The kubelet lab (ironlb-lab up --kubelet): the control plane lives in
// its own namespace on the fabric, so the API server reaches the kubelets
// and pods reach it through the kubernetes Service; the agent forwards
// 127.0.0.1:APIPort in the root namespace to it.
const (
	ControlNS      = "lab-control"
	ControlIPv4    = "10.89.0.5"
	ControlIPv6    = "fd89::5"
	ControlAPIPort = 6443
	// CgroupRoot is the parent of every kubelet's cgroup root, in every
	// cgroup hierarchy: /ironlb-lab/node-a, ...
	CgroupRoot = "ironlb-lab"
	// ServiceCIDRs are the lab's Service ranges; the kubernetes Service
	// takes the first address of the first.
	ServiceCIDRs = "10.96.0.0/16,fd96::/108"
	clusterCIDRs = "10.244.0.0/16,fd89:244::/48"
)

// ImageTag is the tag `make images` gives the images (IMAGE_TAG) and the
// kustomize base and chart name.
const ImageTag = "v0.1.0"

// Image names in the lab's containerds.
const (
	LabImageRepo = "localhost"
	// BackendImage runs `ironlb-lab backend`, the demo's pods.
	BackendImage = LabImageRepo + "/ironlb-lab:" + ImageTag
	// PauseImage is every pod's sandbox (`ironlb-lab pause`): the lab
	// cannot pull registry.k8s.io/pause.
	PauseImage = LabImageRepo + "/ironlb-lab-pause:" + ImageTag
)

// ImageFiles are the tarballs `make images` writes that the kubelet lab
// imports into every node's containerd.
var ImageFiles = []string{"ironlb-controller.tar", "ironlb-speaker.tar", "ironlb-lab.tar", "ironlb-lab-pause.tar"}

// NodeDir is a kubelet node's state: containerd's root and state, the
// kubelet's root, CNI configuration and IPAM, pod logs.
func (c Config) NodeDir(n Node, parts ...string) string {
	return c.path(append([]string{"nodes", n.Name}, parts...)...)
}

// ContainerdSocket is a node's containerd socket (ctr --address).
func (c Config) ContainerdSocket(n Node) string { return c.NodeDir(n, "containerd.sock") }

func (c Config) pkiPath(name string) string { return c.path("pki", name) }

// upKubelet builds the kubelet lab: the control plane in lab-control,
// then per node a mount namespace holder, containerd, kubelet and
// kube-proxy, the images imported, and ironlb installed from the
// kustomize base as `kubectl apply --server-side -k` would.
func (c Config) upKubelet(ctx context.Context, root string, step func(string), applied *time.Time) error {
	for _, b := range []string{"kubelet", "kube-controller-manager", "kube-scheduler", "containerd", "containerd-shim-runc-v2", "ctr", "cni/bridge", "cni/host-local", "cni/loopback"} {
		if _, err := os.Stat(filepath.Join(c.K8sBin, b)); err != nil {
			return fmt.Errorf("%s is missing: run make kubelet-binaries (or make kubelet-lab)", filepath.Join(c.K8sBin, b))
		}
	}
	if _, err := exec.LookPath("runc"); err != nil {
		return errors.New("runc not found: run hack/deps.sh (or make kubelet-lab)")
	}
	for _, f := range ImageFiles {
		if _, err := os.Stat(filepath.Join(c.Images, f)); err != nil {
			return fmt.Errorf("%s is missing: run make images (or make kubelet-lab)", filepath.Join(c.Images, f))
		}
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.APIPort)))
	if err != nil {
		return fmt.Errorf("port %d on 127.0.0.1 is taken (another lab?): %w", c.APIPort, err)
	}
	_ = l.Close()

	step(fmt.Sprintf("building the network: %d nodes, client, router, control plane at %s", c.Nodes, ControlIPv4))
	if err := c.buildNetwork(ctx); err != nil {
		return err
	}
	step("starting BIRD in " + RouterNS)
	if err := c.startBird(ctx); err != nil {
		return err
	}
	step("starting etcd, kube-apiserver, kube-controller-manager and kube-scheduler in " + ControlNS)
	if err := c.startKubeControlPlane(ctx); err != nil {
		return err
	}
	if err := c.mountBPFFS(); err != nil {
		return err
	}
	if c.Dataplane == "xdp" {
		if err := c.enableVethXDP(); err != nil {
			return err
		}
	}
	step("starting containerd, kubelet and kube-proxy on every node")
	for _, n := range c.NodeList() {
		if err := c.startKubeletNode(ctx, n); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	step("importing the images into every node's containerd")
	for _, n := range c.NodeList() {
		if err := c.ImportImages(ctx, n, c.Images, ImageFiles...); err != nil {
			return err
		}
	}
	cl, err := c.Client()
	if err != nil {
		return err
	}
	step("waiting for every Node to be Ready")
	if err := WaitNodesReady(ctx, cl, c.Nodes, 3*time.Minute); err != nil {
		return err
	}
	step("installing ironlb: kubectl apply --server-side -k manifests/")
	*applied = time.Now()
	if err := ApplyKustomize(ctx, c, filepath.Join(root, "manifests")); err != nil {
		return err
	}
	if err := WaitInstalled(ctx, cl, c.Nodes, 3*time.Minute); err != nil {
		return err
	}
	step(fmt.Sprintf("ironlb-controller (2 replicas) and ironlb-speaker (%d nodes) Ready %s after kubectl apply -k began", c.Nodes, time.Since(*applied).Round(100*time.Millisecond)))
	step("creating the sample pool, advertisements, demo Deployment and Service")
	if err := c.createKubeletObjects(ctx, cl); err != nil {
		return err
	}
	return poll(ctx, 2*time.Minute, func() error {
		var dep appsv1.Deployment
		if err := cl.Get(ctx, types.NamespacedName{Namespace: "default", Name: DemoService}, &dep); err != nil {
			return err
		}
		if want := int32(PodsPerNode * c.Nodes); dep.Status.AvailableReplicas < want {
			return fmt.Errorf("the demo Deployment has %d of %d pods available", dep.Status.AvailableReplicas, want)
		}
		return nil
	})
}

// startKubeControlPlane writes the lab's PKI and tokens and runs etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler in
// lab-control, then the agent that forwards 127.0.0.1:APIPort there.
func (c Config) startKubeControlPlane(ctx context.Context) error {
	pki := c.path("pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	authority, err := newCA()
	if err != nil {
		return err
	}
	if err := authority.write(pki); err != nil {
		return err
	}
	if err := authority.issue(pki, "apiserver", certSpec{
		cn:     "kube-apiserver",
		ips:    []string{ControlIPv4, ControlIPv6, "127.0.0.1", "10.96.0.1", "fd96::1"},
		dns:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		server: true,
	}); err != nil {
		return err
	}
	// The API server's identity towards the kubelets (logs, exec,
	// port-forward); the kubelets authorize it with a
	// SubjectAccessReview, which system:masters passes.
	if err := authority.issue(pki, "apiserver-kubelet-client", certSpec{cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true}); err != nil {
		return err
	}
	for _, n := range c.NodeList() {
		if err := authority.issue(pki, "kubelet-"+n.Name, certSpec{cn: n.Name, ips: []string{n.IPv4.String(), n.IPv6.String()}, dns: []string{n.Name}, server: true}); err != nil {
			return err
		}
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	if err := os.WriteFile(c.pkiPath("sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	// One bearer token per identity, as kubeadm's bootstrap would end up
	// with: the nodes in system:nodes (the Node authorizer), the
	// controller manager, scheduler and kube-proxy as the users the
	// default RBAC bindings name.
	users := [][3]string{
		{"admin", "lab-admin", "system:masters"},
		{"kube-controller-manager", "system:kube-controller-manager", ""},
		{"kube-scheduler", "system:kube-scheduler", ""},
		{"kube-proxy", "system:kube-proxy", ""},
	}
	for _, n := range c.NodeList() {
		users = append(users, [3]string{"kubelet-" + n.Name, "system:node:" + n.Name, "system:nodes"})
	}
	var csv strings.Builder
	api := fmt.Sprintf("https://%s:%d", ControlIPv4, ControlAPIPort)
	for _, u := range users {
		tok := make([]byte, 16)
		if _, err := rand.Read(tok); err != nil {
			return err
		}
		t := hex.EncodeToString(tok)
		fmt.Fprintf(&csv, "%s,%s,%s", t, u[1], u[1])
		if u[2] != "" {
			fmt.Fprintf(&csv, ",%s", u[2])
		}
		csv.WriteString("\n")
		server := api
		if u[0] == "admin" {
			server = fmt.Sprintf("https://127.0.0.1:%d", c.APIPort)
			if err := writeKubeconfig(c.Kubeconfig(), server, c.pkiPath("ca.crt"), u[1], t); err != nil {
				return err
			}
			continue
		}
		if err := writeKubeconfig(c.pkiPath(u[0]+".kubeconfig"), server, c.pkiPath("ca.crt"), u[1], t); err != nil {
			return err
		}
	}
	if err := os.WriteFile(c.pkiPath("tokens.csv"), []byte(csv.String()), 0o600); err != nil {
		return err
	}
	if err := c.startEtcd(ControlNS); err != nil {
		return err
	}
	if err := c.StartKubeAPIServer(); err != nil {
		return err
	}
	if err := c.Start("agent", "", filepath.Join(c.Bin, "ironlb-lab"), "agent", "--dir", c.Dir); err != nil {
		return err
	}
	if err := c.WaitAPIServer(ctx, 90*time.Second); err != nil {
		return err
	}
	if err := c.Start("kube-controller-manager", ControlNS, filepath.Join(c.K8sBin, "kube-controller-manager"),
		"--kubeconfig", c.pkiPath("kube-controller-manager.kubeconfig"),
		"--authentication-skip-lookup",
		"--bind-address", "127.0.0.1",
		"--cert-dir", c.path("pki", "kcm"),
		"--leader-elect=false",
		"--use-service-account-credentials",
		"--service-account-private-key-file", c.pkiPath("sa.key"),
		"--root-ca-file", c.pkiPath("ca.crt"),
		"--cluster-name", "ironlb-lab",
		"--service-cluster-ip-range", ServiceCIDRs,
	); err != nil {
		return err
	}
	return c.Start("kube-scheduler", ControlNS, filepath.Join(c.K8sBin, "kube-scheduler"),
		"--kubeconfig", c.pkiPath("kube-scheduler.kubeconfig"),
		"--authentication-skip-lookup",
		"--bind-address", "127.0.0.1",
		"--cert-dir", c.path("pki", "scheduler"),
		"--leader-elect=false",
	)
}

// StartKubeAPIServer runs kube-apiserver in lab-control on ControlIPv4.
func (c Config) StartKubeAPIServer() error {
	return c.Start("kube-apiserver", ControlNS, filepath.Join(c.K8sBin, "kube-apiserver"),
		"--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", c.EtcdPort),
		"--bind-address", ControlIPv4,
		"--advertise-address", ControlIPv4,
		"--secure-port", strconv.Itoa(ControlAPIPort),
		"--tls-cert-file", c.pkiPath("apiserver.crt"),
		"--tls-private-key-file", c.pkiPath("apiserver.key"),
		"--client-ca-file", c.pkiPath("ca.crt"),
		"--token-auth-file", c.pkiPath("tokens.csv"),
		"--authorization-mode", "Node,RBAC",
		"--enable-admission-plugins", "NodeRestriction",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", c.pkiPath("sa.key"),
		"--service-account-signing-key-file", c.pkiPath("sa.key"),
		"--service-cluster-ip-range", ServiceCIDRs,
		"--allow-privileged",
		"--kubelet-client-certificate", c.pkiPath("apiserver-kubelet-client.crt"),
		"--kubelet-client-key", c.pkiPath("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority", c.pkiPath("ca.crt"),
		"--kubelet-preferred-address-types", "InternalIP",
	)
}

func writeKubeconfig(path, server, caFile, user, token string) error {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: lab
  context: {cluster: lab, user: %s}
current-context: lab
`, server, caFile, user, token, user)
	return os.WriteFile(path, []byte(kc), 0o600)
}

// kernelTunables are the sysctls a kubelet sets when they differ (with
// protectKernelDefaults off) or refuses to start over (with it on). They
// are global, not per network namespace: the lab shows each kubelet, in
// its node's mount namespace, files with the values it wants, so the
// machine's own settings are never touched.
var kernelTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// startKubeletNode runs a node's mount-namespace holder, containerd,
// kubelet and kube-proxy.
func (c Config) startKubeletNode(ctx context.Context, n Node) error {
	for _, d := range []string{"containerd/root", "containerd/state", "kubelet", "cni", "cni-ipam", "pod-logs", "volume-plugins", "sysctl"} {
		if err := os.MkdirAll(c.NodeDir(n, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(c.BPFFS(), n.Name), 0o700); err != nil {
		return err
	}
	for k, v := range kernelTunables {
		if err := os.WriteFile(c.NodeDir(n, "sysctl", strings.ReplaceAll(k, "/", ".")), []byte(v+"\n"), 0o644); err != nil {
			return err
		}
	}
	if err := makeCgroups(n); err != nil {
		return err
	}
	if err := c.writeNodeConfig(n); err != nil {
		return err
	}
	// The holder owns the node's mount namespace: a slave of the root
	// one, with a private /run and /var/log, the lab's bpffs as
	// /sys/fs/bpf and the kubelet's sysctls. containerd and kubelet join
	// it (and the node's network namespace), so what one mounts the other
	// sees, and nothing of it reaches the machine.
	hold := "hold-" + n.Name
	if err := c.Start(hold, "", "nsenter", "--net=/run/netns/"+n.NS,
		"unshare", "--mount", "--propagation", "slave",
		filepath.Join(c.Bin, "ironlb-lab"), "--dir", c.Dir, "hold", "--node", n.Name); err != nil {
		return err
	}
	if _, err := c.waitReady(ctx, hold, c.NodeDir(n, "hold.ready"), 10*time.Second); err != nil {
		return err
	}
	if err := c.StartContainerd(n); err != nil {
		return err
	}
	if err := waitSocket(ctx, c.ContainerdSocket(n), 30*time.Second); err != nil {
		return fmt.Errorf("containerd (see %s): %w", c.path("logs", "containerd-"+n.Name+".log"), err)
	}
	if err := c.StartKubelet(n); err != nil {
		return err
	}
	return c.StartKubeProxy(n)
}

// startInNode runs a lab process in a node's network and mount
// namespaces (the holder's), with the Kubernetes binaries on its PATH.
func (c Config) startInNode(name string, n Node, argv ...string) error {
	holdPid, ok := c.pid("hold-" + n.Name)
	if !ok {
		return fmt.Errorf("the namespace holder of %s is not running", n.Name)
	}
	return c.Start(name, "", append([]string{"nsenter", "-t", strconv.Itoa(holdPid), "-m", "-n",
		"env", "PATH=" + c.K8sBin + ":/usr/sbin:/usr/bin:/sbin:/bin"}, argv...)...)
}

// StartContainerd runs a node's containerd (the holder must run).
func (c Config) StartContainerd(n Node) error {
	return c.startInNode("containerd-"+n.Name, n, filepath.Join(c.K8sBin, "containerd"), "--config", c.NodeDir(n, "containerd.toml"))
}

// StartKubelet runs a node's kubelet (the holder must run).
func (c Config) StartKubelet(n Node) error {
	return c.startInNode("kubelet-"+n.Name, n, filepath.Join(c.K8sBin, "kubelet"),
		"--config", c.NodeDir(n, "kubelet.yaml"),
		"--kubeconfig", c.pkiPath("kubelet-"+n.Name+".kubeconfig"),
		"--root-dir", c.NodeDir(n, "kubelet"),
		"--cert-dir", c.NodeDir(n, "kubelet", "pki"),
		"--hostname-override", n.Name,
		"--node-ip", n.IPv4.String()+","+n.IPv6.String(),
		"--volume-plugin-dir", c.NodeDir(n, "volume-plugins"),
	)
}

// writeNodeConfig writes containerd's, the kubelet's and the CNI's
// configuration of a node, every path under the node's folder.
func (c Config) writeNodeConfig(n Node) error {
	containerd := fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = ['io.containerd.internal.v1.opt', 'io.containerd.snapshotter.v1.btrfs', 'io.containerd.snapshotter.v1.zfs', 'io.containerd.snapshotter.v1.devmapper', 'io.containerd.nri.v1.nri', 'io.containerd.tracing.processor.v1.otlp', 'io.containerd.internal.v1.tracing']

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = %q

  [plugins.'io.containerd.cri.v1.runtime']
    netns_mounts_under_state_dir = true
    # No container gets an OOM score below containerd's own: this
    # machine kind withholds CAP_SYS_RESOURCE, without which runc cannot
    # set the negative scores the kubelet asks for (critical pods, the
    # sandbox's -998).
    restrict_oom_score_adj = true
    cdi_spec_dirs = []
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '/usr/sbin/runc'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [%q]
      conf_dir = %q

  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
`, c.NodeDir(n, "containerd", "root"), c.NodeDir(n, "containerd", "state"),
		c.ContainerdSocket(n), c.ContainerdSocket(n)+".ttrpc", PauseImage,
		filepath.Join(c.K8sBin, "cni"), c.NodeDir(n, "cni"))
	if err := os.WriteFile(c.NodeDir(n, "containerd.toml"), []byte(containerd), 0o644); err != nil {
		return err
	}
	gw4 := n.PodCIDR4.Addr().Next()
	gw6 := n.PodCIDR6.Addr().Next()
	cni := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "lab",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q, "gateway": %q}], [{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, c.NodeDir(n, "cni-ipam"), n.PodCIDR4, gw4, n.PodCIDR6, gw6)
	if err := os.WriteFile(c.NodeDir(n, "cni", "10-lab.conflist"), []byte(cni), 0o644); err != nil {
		return err
	}
	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /%s/%s
containerRuntimeEndpoint: unix://%s
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization: {mode: Webhook}
failSwapOn: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: %s
staticPodPath: ""
maxPods: 40
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%%, imagefs.available: 1%%}
protectKernelDefaults: false
`, CgroupRoot, n.Name, c.ContainerdSocket(n), n.IPv4,
		c.pkiPath("kubelet-"+n.Name+".crt"), c.pkiPath("kubelet-"+n.Name+".key"), c.pkiPath("ca.crt"),
		c.NodeDir(n, "pod-logs"))
	return os.WriteFile(c.NodeDir(n, "kubelet.yaml"), []byte(kubelet), 0o644)
}

// Hold is the body of a node's namespace holder (`ironlb-lab hold`): it
// runs in the node's network namespace and a fresh mount namespace (a
// slave of the machine's: nothing mounted here propagates back), mounts
// what the node's kubelet and containerd need private, says it is ready,
// and waits until ctx ends. The mount namespace goes with its last
// process.
func (c Config) Hold(ctx context.Context, node string) error {
	n, ok := c.NodeByName(node)
	if !ok {
		return fmt.Errorf("no node %q", node)
	}
	mounts := []struct{ src, dst, fstype, data string }{
		{"tmpfs", "/run", "tmpfs", "mode=755"},
		{"tmpfs", "/var/log", "tmpfs", "mode=755"},
		{filepath.Join(c.BPFFS(), n.Name), "/sys/fs/bpf", "", ""},
	}
	for k := range kernelTunables {
		mounts = append(mounts, struct{ src, dst, fstype, data string }{c.NodeDir(n, "sysctl", strings.ReplaceAll(k, "/", ".")), "/proc/sys/" + k, "", ""})
	}
	for _, m := range mounts {
		if err := mount(m.src, m.dst, m.fstype, m.data); err != nil {
			return err
		}
	}
	// The speaker's bpffs volume asks for HostToContainer propagation,
	// which needs a shared (or slave) mount on the host side.
	if err := unix.Mount("", "/sys/fs/bpf", "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make /sys/fs/bpf shared: %w", err)
	}
	if err := os.WriteFile(c.NodeDir(n, "hold.ready"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// waitReady polls until a lab process wrote its ready file.
func (c Config) waitReady(ctx context.Context, name, file string, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	for {
		// The recorded pid goes through nsenter and unshare before it
		// is the program: only a pid that no longer exists has exited.
		if pid, ok := c.pid(name); ok {
			if _, err := os.Stat(file); err == nil {
				return pid, nil
			}
		} else if b, err := os.ReadFile(c.path("pids", name+".pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && unix.Kill(pid, 0) == unix.ESRCH {
				return 0, fmt.Errorf("%s exited (see %s)", name, c.path("logs", name+".log"))
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s not ready after %s (see %s)", name, limit, c.path("logs", name+".log"))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func waitSocket(ctx context.Context, path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "unix", path)
		if err == nil {
			_ = conn.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not answer after %s: %w", path, limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ImportImages loads image tarballs into a node's containerd, in the
// namespace the kubelet uses, as `ctr images import` does on a node.
func (c Config) ImportImages(ctx context.Context, n Node, dir string, files ...string) error {
	for _, f := range files {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		out, err := exec.CommandContext(ctx, filepath.Join(c.K8sBin, "ctr"), "--address", c.ContainerdSocket(n), "-n", "k8s.io",
			"images", "import", "--local", filepath.Join(dir, f)).CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("%s: ctr images import %s: %w: %s", n.Name, f, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// createKubeletObjects makes the sample pool, advertisements, the BGP
// objects and the demo: a Deployment of backends spread over the nodes
// and its LoadBalancer Service.
func (c Config) createKubeletObjects(ctx context.Context, cl client.Client) error {
	if err := c.createSamplePools(ctx, cl); err != nil {
		return err
	}
	if err := cl.Create(ctx, DemoDeployment(DemoService, int32(PodsPerNode*c.Nodes))); err != nil {
		return fmt.Errorf("create the demo Deployment: %w", err)
	}
	svc := DemoServiceObject(DemoService)
	if c.BGP {
		svc.Annotations = map[string]string{ironlbv1alpha1.AnnotationPool: BGPPool}
	}
	if err := cl.Create(ctx, svc); err != nil {
		return fmt.Errorf("create Service %s: %w", DemoService, err)
	}
	return nil
}

// KubeletDown stops what a kubelet lab runs beyond the processes Down
// stops by pid: every process left in the lab's cgroups (containers,
// whose shims were reparented) and the cgroups themselves.
func kubeletDown() error {
	var errs []error
	for range 50 {
		pids := cgroupPids()
		if len(pids) == 0 {
			break
		}
		killAll(pids, 0)
	}
	if pids := cgroupPids(); len(pids) > 0 {
		errs = append(errs, fmt.Errorf("processes left in the lab's cgroups: %v", pids))
	}
	errs = append(errs, removeCgroups())
	return errors.Join(errs...)
}
