// Package lab builds a whole ironlb cluster on one Linux machine: a real
// etcd and kube-apiserver on loopback, one network namespace per node on a
// shared bridge, pods as namespaces behind their nodes, real kube-proxy,
// the real controller and speakers, and backends that say who answered.
// cmd/ironlb-lab and the e2e suites both drive it.
//
// Safety: the lab never changes the root namespace's addresses or routes.
// Everything it makes is a network namespace whose name starts with
// "lab-", a process it started (recorded under the state folder), or a
// file in the state folder; Down removes all three.
package lab

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// Namespace names and addresses of the topology. They are fixed, so only
// one lab runs on a machine at a time.
const (
	Prefix     = "lab-"
	FabricNS   = "lab-fabric"
	ClientNS   = "lab-client"
	RouterNS   = "lab-router"
	BridgeName = "br0"
	ClientIPv4 = "10.89.0.2"
	ClientIPv6 = "fd89::2"
	RouterIPv4 = "10.89.0.1"
	RouterIPv6 = "fd89::1"
	// PoolIPv4 and PoolIPv6 are the sample pool's ranges; the client has
	// them on-link, as a LAN whose VIPs live in its own segment.
	PoolIPv4 = "10.89.100.0/24"
	PoolIPv6 = "fd89:100::/120"
	// poolRangeIPv6 leaves out fd89:100::, the subnet-router anycast
	// address of the prefix.
	poolRangeIPv6 = "fd89:100::1-fd89:100::ff"
	// PodsPerNode backends run behind every node.
	PodsPerNode = 2
)

// Config is how a lab is built; Up stores it in the state folder so that
// later commands (status, exec, down, the agent) find the same lab.
type Config struct {
	// Dir is the state folder (.lab): kubeconfig, logs, pids, etcd data.
	Dir string `json:"dir"`
	// Bin holds ironlb-controller, ironlb-speaker and ironlb-lab.
	Bin string `json:"bin"`
	// K8sBin holds etcd, kube-apiserver and kube-proxy.
	K8sBin    string `json:"k8sBin"`
	Nodes     int    `json:"nodes"`
	Dataplane string `json:"dataplane"`
	// APIPort is the kube-apiserver's port on 127.0.0.1, in the root
	// namespace and, through the agent's forwarders, in every node's.
	APIPort  int `json:"apiPort"`
	EtcdPort int `json:"etcdPort"`
	// Pool is the sample IPPool's addresses.
	Pool []string `json:"pool"`
	// BGP puts the demo Service in the BGP pool: the client reaches it
	// through the router, which learns it from every node over BGP.
	BGP bool `json:"bgp"`
	// MemberlistInsecure runs the speakers without the memberlist key
	// (the failover benchmark's baseline).
	MemberlistInsecure bool `json:"memberlistInsecure,omitempty"`
	// Kubelet runs a real containerd and kubelet in every node, the
	// control plane (with kube-controller-manager and kube-scheduler) in
	// lab-control, and installs ironlb from the kustomize base: see
	// kubelet.go.
	Kubelet bool `json:"kubelet,omitempty"`
	// Images holds the image tarballs `make images` writes (kubelet lab).
	Images string `json:"images,omitempty"`
}

// DefaultConfig is a three-node lab with the kernel data plane.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:       dir,
		Nodes:     3,
		Dataplane: "xdp",
		APIPort:   16443,
		EtcdPort:  12379,
		Pool:      []string{PoolIPv4, poolRangeIPv6},
	}
}

// Node is one lab node.
type Node struct {
	// Name is the Kubernetes Node name (node-a).
	Name string
	// NS is its network namespace (lab-node-a).
	NS string
	// Letter is a, b, c...
	Letter string
	Index  int
	IPv4   netip.Addr
	IPv6   netip.Addr
	// FabricLink is the bridge-side end of its eth0, in lab-fabric:
	// setting it down cuts the node off the network.
	FabricLink string
	PodCIDR4   netip.Prefix
	PodCIDR6   netip.Prefix
}

// Pod is one backend.
type Pod struct {
	Name string // demo-a-0
	NS   string // lab-pod-a-0
	Node Node
	IPv4 netip.Addr
	IPv6 netip.Addr
	// HostLink is the node-side end of its veth.
	HostLink string
}

// NodeList returns the lab's nodes.
func (c Config) NodeList() []Node {
	out := make([]Node, c.Nodes)
	for i := range out {
		l := string(rune('a' + i))
		out[i] = Node{
			Name:       "node-" + l,
			NS:         Prefix + "node-" + l,
			Letter:     l,
			Index:      i,
			IPv4:       netip.AddrFrom4([4]byte{10, 89, 0, byte(11 + i)}),
			IPv6:       netip.MustParseAddr(fmt.Sprintf("fd89::%d", 11+i)),
			FabricLink: "fab-" + l,
			PodCIDR4:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(1 + i), 0}), 24),
			PodCIDR6:   netip.MustParsePrefix(fmt.Sprintf("fd89:244:%x::/64", 1+i)),
		}
	}
	return out
}

// Pods returns the process lab's backends, PodsPerNode behind each node
// (none in the kubelet lab, whose backends are real pods).
func (c Config) Pods() []Pod {
	if c.Kubelet {
		return nil
	}
	var out []Pod
	for _, n := range c.NodeList() {
		for j := range PodsPerNode {
			out = append(out, Pod{
				Name:     fmt.Sprintf("demo-%s-%d", n.Letter, j),
				NS:       fmt.Sprintf("%spod-%s-%d", Prefix, n.Letter, j),
				Node:     n,
				IPv4:     netip.AddrFrom4([4]byte{10, 244, byte(1 + n.Index), byte(10 + j)}),
				IPv6:     netip.MustParseAddr(fmt.Sprintf("fd89:244:%x::%x", 1+n.Index, 0x10+j)),
				HostLink: fmt.Sprintf("pod%d", j),
			})
		}
	}
	return out
}

// NodeByName finds a node by its Kubernetes name or its letter.
func (c Config) NodeByName(name string) (Node, bool) {
	for _, n := range c.NodeList() {
		if n.Name == name || n.Letter == name || n.NS == name {
			return n, true
		}
	}
	return Node{}, false
}

// Kubeconfig is the path of the lab's kubeconfig.
func (c Config) Kubeconfig() string { return filepath.Join(c.Dir, "kubeconfig") }

func (c Config) path(parts ...string) string {
	return filepath.Join(append([]string{c.Dir}, parts...)...)
}

// save records the config for later commands.
func (c Config) save() error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(c.path("lab.json"), b, 0o600)
}

// Load reads the config of the lab in dir.
func Load(dir string) (Config, error) {
	b, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if err != nil {
		return Config{}, fmt.Errorf("no lab in %s (run ironlb-lab up): %w", dir, err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("read %s/lab.json: %w", dir, err)
	}
	return c, nil
}

// NamespaceFor resolves a short name (client, router, fabric, a, node-a,
// pod-a-0) to a lab network namespace.
func (c Config) NamespaceFor(name string) (string, error) {
	switch name {
	case "client", ClientNS:
		return ClientNS, nil
	case "router", RouterNS:
		return RouterNS, nil
	case "fabric", FabricNS:
		return FabricNS, nil
	case "control", ControlNS:
		if c.Kubelet {
			return ControlNS, nil
		}
	}
	if n, ok := c.NodeByName(name); ok {
		return n.NS, nil
	}
	for _, p := range c.Pods() {
		if name == p.Name || name == p.NS || Prefix+name == p.NS {
			return p.NS, nil
		}
	}
	return "", fmt.Errorf("no lab namespace %q: try client, router, fabric, control (kubelet lab), a node (a, node-a) or a pod (demo-a-0)", name)
}
