package lab

import (
	"context"
	"errors"
	"fmt"
	"time"

	"os"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Kustomize renders a kustomization as `kubectl apply -k` does.
func Kustomize(dir string) ([]*unstructured.Unstructured, error) {
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range res.Resources() {
		m, err := r.Map()
		if err != nil {
			return nil, err
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out, nil
}

// ApplyKustomize does what `kubectl apply --server-side -k dir` does: it
// renders the kustomization and applies every object, in order, with
// server-side apply under kubectl's field manager.
func ApplyKustomize(ctx context.Context, c Config, dir string) error {
	objs, err := Kustomize(dir)
	if err != nil {
		return err
	}
	cl, err := c.Client()
	if err != nil {
		return err
	}
	for _, u := range objs {
		if err := applyRetry(ctx, cl, u); err != nil {
			return fmt.Errorf("apply %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	return nil
}

// applyRetry applies one object, retrying for a few seconds while its
// kind is not served yet (a CRD applied just before).
func applyRetry(ctx context.Context, cl client.Client, u *unstructured.Unstructured) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := cl.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("kubectl"))
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// DeleteKustomize does what `kubectl delete -k dir` does: it deletes every
// object the kustomization renders, in order, and does not wait.
func DeleteKustomize(ctx context.Context, c Config, dir string) error {
	objs, err := Kustomize(dir)
	if err != nil {
		return err
	}
	cl, err := c.Client()
	if err != nil {
		return err
	}
	var errs []error
	for _, u := range objs {
		if err := cl.Delete(ctx, u, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s %s: %w", u.GetKind(), u.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// installCRDs applies every CRD in dir and waits until each is
// established.
func installCRDs(ctx context.Context, cl client.Client, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no CRDs in %s", dir)
	}
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(b, &u.Object); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if err := cl.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("ironlb-lab"), client.ForceOwnership); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		names = append(names, u.GetName())
	}
	return poll(ctx, 30*time.Second, func() error {
		for _, n := range names {
			crd := &unstructured.Unstructured{}
			crd.SetAPIVersion("apiextensions.k8s.io/v1")
			crd.SetKind("CustomResourceDefinition")
			if err := cl.Get(ctx, types.NamespacedName{Name: n}, crd); err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			established := false
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					established = true
				}
			}
			if !established {
				return fmt.Errorf("CRD %s is not established", n)
			}
		}
		return nil
	})
}

// WaitNodesReady polls until want Nodes are Ready.
func WaitNodesReady(ctx context.Context, cl client.Client, want int, limit time.Duration) error {
	return poll(ctx, limit, func() error {
		var nodes corev1.NodeList
		if err := cl.List(ctx, &nodes); err != nil {
			return err
		}
		ready := 0
		for _, n := range nodes.Items {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		if ready < want {
			return fmt.Errorf("%d of %d Nodes Ready", ready, want)
		}
		return nil
	})
}

// WaitInstalled polls until the controller Deployment has all its
// replicas available and the speaker DaemonSet is ready on every node,
// both on their current template.
func WaitInstalled(ctx context.Context, cl client.Client, nodes int, limit time.Duration) error {
	return poll(ctx, limit, func() error {
		var dep appsv1.Deployment
		if err := cl.Get(ctx, types.NamespacedName{Namespace: SystemNS, Name: "ironlb-controller"}, &dep); err != nil {
			return err
		}
		want := int32(1)
		if dep.Spec.Replicas != nil {
			want = *dep.Spec.Replicas
		}
		if dep.Status.ObservedGeneration < dep.Generation || dep.Status.UpdatedReplicas < want || dep.Status.AvailableReplicas < want {
			return fmt.Errorf("deployment ironlb-controller: %d of %d updated and available", min(dep.Status.UpdatedReplicas, dep.Status.AvailableReplicas), want)
		}
		return DaemonSetRolledOut(ctx, cl, nodes)
	})
}

// DaemonSetRolledOut tells whether the speaker DaemonSet runs its current
// template, ready, on nodes nodes.
func DaemonSetRolledOut(ctx context.Context, cl client.Client, nodes int) error {
	var ds appsv1.DaemonSet
	if err := cl.Get(ctx, types.NamespacedName{Namespace: SystemNS, Name: "ironlb-speaker"}, &ds); err != nil {
		return err
	}
	st := ds.Status
	if st.ObservedGeneration < ds.Generation || int(st.DesiredNumberScheduled) != nodes || st.UpdatedNumberScheduled != st.DesiredNumberScheduled || st.NumberReady != st.DesiredNumberScheduled || st.NumberAvailable != st.DesiredNumberScheduled {
		return fmt.Errorf("daemonset ironlb-speaker: %d desired, %d updated, %d ready", st.DesiredNumberScheduled, st.UpdatedNumberScheduled, st.NumberReady)
	}
	return nil
}

// poll runs check every 250 ms until it returns nil or limit passes.
func poll(ctx context.Context, limit time.Duration, check func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// DemoDeployment is the kubelet lab's backends: `ironlb-lab backend`
// pods (HTTP on 80, echo on TCP and UDP 7, each answer naming the pod),
// spread evenly over the nodes, ready when port 80 accepts.
func DemoDeployment(name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: new(int64(2)),
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: corev1.LabelHostname, WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
					}},
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot: new(true), RunAsUser: new(int64(65532)),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:            "backend",
						Image:           BackendImage,
						ImagePullPolicy: corev1.PullNever,
						Args:            []string{"backend"},
						Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
							FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"},
						}}},
						Ports: []corev1.ContainerPort{
							{Name: "http", ContainerPort: 80},
							{Name: "echo-tcp", ContainerPort: 7},
							{Name: "echo-udp", ContainerPort: 7, Protocol: corev1.ProtocolUDP},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(80)}},
							PeriodSeconds: 2,
						},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: new(false), ReadOnlyRootFilesystem: new(true),
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
				},
			},
		},
	}
}
