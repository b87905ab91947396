package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cgroupFS is where the machine's cgroup hierarchies are mounted.
const cgroupFS = "/sys/fs/cgroup"

// cgroupHierarchies lists the mounted cgroup hierarchies (v1 controllers,
// a v2 unified one, or the v2 root itself).
func cgroupHierarchies() []string {
	var st unix.Statfs_t
	if unix.Statfs(cgroupFS, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return []string{cgroupFS}
	}
	entries, err := os.ReadDir(cgroupFS)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		p := filepath.Join(cgroupFS, e.Name())
		if !e.IsDir() {
			continue
		}
		if unix.Statfs(p, &st) == nil && (st.Type == unix.CGROUP_SUPER_MAGIC || st.Type == unix.CGROUP2_SUPER_MAGIC) {
			out = append(out, p)
		}
	}
	return out
}

// makeCgroups creates a node's cgroup root (/ironlb-lab/<node>) in every
// hierarchy: the kubelet insists that its --cgroup-root exists.
func makeCgroups(n Node) error {
	for _, h := range cgroupHierarchies() {
		for _, rel := range []string{CgroupRoot, filepath.Join(CgroupRoot, n.Name)} {
			dir := filepath.Join(h, rel)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("cgroup %s: %w", dir, err)
			}
			// A new cpuset cgroup has no CPUs or memory nodes; copy the
			// parent's so that tasks may join.
			if filepath.Base(h) == "cpuset" {
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					v, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
					if err != nil {
						return err
					}
					if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil { //nolint:gosec // G703: the lab's own cgroup, under /sys/fs/cgroup
						return fmt.Errorf("cgroup %s/%s: %w", dir, f, err)
					}
				}
			}
		}
	}
	return nil
}

// labCgroups lists the lab's cgroups in every hierarchy, deepest first.
func labCgroups() []string {
	var out []string
	for _, h := range cgroupHierarchies() {
		root := filepath.Join(h, CgroupRoot)
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				out = append(out, p)
			}
			return nil
		})
	}
	sort.Slice(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out
}

// cgroupPids lists the processes in the lab's cgroups.
func cgroupPids() []int {
	seen := map[int]bool{}
	var out []int
	for _, cg := range labCgroups() {
		b, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() && !seen[pid] {
				seen[pid] = true
				out = append(out, pid)
			}
		}
	}
	return out
}

// removeCgroups removes the lab's cgroups, deepest first.
func removeCgroups() error {
	var errs []error
	for _, cg := range labCgroups() {
		if err := unix.Rmdir(cg); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", cg, err))
		}
	}
	return errors.Join(errs...)
}

// mount mounts fstype src on dst, or bind-mounts src when fstype is "".
func mount(src, dst, fstype, data string) error {
	var err error
	if fstype == "" {
		err = unix.Mount(src, dst, "", unix.MS_BIND, "")
	} else {
		err = unix.Mount(src, dst, fstype, 0, data)
	}
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", src, dst, err)
	}
	return nil
}

// mountsUnder lists the mount points at or below dir in this process's
// mount namespace (the machine's, for ironlb-lab down).
func mountsUnder(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out, nil
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
