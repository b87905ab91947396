package speaker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// DataplanePath is where the debug endpoint serves the data plane's dump.
const DataplanePath = "/debug/dataplane"

// checkLoopback refuses a debug address that is not on loopback: the dump
// lists every VIP, pod and node address and walks the conntrack tables,
// which is for the node's administrator (or a port-forward through the
// API server, which runs on the node), not for the network.
func checkLoopback(addr string) error {
	if addr == "0" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--debug-addr %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("--debug-addr %q: must be a loopback address (127.0.0.1, [::1] or localhost): the dump is not for the network", addr)
	}
	return nil
}

// debugServer serves DataplanePath on a loopback address, one dump at a
// time: a dump walks every conntrack table, and callers that pile up
// would take CPU from memberlist's probes.
type debugServer struct {
	log  logr.Logger
	addr string
	dump func() (any, bool)
	busy sync.Mutex
}

func (d *debugServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != DataplanePath {
		http.NotFound(w, r)
		return
	}
	if !d.busy.TryLock() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "a dump is in progress; try again", http.StatusTooManyRequests)
		return
	}
	defer d.busy.Unlock()
	v, ok := d.dump()
	if !ok {
		http.Error(w, "this speaker runs no xdp data plane", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Start serves until ctx ends (a manager.Runnable).
func (d *debugServer) Start(ctx context.Context) error {
	if d.addr == "0" {
		return nil
	}
	l, err := net.Listen("tcp", d.addr)
	if err != nil {
		return fmt.Errorf("debug endpoint: %w", err)
	}
	srv := &http.Server{Handler: d, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	d.log.Info("serving the data plane dump on loopback", "address", d.addr, "path", DataplanePath)
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// NeedLeaderElection is false: every speaker serves its own node.
func (d *debugServer) NeedLeaderElection() bool { return false }
