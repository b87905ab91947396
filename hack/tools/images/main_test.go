package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fakeBin(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	for _, b := range []string{"ironlb-controller", "ironlb-speaker", "ironlbctl"} {
		if err := os.WriteFile(filepath.Join(dir, b), []byte(content+b), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestReproducible: the same binaries and inputs give the same digests,
// wherever the binaries lie and whenever the build runs; another binary
// or epoch gives another digest.
func TestReproducible(t *testing.T) {
	o := Options{Version: "v0.1.0", Revision: "abc", Source: "https://github.com/ironlb/ironlb", Epoch: time.Unix(1700000000, 0).UTC(), Arch: "amd64"}
	digest := func(bin string, o Options, s Spec) string {
		t.Helper()
		o.Bin = bin
		img, err := Build(s, o)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	a, b := fakeBin(t, "same"), fakeBin(t, "same")
	for _, s := range Specs {
		first := digest(a, o, s)
		// Files touched later (their mtime must not matter).
		now := time.Now().Add(time.Hour)
		for _, f := range s.Binaries {
			_ = os.Chtimes(filepath.Join(b, f), now, now)
		}
		if again := digest(b, o, s); again != first {
			t.Errorf("%s: %s then %s from the same binaries", s.Name, first, again)
		}
		if other := digest(fakeBin(t, "other"), o, s); other == first {
			t.Errorf("%s: other binaries, same digest", s.Name)
		}
		later := o
		later.Epoch = o.Epoch.Add(time.Second)
		if other := digest(a, later, s); other == first {
			t.Errorf("%s: another epoch, same digest", s.Name)
		}
	}
}

// TestImageContents: entrypoint, user, labels, and the files a static
// binary may need.
func TestImageContents(t *testing.T) {
	o := Options{Bin: fakeBin(t, "x"), Version: "v9", Revision: "r1", Source: "src", Epoch: time.Unix(1, 0).UTC(), Arch: "amd64"}
	for _, s := range Specs {
		img, err := Build(s, o)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(cf.Config.Entrypoint, " "); got != "/"+s.Binaries[0] {
			t.Errorf("%s: entrypoint %q", s.Name, got)
		}
		if cf.Config.User != s.User || cf.OS != "linux" || cf.Architecture != "amd64" {
			t.Errorf("%s: user %q os %s arch %s", s.Name, cf.Config.User, cf.OS, cf.Architecture)
		}
		for k, v := range map[string]string{"org.opencontainers.image.version": "v9", "org.opencontainers.image.revision": "r1",
			"org.opencontainers.image.source": "src", "org.opencontainers.image.licenses": "Apache-2.0"} {
			if cf.Config.Labels[k] != v {
				t.Errorf("%s: label %s = %q, want %q", s.Name, k, cf.Config.Labels[k], v)
			}
		}
		files := map[string]*tar.Header{}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		var certs []byte
		for _, l := range layers {
			rc, err := l.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				files[h.Name] = h
				if h.Name == "etc/ssl/certs/ca-certificates.crt" {
					certs, _ = io.ReadAll(tr)
				}
			}
			_ = rc.Close()
		}
		for _, want := range append([]string{"etc/passwd", "etc/group", "etc/ssl/certs/ca-certificates.crt"}, s.Binaries...) {
			h := files[want]
			if h == nil {
				t.Errorf("%s: no %s", s.Name, want)
				continue
			}
			if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(o.Epoch) {
				t.Errorf("%s: %s owned %d:%d, time %s", s.Name, want, h.Uid, h.Gid, h.ModTime)
			}
		}
		if n := bytes.Count(certs, []byte("BEGIN CERTIFICATE")); n < 50 {
			t.Errorf("%s: %d CA certificates", s.Name, n)
		}
		for _, b := range s.Binaries {
			if h := files[b]; h != nil && h.Mode&0o111 == 0 {
				t.Errorf("%s: %s is not executable", s.Name, b)
			}
		}
	}
}
