package lab

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/internal/kube"
	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
)

// Names of the sample objects.
const (
	DemoService  = "demo"
	DemoPool     = "lab"
	EndpointsBy  = "lab.ironlb.dev"
	SystemNS     = ironlbv1alpha1.SystemNamespace
	managedByKey = "endpointslice.kubernetes.io/managed-by"
)

// RESTConfig returns a client configuration for the lab's API server.
func (c Config) RESTConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 200, 400
	return cfg, nil
}

// Client returns a controller-runtime client for the lab, with the ironlb
// types registered.
func (c Config) Client() (client.Client, error) {
	cfg, err := c.RESTConfig()
	if err != nil {
		return nil, err
	}
	scheme, err := kube.Scheme()
	if err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: scheme})
}

// createObjects installs the CRDs, the Nodes, the sample pool,
// advertisement and Service with its EndpointSlices.
func (c Config) createObjects(ctx context.Context, crdDir string) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	if err := installCRDs(ctx, cl, crdDir); err != nil {
		return fmt.Errorf("install CRDs from %s: %w", crdDir, err)
	}
	if err := cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: SystemNS}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if err := c.installRBAC(ctx, cl, filepath.Dir(crdDir)); err != nil {
		return fmt.Errorf("RBAC: %w", err)
	}
	for _, n := range c.NodeList() {
		if err := c.createNode(ctx, cl, n); err != nil {
			return err
		}
	}
	if err := c.createSamplePools(ctx, cl); err != nil {
		return err
	}
	return c.CreateDemoService(ctx, cl, DemoService, func(s *corev1.Service) {
		if c.BGP {
			s.Annotations = map[string]string{ironlbv1alpha1.AnnotationPool: BGPPool}
		}
	})
}

func (c Config) createNode(ctx context.Context, cl client.Client, n Node) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{
			"kubernetes.io/hostname": n.Name,
			"kubernetes.io/os":       "linux",
		}},
		Spec: corev1.NodeSpec{
			PodCIDR:  n.PodCIDR4.String(),
			PodCIDRs: []string{n.PodCIDR4.String(), n.PodCIDR6.String()},
		},
	}
	if err := cl.Create(ctx, node); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create node %s: %w", n.Name, err)
	}
	now := metav1.Now()
	node.Status = corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n.IPv4.String()},
			{Type: corev1.NodeInternalIP, Address: n.IPv6.String()},
			{Type: corev1.NodeHostName, Address: n.Name},
		},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "LabNode",
			Message: "lab nodes are ready while the lab runs", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
	}
	if err := cl.Status().Update(ctx, node); err != nil {
		return fmt.Errorf("set status of node %s: %w", n.Name, err)
	}
	return nil
}

// createSamplePools makes the sample pool and its L2Advertisement and the
// BGP pool, peers and advertisement.
func (c Config) createSamplePools(ctx context.Context, cl client.Client) error {
	pool := &ironlbv1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: DemoPool},
		Spec:       ironlbv1alpha1.IPPoolSpec{AvoidBuggyIPs: true},
	}
	for _, a := range c.Pool {
		pool.Spec.Addresses = append(pool.Spec.Addresses, ironlbv1alpha1.AddressRange(a))
	}
	if err := cl.Create(ctx, pool); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create pool: %w", err)
	}
	adv := &ironlbv1alpha1.L2Advertisement{
		ObjectMeta: metav1.ObjectMeta{Name: "lab"},
		Spec:       ironlbv1alpha1.L2AdvertisementSpec{PoolSelection: ironlbv1alpha1.PoolSelection{IPPools: []string{DemoPool}}},
	}
	if err := cl.Create(ctx, adv); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create L2Advertisement: %w", err)
	}
	return c.createBGPObjects(ctx, cl)
}

// DemoPorts are the sample Service's ports.
var DemoPorts = []corev1.ServicePort{
	{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(80)},
	{Name: "echo-tcp", Protocol: corev1.ProtocolTCP, Port: 7, TargetPort: intstr.FromInt32(7)},
	{Name: "echo-udp", Protocol: corev1.ProtocolUDP, Port: 7, TargetPort: intstr.FromInt32(7)},
}

// CreateDemoService creates a dual-stack LoadBalancer Service in the
// default namespace served by the lab's backends, with EndpointSlices as
// the EndpointSlice controller would write them; mutate, when not nil,
// adjusts the Service before it is created.
func (c Config) CreateDemoService(ctx context.Context, cl client.Client, name string, mutate func(*corev1.Service)) error {
	svc := DemoServiceObject(name)
	svc.Spec.Selector = nil
	if mutate != nil {
		mutate(svc)
	}
	if err := cl.Create(ctx, svc); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create service %s: %w", name, err)
	}
	for _, fam := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
		es := c.endpointSlice(name, fam, svc.Spec.Ports, nil)
		if err := cl.Create(ctx, es); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create endpointslice %s: %w", es.Name, err)
		}
	}
	return nil
}

// DemoServiceObject is the demo's dual-stack LoadBalancer Service in the
// default namespace, selecting the demo Deployment's pods (the process
// lab drops the selector and writes EndpointSlices itself).
func DemoServiceObject(name string) *corev1.Service {
	policy := corev1.IPFamilyPolicyPreferDualStack
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{
			Type:           corev1.ServiceTypeLoadBalancer,
			IPFamilyPolicy: &policy,
			IPFamilies:     []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
			Ports:          DemoPorts,
			Selector:       map[string]string{"app": DemoService},
		},
	}
}

// endpointSlice builds a Service's slice for one family over all pods;
// ready, when not nil, overrides a pod's readiness by pod name.
func (c Config) endpointSlice(svc string, fam discoveryv1.AddressType, ports []corev1.ServicePort, ready map[string]bool) *discoveryv1.EndpointSlice {
	suffix := "v4"
	if fam == discoveryv1.AddressTypeIPv6 {
		suffix = "v6"
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "default",
			Name:      svc + "-" + suffix,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: svc,
				managedByKey:                 EndpointsBy,
			},
		},
		AddressType: fam,
	}
	for _, p := range ports {
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{
			Name: new(p.Name), Protocol: new(p.Protocol), Port: new(p.TargetPort.IntVal),
		})
	}
	for _, p := range c.Pods() {
		addr := p.IPv4
		if fam == discoveryv1.AddressTypeIPv6 {
			addr = p.IPv6
		}
		r := true
		if v, ok := ready[p.Name]; ok {
			r = v
		}
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{addr.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: new(r), Serving: new(r), Terminating: new(false)},
			NodeName:   new(p.Node.Name),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: p.Name},
		})
	}
	return es
}

// SetEndpointsReady rewrites a lab Service's EndpointSlices with the given
// pods' readiness (others stay ready), as the EndpointSlice controller
// would when pods become unready or a node is lost.
func (c Config) SetEndpointsReady(ctx context.Context, cl client.Client, svc string, ready map[string]bool) error {
	var s corev1.Service
	if err := cl.Get(ctx, types.NamespacedName{Namespace: "default", Name: svc}, &s); err != nil {
		return err
	}
	for _, fam := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
		want := c.endpointSlice(svc, fam, s.Spec.Ports, ready)
		var cur discoveryv1.EndpointSlice
		if err := cl.Get(ctx, client.ObjectKeyFromObject(want), &cur); err != nil {
			return err
		}
		cur.Endpoints = want.Endpoints
		if err := cl.Update(ctx, &cur); err != nil {
			return err
		}
	}
	return nil
}

// ServiceIPs returns the IPs in a Service's status.
func ServiceIPs(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ip, err := netip.ParseAddr(ing.IP); err == nil {
			out = append(out, ip)
		}
	}
	return out
}

// WaitServiceIPs polls until the Service has want IPs in its status.
func WaitServiceIPs(ctx context.Context, cl client.Client, key types.NamespacedName, want int, limit time.Duration) ([]netip.Addr, error) {
	deadline := time.Now().Add(limit)
	for {
		var svc corev1.Service
		err := cl.Get(ctx, key, &svc)
		if err == nil {
			if ips := ServiceIPs(&svc); len(ips) >= want {
				return ips, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("service %s has no %d IPs after %s (last error: %v)", key, want, limit, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// CRDDir is where the generated CRDs live, relative to the repository root.
func CRDDir(root string) string { return filepath.Join(root, "manifests", "crd") }
