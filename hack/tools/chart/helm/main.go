// Command helm installs and uninstalls a chart with Helm's own Go library,
// as `helm install` and `helm uninstall` do; the kubelet lab's e2e suite
// uses it (no helm binary needed).
//
//	go run ./helm install --kubeconfig K --namespace ironlb-system --release ironlb --chart ../../../charts/ironlb --values v.yaml
//	go run ./helm uninstall --kubeconfig K --namespace ironlb-system --release ironlb
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "helm:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: helm install|uninstall [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig")
	namespace := fs.String("namespace", "ironlb-system", "release namespace")
	release := fs.String("release", "ironlb", "release name")
	chartDir := fs.String("chart", "", "chart folder (install)")
	valuesFile := fs.String("values", "", "values file (install)")
	createNS := fs.Bool("create-namespace", false, "create the release namespace (install)")
	timeout := fs.Duration("timeout", 3*time.Minute, "how long to wait for the resources")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	settings := cli.New()
	settings.KubeConfig = *kubeconfig
	cfg := new(action.Configuration)
	if err := cfg.Init(settings.RESTClientGetter(), *namespace, "secret", log.Printf); err != nil {
		return err
	}
	switch args[0] {
	case "install":
		ch, err := loader.Load(*chartDir)
		if err != nil {
			return err
		}
		vals := map[string]any{}
		if *valuesFile != "" {
			v, err := chartutil.ReadValuesFile(*valuesFile)
			if err != nil {
				return err
			}
			vals = v.AsMap()
		}
		in := action.NewInstall(cfg)
		in.ReleaseName, in.Namespace = *release, *namespace
		in.Wait, in.Timeout, in.CreateNamespace = true, *timeout, *createNS
		rel, err := in.Run(ch, vals)
		if err != nil {
			return err
		}
		fmt.Printf("installed %s (chart %s %s) in %s: %s\n", rel.Name, rel.Chart.Metadata.Name, rel.Chart.Metadata.Version, rel.Namespace, rel.Info.Status)
	case "uninstall":
		un := action.NewUninstall(cfg)
		un.Timeout = *timeout
		res, err := un.Run(*release)
		if err != nil {
			return err
		}
		fmt.Printf("uninstalled %s: %s\n", *release, res.Release.Info.Status)
	default:
		return fmt.Errorf("unknown command %q", args[0])
	}
	return nil
}
