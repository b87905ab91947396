package chart

import (
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

var (
	chartDir = filepath.Join("..", "..", "..", "charts", "ironlb")
	baseDir  = filepath.Join("..", "..", "..", "manifests")
)

const namespace = "ironlb-system"

type object = map[string]any

func key(o object) string {
	md, _ := o["metadata"].(map[string]any)
	ns, _ := md["namespace"].(string)
	return fmt.Sprintf("%s/%s/%s", o["kind"], ns, md["name"])
}

// render renders the chart as helm install --namespace ironlb-system does,
// CRDs included, and returns its objects by kind/namespace/name.
func render(t *testing.T, values map[string]any) (map[string]object, error) {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.ToRenderValues(c, values, chartutil.ReleaseOptions{Name: "ironlb", Namespace: namespace, IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(c, vals)
	if err != nil {
		return nil, err
	}
	out := map[string]object{}
	var docs []string
	for _, name := range slices.Sorted(mapKeys(files)) {
		if strings.HasSuffix(name, ".tpl") {
			continue
		}
		docs = append(docs, strings.Split(files[name], "\n---")...)
	}
	for _, f := range c.CRDObjects() {
		docs = append(docs, strings.Split(string(f.File.Data), "\n---")...)
	}
	for _, d := range docs {
		var o object
		if err := yaml.Unmarshal([]byte(d), &o); err != nil {
			t.Fatalf("%v in:\n%s", err, d)
		}
		if len(o) == 0 {
			continue
		}
		if _, dup := out[key(o)]; dup {
			t.Fatalf("the chart renders %s twice", key(o))
		}
		out[key(o)] = o
	}
	return out, nil
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// kustomized renders the base as kubectl apply -k does.
func kustomized(t *testing.T) map[string]object {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), baseDir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]object{}
	for _, r := range res.Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		out[key(m)] = m
	}
	return out
}

// helmLabels are the labels the chart adds to its objects' metadata.
var helmLabels = []string{"app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"}

func normalize(o object) object {
	b, _ := yaml.Marshal(o)
	var c object
	_ = yaml.Unmarshal(b, &c)
	if md, ok := c["metadata"].(map[string]any); ok {
		if l, ok := md["labels"].(map[string]any); ok {
			for _, k := range helmLabels {
				delete(l, k)
			}
			if len(l) == 0 {
				delete(md, "labels")
			}
		}
	}
	return c
}

// isHook tells whether o is a Helm hook, not part of the release proper.
func isHook(o object) bool {
	md, _ := o["metadata"].(map[string]any)
	a, _ := md["annotations"].(map[string]any)
	_, ok := a["helm.sh/hook"]
	return ok
}

// TestUninstallHook: the pre-delete hook runs the controller image with
// --uninstall, under a ServiceAccount whose roles exist before the Job
// (lower weight) and that can do what LetGo does; turned off, there is
// none.
func TestUninstallHook(t *testing.T) {
	got, err := render(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	job := got["Job/"+namespace+"/ironlb-uninstall"]
	if job == nil {
		t.Fatal("no uninstall Job")
	}
	b, _ := yaml.Marshal(job)
	for _, want := range []string{"helm.sh/hook: pre-delete", "- --uninstall", "serviceAccountName: ironlb-uninstall", "image: ghcr.io/ironlb/ironlb-controller:"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the uninstall Job lacks %q:\n%s", want, b)
		}
	}
	for _, k := range []string{"ServiceAccount/" + namespace + "/ironlb-uninstall", "ClusterRole//ironlb-uninstall", "ClusterRoleBinding//ironlb-uninstall",
		"Role/" + namespace + "/ironlb-uninstall", "RoleBinding/" + namespace + "/ironlb-uninstall"} {
		o := got[k]
		if o == nil || !isHook(o) {
			t.Errorf("%s is missing or not a hook", k)
			continue
		}
		w := o["metadata"].(map[string]any)["annotations"].(map[string]any)["helm.sh/hook-weight"]
		if w != "-10" && w != "-5" {
			t.Errorf("%s has hook weight %v; it must come before the Job", k, w)
		}
	}
	off, err := render(t, map[string]any{"uninstallHook": map[string]any{"enabled": false}})
	if err != nil {
		t.Fatal(err)
	}
	for k, o := range off {
		if isHook(o) {
			t.Errorf("uninstallHook.enabled=false still renders %s", k)
		}
	}
}

// TestLint: helm lint finds nothing to complain about.
func TestLint(t *testing.T) {
	for _, values := range []map[string]any{nil, {"namespace": map[string]any{"create": true}}} {
		l := lint.All(chartDir, values, namespace, false)
		for _, m := range l.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("helm lint: %s", m)
			}
		}
	}
}

// TestSameAsKustomize: with the defaults (and the namespace it would make)
// the chart renders exactly the kustomize base's objects: same CRDs, same
// RBAC rules, same Deployment and DaemonSet, only Helm's labels added.
func TestSameAsKustomize(t *testing.T) {
	got, err := render(t, map[string]any{"namespace": map[string]any{"create": true}})
	if err != nil {
		t.Fatal(err)
	}
	want := kustomized(t)
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("the chart lacks %s", k)
			continue
		}
		if gn, wn := normalize(g), normalize(w); !reflect.DeepEqual(gn, wn) {
			gb, _ := yaml.Marshal(gn)
			wb, _ := yaml.Marshal(wn)
			t.Errorf("%s differs.\nchart:\n%s\nkustomize:\n%s", k, gb, wb)
		}
	}
	hooks := 0
	for k, o := range got {
		if isHook(o) {
			// helm uninstall's first step; kubectl delete -k has none.
			hooks++
			continue
		}
		if _, ok := want[k]; !ok {
			t.Errorf("the chart has %s, the kustomize base does not", k)
		}
	}
	if hooks == 0 {
		t.Error("the chart has no uninstall hook")
	}
	def, err := render(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := def["Namespace//"+namespace]; ok {
		t.Error("by default the chart makes the namespace (helm install --create-namespace would then fail)")
	}
}

// TestValues: the values the chart offers reach the objects, and bad ones
// fail the render with a message.
func TestValues(t *testing.T) {
	values := map[string]any{}
	if err := yaml.Unmarshal([]byte(`
image: {speaker: {repository: registry.example.com/ironlb-speaker, tag: v9}, pullPolicy: Always}
speaker:
  dataplane: kernel
  memberlist: {port: 7950, secretName: my-key, key: "0123456789abcdef0123"}
  nodeSelector: {role: edge}
controller: {replicas: 3}
ipPools: [{name: lan, spec: {addresses: [192.0.2.0/24]}}]
l2Advertisements: [{name: lan, spec: {ipPools: [lan], interfaces: [eth0]}}]
metrics: {serviceMonitor: {enabled: true, labels: {release: prom}}}
`), &values); err != nil {
		t.Fatal(err)
	}
	got, err := render(t, values)
	if err != nil {
		t.Fatal(err)
	}
	ds, _ := yaml.Marshal(got["DaemonSet/"+namespace+"/ironlb-speaker"])
	for _, want := range []string{"image: registry.example.com/ironlb-speaker:v9", "imagePullPolicy: Always", "--dataplane=kernel",
		"--memberlist-port=7950", "--memberlist-secret-name=my-key", "containerPort: 7950", "role: edge"} {
		if !strings.Contains(string(ds), want) {
			t.Errorf("the DaemonSet lacks %q", want)
		}
	}
	dep, _ := yaml.Marshal(got["Deployment/"+namespace+"/ironlb-controller"])
	for _, want := range []string{"replicas: 3", "--memberlist-secret-name=my-key", "ironlb-controller:v0.1.0"} {
		if !strings.Contains(string(dep), want) {
			t.Errorf("the Deployment lacks %q", want)
		}
	}
	sec, ok := got["Secret/"+namespace+"/my-key"]
	if !ok || !strings.Contains(fmt.Sprint(sec["data"]), "secretkey") {
		t.Errorf("no memberlist Secret with a secretkey: %v", sec)
	}
	for _, k := range []string{"IPPool//lan", "L2Advertisement//lan", "ServiceMonitor/" + namespace + "/ironlb-speaker",
		"ServiceMonitor/" + namespace + "/ironlb-controller", "Service/" + namespace + "/ironlb-speaker-metrics"} {
		if _, ok := got[k]; !ok {
			t.Errorf("no %s", k)
		}
	}
	for name, bad := range map[string]string{
		"unknown data plane":  `{speaker: {dataplane: dpdk}}`,
		"short key":           `{speaker: {memberlist: {key: short}}}`,
		"object without name": `{ipPools: [{spec: {addresses: [192.0.2.0/24]}}]}`,
	} {
		v := map[string]any{}
		if err := yaml.Unmarshal([]byte(bad), &v); err != nil {
			t.Fatal(err)
		}
		if _, err := render(t, v); err == nil {
			t.Errorf("%s: rendered", name)
		}
	}
}
