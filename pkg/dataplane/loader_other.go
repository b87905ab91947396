//go:build !linux

package dataplane

import (
	"errors"

	"github.com/go-logr/logr"
)

// Dataplane needs Linux.
type Dataplane struct{}

var errLinux = errors.New("the xdp data plane needs Linux")

func Open(logr.Logger, Options) (*Dataplane, error)  { return nil, errLinux }
func (*Dataplane) Apply(Self, []Node, []Entry) error { return errLinux }
func (*Dataplane) Lacks([]Entry) bool                { return true }
func (*Dataplane) Beat() error                       { return errLinux }
func (*Dataplane) Close() error                      { return nil }
func (*Dataplane) Dump() Dump                        { return Dump{} }
func Cleanup(string) error                           { return errLinux }
