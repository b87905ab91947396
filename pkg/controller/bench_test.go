package controller_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	servicehelper "k8s.io/cloud-provider/service/helpers"

	"github.com/ironlb/ironlb/internal/testenv"
	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/controller"
)

// controllerProcess is ironlb-controller running as its own process, so its
// memory and its exit on SIGTERM are measured as a user would see them.
// lastLog is the stderr file of the last controller process started.
var lastLog string

type controllerProcess struct {
	cmd *exec.Cmd
}

func buildController(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "ironlb-controller")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/ironlb-controller")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func startProcess(b *testing.B, bin string) *controllerProcess {
	b.Helper()
	return startCommand(b, bin, "--kubeconfig", env.Kubeconfig,
		"--leader-elect-namespace", "default", "--leader-elect-lease-duration", "4s",
		"--leader-elect-renew-deadline", "2s", "--leader-elect-retry-period", "200ms",
		"--metrics-addr", "0", "--health-addr", "0")
}

// startCommand runs a controller binary with args as a process.
func startCommand(b *testing.B, bin string, args ...string) *controllerProcess {
	b.Helper()
	cmd := exec.Command(bin, args...)
	if os.Getenv("IRONLB_TEST_LOG") != "" {
		cmd.Stderr = os.Stderr
	} else {
		// Kept for the failure message: a controller that refuses to
		// start says why here.
		f, err := os.Create(filepath.Join(b.TempDir(), "controller.log"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = f.Close() })
		cmd.Stderr = f
		lastLog = f.Name()
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &controllerProcess{cmd: cmd}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	return p
}

// peakRSS returns the process's peak resident set (VmHWM) in MiB.
func (p *controllerProcess) peakRSS(b *testing.B) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.Fields(rest)[0])
			if err != nil {
				b.Fatal(err)
			}
			return float64(kb) / 1024
		}
	}
	b.Fatal("no VmHWM")
	return 0
}

// cpuSeconds returns the CPU time (user and system) the process used so far.
func (p *controllerProcess) cpuSeconds(b *testing.B) float64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name, in parentheses, may hold spaces; fields count
	// from after it. utime and stime are fields 14 and 15 of stat(5).
	f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
	utime, err1 := strconv.Atoi(f[11])
	stime, err2 := strconv.Atoi(f[12])
	if err1 != nil || err2 != nil {
		b.Fatalf("parse %s: %v %v", st, err1, err2)
	}
	return float64(utime+stime) / 100 // USER_HZ is 100 on Linux
}

// terminate sends SIGTERM and returns how long the process took to exit.
func (p *controllerProcess) terminate(b *testing.B) time.Duration {
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _, _ = p.cmd.Process.Wait(); close(done) }()
	select {
	case <-done:
		return time.Since(start)
	case <-time.After(90 * time.Second):
		// Reported as is (a lower bound), then killed.
		b.Logf("%s did not exit within 90s of SIGTERM; killed", p.cmd.Path)
		_ = p.cmd.Process.Kill()
		<-done
		return time.Since(start)
	}
}

// ipWatch records when each Service of a namespace first shows an IP.
type ipWatch struct {
	mu  sync.Mutex
	got map[string]time.Time
}

func watchIPs(b *testing.B, ctx context.Context, ns string) *ipWatch {
	cs := kubernetes.NewForConfigOrDie(env.Config)
	list, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	// A RetryWatcher resumes where a closed watch stopped, so no update is
	// missed under load.
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, &toolscache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return cs.CoreV1().Services(ns).Watch(ctx, o)
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	iw := &ipWatch{got: map[string]time.Time{}}
	go func() {
		for ev := range w.ResultChan() {
			s, ok := ev.Object.(*corev1.Service)
			if !ok || len(s.Status.LoadBalancer.Ingress) == 0 {
				continue
			}
			now := time.Now()
			iw.mu.Lock()
			if _, seen := iw.got[s.Name]; !seen {
				iw.got[s.Name] = now
			}
			iw.mu.Unlock()
		}
	}()
	return iw
}

func (iw *ipWatch) wait(b *testing.B, n int, limit time.Duration) map[string]time.Time {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		iw.mu.Lock()
		c := len(iw.got)
		iw.mu.Unlock()
		if c >= n {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	iw.mu.Lock()
	defer iw.mu.Unlock()
	if len(iw.got) < n {
		var events corev1.EventList
		_ = k8s.List(context.Background(), &events)
		reasons := map[string]int{}
		for _, e := range events.Items {
			reasons[e.Reason]++
		}
		tail, _ := os.ReadFile(lastLog)
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		b.Fatalf("only %d of %d Services got an IP within %s; events by reason: %v; controller log ends:\n%s", len(iw.got), n, limit, reasons, tail)
	}
	out := make(map[string]time.Time, len(iw.got))
	for k, v := range iw.got {
		out[k] = v
	}
	return out
}

// createParallel creates n Services of the given loadBalancerClass ("" for
// none) from workers goroutines and returns, for each, the time just
// before its create was sent.
func createParallel(b *testing.B, ns, class string, n, workers int) map[string]time.Time {
	cs := kubernetes.NewForConfigOrDie(env.Config)
	var mu sync.Mutex
	created := make(map[string]time.Time, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				s := &corev1.Service{}
				s.Name = fmt.Sprintf("svc-%04d", i)
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.Ports = []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}
				// No NodePorts: two controllers' 3 000 Services would
				// fill the API server's NodePort range.
				s.Spec.AllocateLoadBalancerNodePorts = new(false)
				if class != "" {
					s.Spec.LoadBalancerClass = &class
				}
				sent := time.Now()
				if _, err := cs.CoreV1().Services(ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
					b.Error(err)
					continue
				}
				mu.Lock()
				created[s.Name] = sent
				mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return created
}

// patchFloor is the baseline for the backlog figure: the time a bare
// client takes to write the same status patch (an ingress IP and the
// cleanup finalizer, through k8s.io/cloud-provider's helper) to n Services
// from the controller's number of workers, with nothing else running. The
// backlog divided by it is what the controller adds, whatever the host's
// speed that day.
func patchFloor(b *testing.B, ns string, n, workers int) time.Duration {
	cs := kubernetes.NewForConfigOrDie(env.Config)
	list, err := cs.CoreV1().Services(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(list.Items) != n {
		b.Fatalf("list %s: %d services, %v", ns, len(list.Items), err)
	}
	next := make(chan *corev1.Service)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for old := range next {
				updated := old.DeepCopy()
				// A different address from the one the controller wrote,
				// so the patch is a real change of the same size.
				updated.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.1"}}
				if _, err := servicehelper.PatchService(cs.CoreV1(), old, updated); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range list.Items {
		next <- &list.Items[i]
	}
	close(next)
	wg.Wait()
	return time.Since(start)
}

func percentile(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// BenchmarkControllerLoad measures ironlb-controller and, in the same run
// against the same API server, MetalLB's controller (the peer, v0.15.2
// built from hack/tools/metallb), each as a process: 1 000 Services
// created by 50 workers once the controller serves, while a watch
// timestamps each IP (latency from just before each create is sent);
// then a backlog of 1 000 Services waiting for a controller that starts;
// peak RSS; and how long the process takes to exit on SIGTERM. Both are
// also given as ratios to the same run's floor: a bare client writing the
// same 1 000 status patches. Run it once (-benchtime=1x): each figure is a
// ReportMetric, prefixed with the controller's name.
//
// MetalLB runs with --lb-class and its Services carry that class, so the
// two never touch each other's Services (ironlb leaves other classes
// alone); MetalLB has no leader election (one replica), ironlb runs with
// its own on, as installed.
func BenchmarkControllerLoad(b *testing.B) {
	const n, workers = 1000, 50
	var peers []*benchPeer
	// IRONLB_BENCH_PEERS=metallb (or ironlb) runs one of them only.
	only := os.Getenv("IRONLB_BENCH_PEERS")
	if only == "" || only == "ironlb" {
		peers = append(peers, ironlbPeer(b))
	}
	if only == "" || only == "metallb" {
		peers = append(peers, metallbPeer(b))
	}
	for b.Loop() {
		var floor time.Duration
		for i, p := range peers {
			namespaces := loadPhase(b, p, n, workers, fmt.Sprintf("10.%d", 40+i))
			if floor == 0 {
				floor = patchFloor(b, namespaces[1], n, controller.DefaultOptions().Workers)
				b.ReportMetric(floor.Seconds(), "s-floor-1000-patches")
			}
			// The next controller starts on a cluster without them.
			clearServices(b, namespaces, workers)
		}
		for _, p := range peers {
			b.ReportMetric(p.backlog.Seconds()/floor.Seconds(), p.name+"-x-backlog-over-floor")
		}
		if len(peers) == 2 && peers[1].backlog > 0 {
			b.ReportMetric(peers[0].backlog.Seconds()/peers[1].backlog.Seconds(), "x-ironlb-backlog-over-metallb")
		}
	}
}

// benchPeer is a controller under load: how to start it, how to give it a
// pool for a namespace, and the class its Services carry.
type benchPeer struct {
	name    string
	class   string
	start   func(b *testing.B) *controllerProcess
	pool    func(b *testing.B, name, ns, cidr string)
	backlog time.Duration
}

func ironlbPeer(b *testing.B) *benchPeer {
	bin := buildController(b)
	return &benchPeer{name: "ironlb", start: func(b *testing.B) *controllerProcess { return startProcess(b, bin) },
		pool: createBenchPool}
}

// metallbClass is the class MetalLB serves in the benchmark.
const metallbClass = "metallb.test/bench"

func metallbPeer(b *testing.B) *benchPeer {
	dir := filepath.Join(testenv.RepoRoot(), "hack", "tools", "metallb")
	bin := filepath.Join(b.TempDir(), "metallb-controller")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "go.universe.tf/metallb/controller")
	build.Dir, build.Env = dir, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build MetalLB's controller: %v\n%s", err, out)
	}
	list := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "go.universe.tf/metallb")
	list.Dir = dir
	src, err := list.Output()
	if err != nil {
		b.Fatalf("find MetalLB's module: %v", err)
	}
	crds := filepath.Join(strings.TrimSpace(string(src)), "config", "crd", "bases")
	if _, err := envtest.InstallCRDs(env.Config, envtest.CRDInstallOptions{Paths: []string{crds}, ErrorIfPathMissing: true}); err != nil {
		b.Fatalf("install MetalLB's CRDs: %v", err)
	}
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "metallb-system"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		b.Fatal(err)
	}
	return &benchPeer{name: "metallb", class: metallbClass,
		start: func(b *testing.B) *controllerProcess {
			return startCommand(b, bin, "--kubeconfig", env.Kubeconfig, "--namespace", "metallb-system",
				"--webhook-mode", "disabled", "--disable-cert-rotation", "--lb-class", metallbClass,
				"--port", "0", "--log-level", envOr("IRONLB_BENCH_METALLB_LOG", "warn"))
		},
		pool: func(b *testing.B, name, ns, cidr string) {
			u := &unstructured.Unstructured{}
			u.SetAPIVersion("metallb.io/v1beta1")
			u.SetKind("IPAddressPool")
			u.SetNamespace("metallb-system")
			u.SetName(name)
			_ = unstructured.SetNestedStringSlice(u.Object, []string{cidr}, "spec", "addresses")
			_ = unstructured.SetNestedStringSlice(u.Object, []string{ns}, "spec", "serviceAllocation", "namespaces")
			if err := k8s.Create(context.Background(), u); err != nil {
				b.Fatal(err)
			}
		}}
}

// loadPhase runs one controller through the load and returns its
// namespaces: live, backlog (whose Services the floor is measured on) and
// warm-up.
func loadPhase(b *testing.B, p *benchPeer, n, workers int, prefix string) []string {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stamp := time.Now().UnixNano()
	live := fmt.Sprintf("bench-%s-live-%d", p.name, stamp)
	backlog := fmt.Sprintf("bench-%s-backlog-%d", p.name, stamp)
	warm := fmt.Sprintf("bench-%s-warm-%d", p.name, stamp)
	for _, ns := range []string{live, backlog, warm} {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			b.Fatal(err)
		}
	}
	p.pool(b, live+"-pool", live, prefix+".0.0/20")
	p.pool(b, backlog+"-pool", backlog, prefix+".16.0/20")
	p.pool(b, warm+"-pool", warm, prefix+".32.0/28")

	proc := p.start(b)
	// Per-Service latency is measured on a running controller: one
	// Service served first shows it has its Lease and its caches. The
	// start-up cost is what the backlog figure below measures.
	ww := watchIPs(b, ctx, warm)
	createParallel(b, warm, p.class, 1, 1)
	ww.wait(b, 1, 60*time.Second)
	iw := watchIPs(b, ctx, live)
	start := time.Now()
	created := createParallel(b, live, p.class, n, workers)
	got := iw.wait(b, n, 120*time.Second)
	var last time.Time
	lat := make([]time.Duration, 0, n)
	for name, at := range got {
		lat = append(lat, at.Sub(created[name])) // never clamped: a negative one would be a bug here
		if at.After(last) {
			last = at
		}
	}
	b.ReportMetric(last.Sub(start).Seconds(), p.name+"-s-first-create-to-last-ip")
	b.ReportMetric(percentile(lat, 0.50).Seconds(), p.name+"-s-create-to-ip-p50")
	b.ReportMetric(percentile(lat, 0.99).Seconds(), p.name+"-s-create-to-ip-p99")
	b.ReportMetric(proc.terminate(b).Seconds(), p.name+"-s-sigterm-exit")

	// The backlog: Services that exist before the controller starts.
	createParallel(b, backlog, p.class, n, workers)
	iw2 := watchIPs(b, ctx, backlog)
	started := time.Now()
	proc = p.start(b)
	got = iw2.wait(b, n, 120*time.Second)
	first, last := time.Time{}, time.Time{}
	for _, at := range got {
		if at.After(last) {
			last = at
		}
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	p.backlog = last.Sub(started)
	b.ReportMetric(p.backlog.Seconds(), p.name+"-s-backlog-1000")
	b.ReportMetric(first.Sub(started).Seconds(), p.name+"-s-backlog-first-ip")
	b.ReportMetric(proc.peakRSS(b), p.name+"-MiB-peak-rss")
	b.ReportMetric(proc.cpuSeconds(b), p.name+"-cpu-s-backlog")
	b.ReportMetric(proc.terminate(b).Seconds(), p.name+"-s-sigterm-exit-2")
	return []string{live, backlog, warm}
}

// clearServices deletes the Services of the namespaces, their finalizers
// first (their controller has stopped).
func clearServices(b *testing.B, namespaces []string, workers int) {
	cs := kubernetes.NewForConfigOrDie(env.Config)
	next := make(chan corev1.Service)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for s := range next {
				if len(s.Finalizers) > 0 {
					patch := []byte(`{"metadata":{"finalizers":null}}`)
					if _, err := cs.CoreV1().Services(s.Namespace).Patch(context.Background(), s.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
						b.Error(err)
					}
				}
				if err := cs.CoreV1().Services(s.Namespace).Delete(context.Background(), s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					b.Error(err)
				}
			}
		})
	}
	for _, ns := range namespaces {
		list, err := cs.CoreV1().Services(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range list.Items {
			next <- s
		}
	}
	close(next)
	wg.Wait()
}

func createBenchPool(b *testing.B, name, ns, cidr string) {
	b.Helper()
	pool := &ironlbv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: poolFor(ns, cidr)}
	if err := k8s.Create(context.Background(), pool); err != nil {
		b.Fatal(err)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
