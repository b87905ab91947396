//go:build !linux

package dataplane

import (
	"errors"
	"net/netip"

	"github.com/go-logr/logr"

	"github.com/ironlb/ironlb/pkg/maglev"
)

// Options configure the loader.
type Options struct {
	PinDir     string
	Interfaces []string
	XDPMode    string
	RingSize   uint32
	Flows      uint32
	MTU        uint32
}

// DefaultOptions are the speaker's defaults.
func DefaultOptions() Options {
	return Options{PinDir: "/sys/fs/bpf/ironlb", XDPMode: "auto", RingSize: maglev.DefaultSize, Flows: 131072, MTU: 1500}
}

// Dataplane needs Linux.
type Dataplane struct{}

// Self is this node's addresses.
type Self struct{ V4, V6 netip.Addr }

var errLinux = errors.New("the xdp data plane needs Linux")

func Open(logr.Logger, Options) (*Dataplane, error) { return nil, errLinux }
func (*Dataplane) Apply(Self, []Entry) error        { return errLinux }
func (*Dataplane) Close() error                     { return nil }
func Cleanup(string) error                          { return errLinux }
