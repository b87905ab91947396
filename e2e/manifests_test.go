package e2e

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// TestManifests renders the kustomize base the way `kubectl apply -k`
// does and applies every object, then every sample, to the lab's API
// server with server-side apply in dry-run mode: a manifest the API server
// would refuse (schema, CEL rules, RBAC shape, a typo in a field) fails.
func TestManifests(t *testing.T) {
	root := filepath.Join("..", "manifests")
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), root)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", root, err)
	}
	var objs []*unstructured.Unstructured
	kinds := map[string]int{}
	for _, r := range res.Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: m}
		objs = append(objs, u)
		kinds[u.GetKind()]++
	}
	for kind, n := range map[string]int{"CustomResourceDefinition": 5, "Deployment": 1, "DaemonSet": 1, "ClusterRole": 2, "Role": 2, "ServiceAccount": 2, "Namespace": 1, "PodDisruptionBudget": 1} {
		if kinds[kind] != n {
			t.Errorf("the base has %d %s, want %d (all: %v)", kinds[kind], kind, n, kinds)
		}
	}
	samples, err := filepath.Glob(filepath.Join(root, "samples", "*.yaml"))
	if err != nil || len(samples) < 3 {
		t.Fatalf("samples: %v %v", samples, err)
	}
	for _, f := range samples {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewYAMLOrJSONDecoder(strings.NewReader(string(b)), 4096)
		n := 0
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: after %d objects: %v", f, n, err)
			}
			if len(u.Object) > 0 {
				objs = append(objs, u)
				n++
			}
		}
		// Every document the file has, none dropped.
		if want := len(regexp.MustCompile(`(?m)^kind: `).FindAll(b, -1)); n != want {
			t.Errorf("%s: decoded %d objects, the file has %d", f, n, want)
		}
	}
	accepted := 0
	for _, u := range objs {
		err := cl.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(u),
			client.FieldOwner("ironlb-e2e-manifests"), client.ForceOwnership, client.DryRunAll)
		if err != nil {
			t.Errorf("%s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
			continue
		}
		accepted++
	}
	t.Logf("%d of %d objects accepted by the API server (server-side apply, dry run)", accepted, len(objs))
}
