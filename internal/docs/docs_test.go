package docs

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fields lists the property names of a schema, depth first, leaving out
// the insides of label selectors (Kubernetes' own type).
func fields(name string, s apiextensionsv1.JSONSchemaProps, out *[]string) {
	if strings.HasSuffix(strings.ToLower(name), "selector") {
		return
	}
	for n, p := range s.Properties {
		*out = append(*out, n)
		fields(n, p, out)
	}
	if s.Items != nil && s.Items.Schema != nil {
		fields(name, *s.Items.Schema, out)
	}
}

// TestReferenceCoversCRDs: every field of every CRD's spec is named in
// docs/configuration.md (as `field`).
func TestReferenceCoversCRDs(t *testing.T) {
	ref := read(t, "docs/configuration.md")
	// Every word inside backticks: `spec.allocateTo.priority` names
	// spec, allocateTo and priority.
	named := map[string]bool{}
	for _, line := range strings.Split(ref, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			continue
		}
		for _, q := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(line, -1) {
			for _, w := range regexp.MustCompile(`[A-Za-z0-9]+`).FindAllString(q[1], -1) {
				named[w] = true
			}
		}
	}
	files, err := filepath.Glob(filepath.Join("..", "..", "manifests", "crd", "*.yaml"))
	if err != nil || len(files) != 5 {
		t.Fatalf("CRDs: %v %v", files, err)
	}
	for _, f := range files {
		var crd apiextensionsv1.CustomResourceDefinition
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &crd); err != nil {
			t.Fatal(err)
		}
		for _, v := range crd.Spec.Versions {
			spec, ok := v.Schema.OpenAPIV3Schema.Properties["spec"]
			if !ok {
				continue
			}
			var names []string
			fields("spec", spec, &names)
			slices.Sort(names)
			for _, n := range slices.Compact(names) {
				if !named[n] {
					t.Errorf("%s: field %s is not in docs/configuration.md", crd.Spec.Names.Kind, n)
				}
			}
		}
	}
}

// TestDashboardMetricsDocumented: the Grafana dashboard uses only metrics
// the configuration reference documents.
func TestDashboardMetricsDocumented(t *testing.T) {
	ref := read(t, "docs/configuration.md")
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(read(t, "docs/grafana/ironlb.json")), &dash); err != nil {
		t.Fatal(err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("no panels")
	}
	re := regexp.MustCompile(`ironlb_[a-z0-9_]+`)
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range re.FindAllString(tg.Expr, -1) {
				if !strings.Contains(ref, "`"+m+"`") {
					t.Errorf("panel %q uses %s, which docs/configuration.md does not document", p.Title, m)
				}
			}
		}
	}
}

// TestPackageMap: the architecture document's package map names every
// package of the module, so that a package added or moved shows up there.
func TestPackageMap(t *testing.T) {
	arch := read(t, "docs/architecture.md")
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}", "../../...").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p, "github.com/ironlb/ironlb"), "/")
		if rel == "" || strings.HasPrefix(rel, "hack/") {
			continue
		}
		if !strings.Contains(arch, "`"+rel+"`") && !strings.Contains(arch, "`"+rel+"/`") {
			t.Errorf("docs/architecture.md does not name %s", rel)
		}
	}
}
