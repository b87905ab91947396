// Package nsrun runs code inside a named network namespace. It is small on
// purpose: the lab, the end-to-end tests and pkg/layer2's tests use it,
// and none of them should have to import the others for it.
package nsrun

import (
	"errors"
	"fmt"
	"runtime"

	vnetns "github.com/vishvananda/netns"
)

// In runs fn on an OS thread switched into the named network namespace
// ns, then switches the thread back. Sockets fn creates stay in ns for
// their whole life, whichever goroutine uses them later. If the thread
// cannot be switched back it is left locked, so the Go runtime retires it.
func In(ns string, fn func() error) error {
	target, err := vnetns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer func() { _ = target.Close() }()
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current namespace: %w", err)
	}
	defer func() { _ = orig.Close() }()
	if err := vnetns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace %s: %w", ns, err)
	}
	ferr := fn()
	if err := vnetns.Set(orig); err != nil {
		return errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", ns, err))
	}
	runtime.UnlockOSThread()
	return ferr
}
