// Command ironlbctl reports on ironlb and converts MetalLB's configuration.
// Installed as kubectl-ironlb it is also the kubectl plugin `kubectl
// ironlb`.
//
//	ironlbctl status
//	ironlbctl dataplane dump --node NODE
//	ironlbctl convert metallb FILE... > ironlb.yaml
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/internal/kube"
	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/convert"
	"github.com/ironlb/ironlb/pkg/ctl"
	"github.com/ironlb/ironlb/pkg/dataplane"
)

const usage = `usage: %[1]s [--kubeconfig FILE] COMMAND

commands:
  status                            pools and their use, Services with their IPs and who announces
                                    them, BGP sessions, warnings (exit status 3 when there are warnings)
  dataplane dump --node NODE [--port 7476] [--namespace ironlb-system] [--local]
                                    one node's XDP data plane: VIPs, Maglev ring shares, local
                                    endpoints, conntrack fill (its speaker's loopback debug endpoint,
                                    through a port-forward; --local on the node itself)
  convert metallb FILE...           MetalLB's IPAddressPools, L2/BGPAdvertisements, BGPPeers,
                                    Communities and Service annotations as ironlb objects on stdout;
                                    what cannot be converted goes to stderr ("-" reads stdin)
`

func main() {
	code, err := run(os.Args, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", filepath.Base(os.Args[0]), err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func run(args []string, stdout, stderr io.Writer) (int, error) {
	name := filepath.Base(args[0])
	if name == "kubectl-ironlb" {
		name = "kubectl ironlb"
	}
	global := flag.NewFlagSet(name, flag.ContinueOnError)
	global.SetOutput(stderr)
	kubeconfig := global.String("kubeconfig", "", "kubeconfig file; default $KUBECONFIG, ~/.kube/config, or in-cluster")
	global.Usage = func() { _, _ = fmt.Fprintf(stderr, usage, name) }
	if err := global.Parse(args[1:]); err != nil {
		return 2, nil
	}
	rest := global.Args()
	if len(rest) == 0 {
		global.Usage()
		return 2, nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	switch rest[0] {
	case "status":
		c, err := connect(*kubeconfig)
		if err != nil {
			return 1, err
		}
		n, err := ctl.Status(ctx, c, stdout)
		if err != nil {
			return 1, err
		}
		if n > 0 {
			return 3, nil
		}
		return 0, nil
	case "dataplane":
		if len(rest) < 2 || rest[1] != "dump" {
			global.Usage()
			return 2, nil
		}
		fs := flag.NewFlagSet("dataplane dump", flag.ContinueOnError)
		fs.SetOutput(stderr)
		node := fs.String("node", "", "the node (required)")
		port := fs.Int("port", 7476, "the speakers' debug port (--debug-addr)")
		namespace := fs.String("namespace", ironlbv1alpha1.SystemNamespace, "the speakers' namespace")
		local := fs.Bool("local", false, "read the speaker on this machine (127.0.0.1) instead of port-forwarding through the API server: run it on the node")
		if err := fs.Parse(rest[2:]); err != nil {
			return 2, nil
		}
		if *node == "" {
			return 2, errors.New("dataplane dump: --node is required")
		}
		var d *dataplane.Dump
		if *local {
			var err error
			if d, err = ctl.LocalDump(ctx, &http.Client{Timeout: 30 * time.Second}, *port); err != nil {
				return 1, err
			}
		} else {
			cfg, err := restConfig(*kubeconfig)
			if err != nil {
				return 1, err
			}
			c, err := connect(*kubeconfig)
			if err != nil {
				return 1, err
			}
			if d, err = ctl.ForwardDump(ctx, cfg, c, *namespace, *node, *port); err != nil {
				return 1, err
			}
		}
		ctl.PrintDump(d, *node, stdout)
		return 0, nil
	case "convert":
		if len(rest) < 3 || rest[1] != "metallb" {
			global.Usage()
			return 2, nil
		}
		var in []io.Reader
		for _, f := range rest[2:] {
			if f == "-" {
				in = append(in, os.Stdin)
				continue
			}
			fh, err := os.Open(f) //nolint:gosec // G304: the user names the files to convert
			if err != nil {
				return 1, err
			}
			defer func() { _ = fh.Close() }()
			// Documents end at file boundaries.
			in = append(in, fh, strings.NewReader("\n---\n"))
		}
		res, err := convert.MetalLB(io.MultiReader(in...))
		if err != nil {
			return 1, err
		}
		y, err := convert.YAML(res.Objects)
		if err != nil {
			return 1, err
		}
		_, _ = stdout.Write(y)
		for _, r := range res.Report {
			_, _ = fmt.Fprintln(stderr, "note: "+r)
		}
		_, _ = fmt.Fprintf(stderr, "converted %d objects; %d notes above\n", len(res.Objects), len(res.Report))
		return 0, nil
	default:
		global.Usage()
		return 2, fmt.Errorf("unknown command %q", rest[0])
	}
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "ironlbctl"
	return cfg, nil
}

func connect(kubeconfig string) (client.Client, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	scheme, err := kube.Scheme()
	if err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: scheme})
}
