// Command images builds the ironlb-controller and ironlb-speaker images
// from static binaries, without a container daemon: a base layer (CA
// certificates, passwd and group with a non-root user) and a layer with
// the binaries, on an empty image. Everything that goes in is fixed by the
// inputs (file times are --epoch, owners root, no build-host paths), so the
// same commit gives the same digests. It writes one tarball per image
// (docker-archive format: docker load, podman load, ctr images import)
// and, with --push, pushes them.
//
//	go run . --bin ../../../bin --out ../../../_output/images --tag v0.1.0 [--repo ghcr.io/ironlb] [--push]
package main

import (
	"archive/tar"
	"bytes"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

// Spec is one image: its name and the binaries it carries, the first
// being the entrypoint.
type Spec struct {
	Name     string
	Binaries []string
	// User is the user the image runs as ("" is root).
	User string
	// Cmd is the image's default arguments to the entrypoint.
	Cmd []string
	// Repo, when set, replaces --repo for this image.
	Repo string
}

// Specs are the images ironlb ships, as the Dockerfile's targets.
var Specs = []Spec{
	{Name: "ironlb-controller", Binaries: []string{"ironlb-controller"}, User: "65532:65532"},
	// The speaker runs as root with a few capabilities (see
	// manifests/speaker.yaml); ironlbctl comes along for debugging.
	{Name: "ironlb-speaker", Binaries: []string{"ironlb-speaker", "ironlbctl"}},
}

// LabSpecs are the images only the kubelet lab uses (--lab), named under
// localhost/ so that nothing tries to pull them: the demo's backends and
// the pods' sandbox, both the lab's own binary.
var LabSpecs = []Spec{
	{Name: "ironlb-lab", Binaries: []string{"ironlb-lab"}, User: "65532:65532", Repo: "localhost"},
	{Name: "ironlb-lab-pause", Binaries: []string{"ironlb-lab"}, User: "65532:65532", Repo: "localhost", Cmd: []string{"pause"}},
}

// Options are the inputs of a build.
type Options struct {
	Bin      string
	Version  string
	Revision string
	Source   string
	// Epoch is the time of every file and of the image: the commit's.
	Epoch time.Time
	Arch  string
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	var o Options
	fs.StringVar(&o.Bin, "bin", "bin", "folder holding the static binaries")
	outDir := fs.String("out", "_output/images", "folder the image tarballs go to")
	repo := fs.String("repo", "ghcr.io/ironlb", "repository the images are named in")
	fs.StringVar(&o.Version, "tag", "dev", "image tag and version label")
	fs.StringVar(&o.Revision, "revision", "", "source revision label (the commit)")
	fs.StringVar(&o.Source, "source", "https://github.com/ironlb/ironlb", "source label")
	epoch := fs.Int64("epoch", 0, "Unix time of every file and of the image (SOURCE_DATE_EPOCH; the commit time)")
	fs.StringVar(&o.Arch, "arch", runtime.GOARCH, "architecture of the binaries")
	push := fs.Bool("push", false, "also push the images to --repo (credentials from the docker config)")
	withLab := fs.Bool("lab", false, "also build the kubelet lab's images (localhost/ironlb-lab, localhost/ironlb-lab-pause; never pushed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" && *epoch == 0 {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
		*epoch = n
	}
	o.Epoch = time.Unix(*epoch, 0).UTC()
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	specs := Specs
	if *withLab {
		specs = append(append([]Spec(nil), Specs...), LabSpecs...)
	}
	for _, s := range specs {
		img, err := Build(s, o)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		r := *repo
		if s.Repo != "" {
			r = s.Repo
		}
		ref, err := name.NewTag(r + "/" + s.Name + ":" + o.Version)
		if err != nil {
			return err
		}
		file := filepath.Join(*outDir, s.Name+".tar")
		if err := tarball.WriteToFile(file, ref, img); err != nil {
			return fmt.Errorf("write %s: %w", file, err)
		}
		digest, err := img.Digest()
		if err != nil {
			return err
		}
		// The image ID (the config's digest) is what a container runtime
		// shows for an imported tarball, whose manifest it rewrites.
		id, err := img.ConfigName()
		if err != nil {
			return err
		}
		_, _ = fmt.Fprintf(out, "%s@%s -> %s (image ID %s)\n", ref, digest, file, id)
		if *push && s.Repo == "" {
			if err := remote.Write(ref, img, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
				return fmt.Errorf("push %s: %w", ref, err)
			}
			_, _ = fmt.Fprintf(out, "pushed %s\n", ref)
		}
	}
	return nil
}

// Build makes one image.
func Build(s Spec, o Options) (v1.Image, error) {
	base, err := baseLayer(o.Epoch)
	if err != nil {
		return nil, err
	}
	bins, err := binaryLayer(s, o)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, History: v1.History{Created: v1.Time{Time: o.Epoch}, CreatedBy: "ironlb images: CA certificates, passwd, group", Comment: "base"}},
		mutate.Addendum{Layer: bins, History: v1.History{Created: v1.Time{Time: o.Epoch}, CreatedBy: "ironlb images: " + fmt.Sprint(s.Binaries)}},
	)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = o.Arch, "linux"
	cf.Created = v1.Time{Time: o.Epoch}
	cf.Config.Entrypoint = []string{"/" + s.Binaries[0]}
	cf.Config.User = s.User
	cf.Config.Cmd = s.Cmd
	cf.Config.Env = []string{"PATH=/", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":    s.Name,
		"org.opencontainers.image.version":  o.Version,
		"org.opencontainers.image.revision": o.Revision,
		"org.opencontainers.image.source":   o.Source,
		"org.opencontainers.image.licenses": "Apache-2.0",
		"org.opencontainers.image.created":  o.Epoch.Format(time.RFC3339),
	}
	return mutate.ConfigFile(img, cf)
}

// file is one entry of a layer.
type file struct {
	name string
	mode int64
	body []byte
	dir  bool
}

// layer writes files into a tar with fixed owners and times, in a fixed
// order, so the bytes depend on the files only.
func layer(files []file, epoch time.Time) (v1.Layer, error) {
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.body)), ModTime: epoch, Format: tar.FormatPAX, Typeflag: tar.TypeReg}
		if f.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// baseLayer holds what a static Go binary may read from the system: CA
// certificates (Mozilla's, as golang.org/x/crypto/x509roots/fallback
// bundles them: the same bytes on every build machine), and passwd and
// group naming root and the non-root user 65532.
func baseLayer(epoch time.Time) (v1.Layer, error) {
	var pems bytes.Buffer
	n := 0
	for r := range bundle.Roots() {
		if err := pem.Encode(&pems, &pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate}); err != nil {
			return nil, err
		}
		n++
	}
	if n == 0 {
		return nil, errors.New("no CA certificates in the bundle")
	}
	return layer([]file{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/ssl/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: pems.Bytes()},
		{name: "etc/passwd", mode: 0o644, body: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "etc/group", mode: 0o644, body: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "tmp/", mode: 0o1777, dir: true},
	}, epoch)
}

func binaryLayer(s Spec, o Options) (v1.Layer, error) {
	var files []file
	for _, b := range s.Binaries {
		body, err := os.ReadFile(filepath.Join(o.Bin, b))
		if err != nil {
			return nil, err
		}
		files = append(files, file{name: b, mode: 0o755, body: body})
	}
	return layer(files, o.Epoch)
}
