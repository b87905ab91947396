package lab

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// startControlPlane runs etcd and kube-apiserver on 127.0.0.1 and writes
// the kubeconfig. The API server's serving certificate is its own
// self-signed one; the kubeconfig skips verification, which is fine for a
// loopback lab and nothing else.
func (c Config) startControlPlane(ctx context.Context) error {
	for _, port := range []int{c.APIPort, c.EtcdPort, c.EtcdPort + 1} {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("port %d on 127.0.0.1 is taken (another lab, or change it): %w", port, err)
		}
		_ = l.Close()
	}
	pki := c.path("pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	if err := c.startEtcd(""); err != nil {
		return err
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	saKey := filepath.Join(pki, "sa.key")
	if err := os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	token := hex.EncodeToString(tok)
	tokens := filepath.Join(pki, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+",lab-admin,lab-admin,system:masters\n"), 0o600); err != nil {
		return err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", c.APIPort)
	if err := c.StartAPIServer(); err != nil {
		return err
	}
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: lab-admin
  user:
    token: %s
contexts:
- name: lab
  context: {cluster: lab, user: lab-admin}
current-context: lab
`, server, token)
	if err := os.WriteFile(c.Kubeconfig(), []byte(kubeconfig), 0o600); err != nil {
		return err
	}
	return waitHealthy(ctx, server+"/readyz", token, 90*time.Second)
}

// startEtcd runs etcd on 127.0.0.1:EtcdPort in namespace ns (the root
// namespace when empty).
func (c Config) startEtcd(ns string) error {
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", c.EtcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", c.EtcdPort+1)
	return c.Start("etcd", ns, filepath.Join(c.K8sBin, "etcd"),
		"--name", "lab",
		"--data-dir", c.path("etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "lab="+peerURL,
		"--unsafe-no-fsync", "--quota-backend-bytes", "1073741824",
	)
}

// StartAPIServer runs kube-apiserver on 127.0.0.1:APIPort with the lab's
// keys; the e2e suites stop and restart it to show that speakers keep
// announcing through an outage.
func (c Config) StartAPIServer() error {
	pki := c.path("pki")
	saKey := filepath.Join(pki, "sa.key")
	return c.Start("kube-apiserver", "", filepath.Join(c.K8sBin, "kube-apiserver"),
		"--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", c.EtcdPort),
		"--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(c.APIPort),
		"--cert-dir", filepath.Join(pki, "serving"),
		"--token-auth-file", filepath.Join(pki, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--service-account-issuer", fmt.Sprintf("https://127.0.0.1:%d", c.APIPort),
		"--service-account-key-file", saKey,
		"--service-account-signing-key-file", saKey,
		"--service-cluster-ip-range", "10.96.0.0/16,fd96::/108",
		"--disable-admission-plugins", "ServiceAccount",
		"--allow-privileged",
		"--endpoint-reconciler-type", "none",
	)
}

// WaitAPIServer polls until the API server is ready again.
func (c Config) WaitAPIServer(ctx context.Context, limit time.Duration) error {
	b, err := os.ReadFile(c.path("pki", "tokens.csv"))
	if err != nil {
		return err
	}
	token, _, _ := strings.Cut(string(b), ",")
	return waitHealthy(ctx, fmt.Sprintf("https://127.0.0.1:%d/readyz", c.APIPort), token, limit)
}

// waitHealthy polls the API server's readiness endpoint until it answers.
func waitHealthy(ctx context.Context, url, token string, limit time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback lab with a self-signed server
	}}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("status %s", resp.Status)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready after %s (see %s): %w", limit, "logs/kube-apiserver.log", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
