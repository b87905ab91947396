// Package testenv starts a real etcd and kube-apiserver (built by
// hack/kube-binaries.sh) with ironlb's CRDs installed, for integration tests.
// It never skips: these tests must run wherever `make test` runs.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
)

// RepoRoot returns the repository's top folder.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Env is a running API server.
type Env struct {
	*envtest.Environment
	// Config connects as an administrator.
	Config *rest.Config
	// Kubeconfig is a file with the same credentials, for processes.
	Kubeconfig string
}

// Start starts etcd and kube-apiserver and installs the CRDs. The binaries
// come from KUBEBUILDER_ASSETS, else from bin/k8s, which hack/kube-binaries.sh
// fills; it is run here when they are missing.
func Start() (*Env, error) {
	if err := ironlbv1alpha1.AddToScheme(scheme.Scheme); err != nil {
		return nil, err
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		out, err := exec.Command(filepath.Join(RepoRoot(), "hack", "kube-binaries.sh")).Output()
		if err != nil {
			return nil, fmt.Errorf("build Kubernetes binaries with hack/kube-binaries.sh: %w", err)
		}
		assets = string(out[:len(out)-1])
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "manifests", "crd")},
		ErrorIfCRDPathMissing: true,
	}
	// A dual-stack service range, so tests can create IPv6 and dual-stack
	// Services.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/16,fd00:10:96::/108")
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start kube-apiserver and etcd from %s: %w", assets, err)
	}
	cfg.QPS, cfg.Burst = 1000, 2000
	user, err := env.AddUser(envtest.User{Name: "ironlb-admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("add admin user: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	f, err := os.CreateTemp("", "ironlb-kubeconfig-*")
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	if _, err := f.Write(kc); err != nil {
		_ = env.Stop()
		return nil, err
	}
	_ = f.Close()
	return &Env{Environment: env, Config: cfg, Kubeconfig: f.Name()}, nil
}

// Main starts the API server for a test package, sets *env and *c to it
// and an administrator client, runs the tests and stops the server. Use it as
// the body of TestMain.
func Main(m *testing.M, env **Env, c *client.Client) {
	e, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	k, err := client.New(e.Config, client.Options{})
	if err != nil {
		_ = e.Stop()
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*env, *c = e, k
	code := m.Run()
	_ = e.Stop()
	os.Exit(code)
}

// Stop stops the API server and etcd and removes the kubeconfig.
func (e *Env) Stop() error {
	_ = os.Remove(e.Kubeconfig)
	return e.Environment.Stop()
}
