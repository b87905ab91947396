package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The daemons run in the lab as they run in a cluster: as their service
// accounts, with the roles and bindings of manifests/rbac (the lab's API
// server authorizes with RBAC). A missing permission fails the e2e suite.
var rbacFiles = []string{"rbac/controller/role.yaml", "rbac/speaker/role.yaml", "rbac/bindings.yaml"}

// DaemonKubeconfig is the kubeconfig a daemon (ironlb-controller,
// ironlb-speaker) runs with: a token of its service account.
func (c Config) DaemonKubeconfig(sa string) string { return c.path(sa + ".kubeconfig") }

// installRBAC applies manifests/rbac and writes each daemon's kubeconfig.
func (c Config) installRBAC(ctx context.Context, cl client.Client, manifests string) error {
	for _, f := range rbacFiles {
		b, err := os.ReadFile(filepath.Join(manifests, f))
		if err != nil {
			return err
		}
		dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			u := &unstructured.Unstructured{}
			err := dec.Decode(&u.Object)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			if err := cl.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("ironlb-lab"), client.ForceOwnership); err != nil {
				return fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
			}
		}
	}
	cfg, err := c.RESTConfig()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	admin, err := os.ReadFile(c.Kubeconfig())
	if err != nil {
		return err
	}
	for _, sa := range []string{"ironlb-controller", "ironlb-speaker"} {
		week := int64(7 * 24 * 3600)
		tr, err := cs.CoreV1().ServiceAccounts(SystemNS).CreateToken(ctx, sa,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &week}}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("token for %s: %w", sa, err)
		}
		// The admin kubeconfig with the service account's token.
		kc := string(admin)
		i := strings.Index(kc, "token: ")
		j := strings.Index(kc[i:], "\n")
		if i < 0 || j < 0 {
			return errors.New("the lab kubeconfig has no token line")
		}
		kc = kc[:i] + "token: " + tr.Status.Token + kc[i+j:]
		kc = strings.ReplaceAll(kc, "lab-admin", sa)
		if err := os.WriteFile(c.DaemonKubeconfig(sa), []byte(kc), 0o600); err != nil { //nolint:gosec // G703: the lab's own state folder
			return err
		}
	}
	return nil
}
