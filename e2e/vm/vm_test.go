// Package vm runs the tests that need a kernel feature this machine's
// kernel lacks (VRF: CONFIG_NET_VRF is off, and it loads no modules) in a
// small VM: Debian's kernel with its vrf and veth modules, booted by qemu
// (software emulation: no KVM needed) from an initramfs that holds a
// static busybox, BIRD, iproute2 and the tests' own binaries, and nothing
// else. The VM has no network device; everything happens in its own
// namespaces, and it powers off when the tests end.
package vm

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const root = "../.."

// inVM are the test binaries built for the VM and the tests each runs
// there (they skip anywhere else).
var inVM = []struct{ pkg, name, run string }{
	{"./pkg/bgp", "bgp", "^TestVRFDevice$"},
	{"./pkg/speaker", "speaker", "^TestReadLinksVRF$"},
}

// TestVRF boots the VM and requires every test in it to pass.
func TestVRF(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (installs qemu, reads the kernel package); CI runs as root")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	kdir, err := filepath.Abs(filepath.Join(root, "_output", "vm"))
	if err != nil {
		t.Fatal(err)
	}
	run(t, ctx, root, "hack/vm-kernel.sh", kdir)

	img := newInitramfs()
	dir := t.TempDir()
	for _, b := range inVM {
		out := filepath.Join(dir, b.name+".test")
		// Built as the other tests build, so the build cache serves it;
		// the libraries it loads, if any, go along.
		cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", out, b.pkg)
		cmd.Dir = root
		if o, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go test -c %s: %v\n%s", b.pkg, err, o)
		}
		img.file("/"+b.name+".test", out, 0o755)
		if err := img.libs(out); err != nil {
			t.Fatal(err)
		}
	}
	img.file("/bin/busybox", "/bin/busybox", 0o755)
	for _, mod := range []string{"vrf", "veth"} {
		img.file("/lib/modules/"+mod+".ko", filepath.Join(kdir, mod+".ko"), 0o644)
	}
	for _, tool := range []string{"bird", "birdc", "ip"} {
		if err := img.binary(tool); err != nil {
			t.Fatal(err)
		}
	}
	var script strings.Builder
	script.WriteString(`#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
insmod /lib/modules/vrf.ko
insmod /lib/modules/veth.ko
ip link set lo up
`)
	for _, b := range inVM {
		fmt.Fprintf(&script, "IRONLB_VM=1 IRONLB_BGP_TEST_NETNS=1 /%s.test -test.v -test.count=1 -test.timeout=5m -test.run '%s' 2>&1\necho \"IRONLB-VM-EXIT %s $?\"\n", b.name, b.run, b.name)
	}
	script.WriteString("poweroff -f\n")
	img.data("/init", []byte(script.String()), 0o755)
	initrd := filepath.Join(dir, "initrd.gz")
	if err := img.write(initrd); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024",
		"-nographic", "-no-reboot", "-nic", "none", "-kernel", filepath.Join(kdir, "vmlinuz"), "-initrd", initrd,
		"-append", "console=ttyS0 quiet panic=-1")
	out, err := cmd.CombinedOutput()
	console := string(out)
	t.Logf("the VM ran for %s; its console:\n%s", time.Since(start).Round(100*time.Millisecond), console)
	if err != nil {
		t.Fatalf("qemu: %v", err)
	}
	for _, b := range inVM {
		if !strings.Contains(console, fmt.Sprintf("IRONLB-VM-EXIT %s 0", b.name)) {
			t.Errorf("%s's tests in the VM did not pass (see the console above)", b.name)
		}
		name := strings.Trim(b.run, "^$")
		if !regexp.MustCompile(`--- PASS: ` + name + ` `).MatchString(console) {
			t.Errorf("%s did not run and pass in the VM", name)
		}
	}
}

func run(t *testing.T, ctx context.Context, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// initramfs is a cpio archive (newc) of files by their path in the VM.
type initramfs struct {
	entries map[string]entry
}

type entry struct {
	src  string // a file on this machine, or
	body []byte
	mode uint32
}

func newInitramfs() *initramfs { return &initramfs{entries: map[string]entry{}} }

func (r *initramfs) file(dst, src string, mode uint32) { r.entries[dst] = entry{src: src, mode: mode} }

func (r *initramfs) data(dst string, b []byte, mode uint32) {
	r.entries[dst] = entry{body: b, mode: mode}
}

// binary adds a program of this machine at its own path, with the shared
// libraries ldd says it loads.
func (r *initramfs) binary(name string) error {
	path, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("%s is not installed (make deps): %w", name, err)
	}
	path, err = filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	r.file(path, path, 0o755)
	if base := filepath.Base(path); base != name {
		// Reached by its own name too (ip is a symlink on some systems).
		r.file(filepath.Join(filepath.Dir(path), name), path, 0o755)
	}
	return r.libs(path)
}

// libs adds the shared libraries ldd says path loads, at their paths.
func (r *initramfs) libs(path string) error {
	out, err := exec.Command("ldd", path).Output()
	if err != nil {
		return nil // static
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for _, w := range f {
			if strings.HasPrefix(w, "/") {
				real, err := filepath.EvalSymlinks(w)
				if err != nil {
					return err
				}
				r.file(w, real, 0o755)
			}
		}
	}
	return nil
}

// write writes the archive, gzip-compressed: the directories each path
// needs, then the files.
func (r *initramfs) write(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	gz := gzip.NewWriter(f)
	w := &cpio{w: gz}
	dirs := map[string]bool{}
	for _, d := range []string{"/proc", "/sys", "/dev", "/tmp", "/run", "/var", "/lib/modules"} {
		w.dirs(d, dirs)
	}
	// ip keeps named namespaces in /var/run/netns.
	w.add("var/run", 0o120777, []byte("/run"))
	for dst, e := range r.entries {
		w.dirs(filepath.Dir(dst), dirs)
		body := e.body
		if e.src != "" {
			if body, err = os.ReadFile(e.src); err != nil {
				return err
			}
		}
		w.add(strings.TrimPrefix(dst, "/"), 0o100000|e.mode, body)
	}
	w.add("TRAILER!!!", 0, nil)
	if w.err != nil {
		return w.err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	return f.Close()
}

// cpio writes the "newc" format the kernel unpacks an initramfs from.
type cpio struct {
	w   io.Writer
	ino int
	err error
}

func (c *cpio) dirs(d string, seen map[string]bool) {
	if d == "/" || d == "." || seen[d] {
		return
	}
	c.dirs(filepath.Dir(d), seen)
	seen[d] = true
	c.add(strings.TrimPrefix(d, "/"), 0o040755, nil)
}

func (c *cpio) add(name string, mode uint32, body []byte) {
	if c.err != nil {
		return
	}
	c.ino++
	var b bytes.Buffer
	fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(name)+1, 0)
	b.WriteString(name)
	b.WriteByte(0)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	b.Write(body)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	_, c.err = c.w.Write(b.Bytes())
}
