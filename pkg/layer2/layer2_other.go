//go:build !linux

// Package layer2 answers ARP and NDP for a node's IPs; it works on Linux only.
package layer2

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
)

// Options tune the gratuitous announcements.
type Options struct {
	Gratuitous []time.Duration
	Refresh    time.Duration
}

// DefaultOptions returns the defaults of the Linux build.
func DefaultOptions() Options { return Options{} }

// Announcer is a stub that fails on Set.
type Announcer struct{}

// New returns the stub.
func New(logr.Logger, Options, *Metrics) *Announcer { return &Announcer{} }

// Run waits for ctx.
func (a *Announcer) Run(ctx context.Context) { <-ctx.Done() }

// Set fails: layer-2 announcements need Linux packet sockets.
func (a *Announcer) Set(map[string][]netip.Addr) error {
	return errors.New("layer-2 announcements need Linux")
}

// Serving is empty: see Set.
func (a *Announcer) Serving() map[netip.Addr][]string { return nil }

// Reannounce does nothing.
func (a *Announcer) Reannounce() {}
