package e2e

import (
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// TestRBAC installs the base's service accounts, roles and bindings in the
// lab (whose API server authorizes with RBAC) and asks the API server what
// each daemon may do: what it needs is allowed, and the least privilege
// the docs promise holds (no Secrets outside its namespace, no writes to
// what it does not own).
func TestRBAC(t *testing.T) {
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), "../manifests")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Resources() {
		switch r.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
		default:
			continue
		}
		m, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: m}
		if err := cl.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("ironlb-e2e-rbac"), client.ForceOwnership); err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	type check struct {
		verb, group, resource, sub, ns string
		allowed                        bool
	}
	ask := func(sa string, checks []check) {
		for _, c := range checks {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   "system:serviceaccount:ironlb-system:" + sa,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:ironlb-system", "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Verb: c.verb, Group: c.group, Resource: c.resource, Subresource: c.sub, Namespace: c.ns,
				},
			}}
			if err := cl.Create(t.Context(), sar); err != nil {
				t.Fatal(err)
			}
			if sar.Status.Allowed != c.allowed {
				t.Errorf("%s may %s %s/%s %s in %q: %v, want %v", sa, c.verb, c.group, c.resource, c.sub, c.ns, sar.Status.Allowed, c.allowed)
			}
		}
	}
	ask("ironlb-speaker", []check{
		{"list", "", "services", "", "", true},
		{"watch", "discovery.k8s.io", "endpointslices", "", "", true},
		{"list", "ironlb.dev", "bgppeers", "", "", true},
		{"create", "ironlb.dev", "announcements", "", "default", true},
		{"patch", "ironlb.dev", "bgppeers", "status", "", true},
		{"create", "events.k8s.io", "events", "", "default", true},
		{"get", "", "secrets", "", "ironlb-system", true},
		{"watch", "", "secrets", "", "ironlb-system", true},
		{"get", "", "secrets", "", "default", false},
		{"list", "", "secrets", "", "", false},
		{"update", "", "services", "status", "default", false},
		{"update", "ironlb.dev", "ippools", "", "", false},
		{"update", "ironlb.dev", "bgppeers", "", "", false},
		{"list", "", "namespaces", "", "", false},
	})
	ask("ironlb-controller", []check{
		{"patch", "", "services", "status", "default", true},
		{"update", "ironlb.dev", "ippools", "status", "", true},
		{"update", "ironlb.dev", "ippools", "finalizers", "", true},
		{"list", "", "namespaces", "", "", true},
		{"create", "coordination.k8s.io", "leases", "", "ironlb-system", true},
		{"create", "coordination.k8s.io", "leases", "", "default", false},
		{"create", "", "events", "", "ironlb-system", true}, // leader election's
		{"create", "events.k8s.io", "events", "", "default", true},
		{"get", "", "secrets", "", "ironlb-system", false},
		{"update", "", "services", "", "default", false},
		{"create", "ironlb.dev", "announcements", "", "default", false},
	})
}
