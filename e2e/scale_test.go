package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/bpf"
	"github.com/ironlb/ironlb/pkg/lab"
)

// speakerMemoryLimit reads the speaker container's memory limit from the
// shipped DaemonSet.
func speakerMemoryLimit(t *testing.T) int64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "manifests", "speaker.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(raw), "\n---") {
		var ds appsv1.DaemonSet
		if err := yaml.Unmarshal([]byte(doc), &ds); err != nil || ds.Kind != "DaemonSet" {
			continue
		}
		for _, c := range ds.Spec.Template.Spec.Containers {
			if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
				return q.Value()
			}
		}
	}
	t.Fatal("no memory limit on the speaker in manifests/speaker.yaml")
	return 0
}

// dataplaneMemory returns a node's data-plane maps' kernel memory
// (memlock, the pinned maps and every ring they hold) and how many
// distinct rings there are, and the number of VIP ports.
func dataplaneMemory(t *testing.T, n lab.Node) (bytes uint64, rings, ports int) {
	t.Helper()
	dir := cfg.PinDir(n)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]bool{}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "link_") {
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, e.Name()), nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		mem, _ := info.Memlock()
		bytes += mem
		switch e.Name() {
		case "rings":
			var k, id uint32
			it := m.Iterate()
			for it.Next(&k, &id) {
				if seen[id] {
					continue
				}
				seen[id] = true
				inner, err := ebpf.NewMapFromID(ebpf.MapID(id))
				if err != nil {
					continue // swapped out meanwhile
				}
				if ii, err := inner.Info(); err == nil {
					im, _ := ii.Memlock()
					bytes += im
				}
				_ = inner.Close()
			}
		case "vips":
			var k bpf.LbVipKey
			var v bpf.LbVipInfo
			it := m.Iterate()
			for it.Next(&k, &v) {
				ports++
			}
		}
		_ = m.Close()
	}
	return bytes, len(seen), ports
}

func rssOf(t *testing.T, pid int) uint64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestManyServicePorts: 30 Services of 100 ports each apply on every
// speaker, and each speaker's process and data-plane maps together stay
// within the memory limit the manifests give it (ports of one Service
// share one ring).
func TestManyServicePorts(t *testing.T) {
	needXDP(t)
	const services, perService = 30, 100
	var ports []corev1.ServicePort
	for i := range perService {
		ports = append(ports, corev1.ServicePort{Name: fmt.Sprintf("p%d", i), Port: int32(2000 + i), Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(80)})
	}
	ctx := t.Context()
	before := map[string]int{}
	for _, n := range cfg.NodeList() {
		_, _, before[n.Name] = dataplaneMemory(t, n)
	}
	for i := range services {
		name := fmt.Sprintf("many-%02d", i)
		if err := cfg.CreateDemoService(ctx, cl, name, func(s *corev1.Service) {
			s.Spec.IPFamilyPolicy = new(corev1.IPFamilyPolicySingleStack)
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
			s.Spec.Ports = ports
			// 3 000 ports: no NodePorts (the range has 2 768), and
			// kube-proxy leaves them alone (its opt-out label), so
			// that three kube-proxies rebuilding their rules do not
			// starve the two-core lab. ironlb serves them still.
			s.Spec.AllocateLoadBalancerNodePorts = new(false)
			s.Labels = map[string]string{"service.kubernetes.io/service-proxy-name": "none"}
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cl.Delete(context.WithoutCancel(ctx), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}})
		})
	}
	for i := range services {
		if _, err := lab.WaitServiceIPs(ctx, cl, types.NamespacedName{Namespace: "default", Name: fmt.Sprintf("many-%02d", i)}, 1, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	limit := speakerMemoryLimit(t)
	for _, n := range cfg.NodeList() {
		eventually(t, 30*time.Second, func() error {
			if _, _, p := dataplaneMemory(t, n); p < before[n.Name]+services*perService {
				return fmt.Errorf("%s has %d VIP ports, want at least %d", n.Name, p, before[n.Name]+services*perService)
			}
			return nil
		})
		maps, rings, p := dataplaneMemory(t, n)
		pid, ok := cfg.Pid(lab.SpeakerName(n))
		if !ok {
			t.Fatalf("no speaker on %s", n.Name)
		}
		rss := rssOf(t, pid)
		t.Logf("%s: %d VIP ports, %d rings, maps %.1f MiB, speaker RSS %.1f MiB (limit %d MiB)", n.Name, p, rings, float64(maps)/(1<<20), float64(rss)/(1<<20), limit>>20)
		if int64(maps+rss) > limit {
			t.Errorf("%s: maps %d + RSS %d bytes exceed the speaker's memory limit %d", n.Name, maps, rss, limit)
		}
		if rings > services+10 {
			t.Errorf("%s: %d rings for %d Services whose ports share their ring", n.Name, rings, services)
		}
	}
}
