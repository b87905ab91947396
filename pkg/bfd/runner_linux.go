package bfd

import (
	"net/netip"

	"github.com/go-logr/logr"
)

// NewRunner returns a Runner over real sockets; onChange is called, never
// under a lock, when a session's state changes.
func NewRunner(log logr.Logger, onChange func(name string, st Status)) *Runner {
	r := newRunner(log, onChange, func(local netip.Addr, multihop bool, minTTL int) (packetConn, error) {
		return Listen(local, multihop, minTTL)
	})
	go r.loop()
	return r
}
