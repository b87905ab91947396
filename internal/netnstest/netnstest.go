// Package netnstest puts a test in a network namespace of its own, so that
// tests which add links, addresses, routes or raw sockets never touch the
// machine's own network.
package netnstest

import (
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Enter locks the calling goroutine to its OS thread and moves the thread
// into a new network namespace with its loopback up, until the test ends.
// Everything the goroutine creates (links, sockets) lives in it; the
// goroutine must not hand its work to other goroutines.
func Enter(t testing.TB) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		_ = orig.Close()
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = netns.Set(orig)
		_ = ns.Close()
		_ = orig.Close()
		runtime.UnlockOSThread()
	})
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
}
