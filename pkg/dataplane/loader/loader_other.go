//go:build !linux

package loader

import (
	"errors"

	"github.com/go-logr/logr"

	"github.com/ironlb/ironlb/pkg/dataplane"
)

// Dataplane needs Linux.
type Dataplane struct{}

var errLinux = errors.New("the xdp data plane needs Linux")

func Open(logr.Logger, dataplane.Options) (*Dataplane, error)                      { return nil, errLinux }
func (*Dataplane) Apply(dataplane.Self, []dataplane.Node, []dataplane.Entry) error { return errLinux }
func (*Dataplane) Lacks([]dataplane.Entry) bool                                    { return true }
func (*Dataplane) Beat() error                                                     { return errLinux }
func (*Dataplane) Close() error                                                    { return nil }
func (*Dataplane) Dump() dataplane.Dump                                            { return dataplane.Dump{} }
func (*Dataplane) SYNCookies() (map[dataplane.Key]string, bool)                    { return nil, false }
func Cleanup(string) error                                                         { return errLinux }
