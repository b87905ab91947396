package lab

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/internal/nsrun"
)

// BPFFS is where the lab mounts a bpffs of its own, under its directory:
// the speakers pin their maps there (one folder per node), so a restarted
// speaker finds them. The machine's /sys/fs/bpf is never touched.
func (c Config) BPFFS() string { return c.path("bpffs") }

// PinDir is a node's speaker's pin directory.
func (c Config) PinDir(n Node) string { return c.path("bpffs", n.Name, "ironlb") }

const bpfFSMagic = 0xcafe4a11

func onBPFFS(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == bpfFSMagic
}

// mountBPFFS mounts the lab's bpffs unless it is there.
func (c Config) mountBPFFS() error {
	dir := c.BPFFS()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if onBPFFS(dir) {
		return nil
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	return nil
}

// unmountBPFFS removes the lab's bpffs and every pin in it.
func unmountBPFFS(dir string) error {
	var errs []error
	for onBPFFS(dir) {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", dir, err))
			break
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// enableVethXDP attaches a do-nothing XDP program to the bridge side of
// every node's eth0. A veth delivers frames a peer's XDP program sends
// (XDP_TX, XDP_REDIRECT) only when it runs NAPI itself, which an XDP
// program turns on; without it, the data plane's encapsulated packets
// would be dropped at the bridge.
func (c Config) enableVethXDP() error {
	prog, err := XDPProgram(2) // XDP_PASS
	if err != nil {
		return err
	}
	// The attachment holds the program; this handle may go.
	defer func() { _ = prog.Close() }()
	// The outside world's hosts checksum in full.
	for _, ns := range []string{ClientNS, RouterNS} {
		if err := nsrun.In(ns, func() error { return fullChecksums("eth0") }); err != nil {
			return err
		}
	}
	var ports []string
	for _, n := range c.NodeList() {
		ports = append(ports, n.FabricLink)
	}
	return SetXDP(FabricNS, ports, prog)
}

// SetXDP attaches prog (nil: detaches) in native mode to links of ns.
func SetXDP(ns string, links []string, prog *ebpf.Program) error {
	return nsrun.In(ns, func() error {
		for _, name := range links {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if prog == nil {
				err = netlink.LinkSetXdpFd(l, -1)
			} else {
				err = netlink.LinkSetXdpFdWithFlags(l, prog.FD(), 1<<2)
			}
			if err != nil {
				return fmt.Errorf("XDP on %s: %w", name, err)
			}
		}
		return nil
	})
}

// fullChecksums turns transmit checksum offload off on a link, so the
// frames it sends carry complete TCP and UDP checksums as frames on a real
// wire do. A veth otherwise hands its peer only the pseudo-header sum
// (CHECKSUM_PARTIAL), which a frame forwarded by XDP_TX keeps: the node
// that receives it would see a wrong checksum. The caller is in the link's
// namespace.
func fullChecksums(name string) error {
	return ethtoolSet(name, 0x17 /* ETHTOOL_STXCSUM */, 0)
}

// NAPIOn turns GRO on for a veth, which makes it receive through NAPI and
// a ring of its own, as a NIC does, instead of the CPU's backlog queue.
// The caller is in the link's namespace.
func NAPIOn(name string) error {
	return ethtoolSet(name, 0x2c /* ETHTOOL_SGRO */, 1)
}

// ethtoolSet runs a legacy ethtool "set" command on a link.
func ethtoolSet(name string, cmd, data uint32) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer func() { _ = unix.Close(fd) }()
	// struct ethtool_value { __u32 cmd; __u32 data; }, pointed to by the
	// ifr_data of a struct ifreq.
	val := &[2]uint32{cmd, data}
	var ifr [40]byte
	copy(ifr[:unix.IFNAMSIZ-1], name)
	// x/sys/unix has no ethtool "set" call: the ioctl takes a struct
	// ifreq whose ifr_data points to the command.
	*(*unsafe.Pointer)(unsafe.Pointer(&ifr[unix.IFNAMSIZ])) = unsafe.Pointer(val)                             //nolint:gosec // G103: the ifreq layout, audited
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))) //nolint:gosec // G103: as above
	runtime.KeepAlive(val)
	if errno != 0 {
		return fmt.Errorf("ethtool command %#x on %s: %w", cmd, name, errno)
	}
	return nil
}
