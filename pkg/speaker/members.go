package speaker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/memberlist"
)

// MemberOptions tune failure detection. The defaults detect a dead speaker
// in about 250 ms on a LAN: a probe every 50 ms, a 25 ms answer deadline,
// then 150 ms of suspicion during which a live node that was only slow
// refutes, so a missed answer alone moves nothing.
type MemberOptions struct {
	BindAddr      string
	Port          int
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// SuspicionMult scales the suspicion time: SuspicionMult ×
	// max(1, log10(members)) × ProbeInterval.
	SuspicionMult int
	// SecretKey, when set (16, 24 or 32 bytes), encrypts member traffic.
	SecretKey []byte
}

// DefaultMemberOptions are tuned for fast failover on a LAN.
func DefaultMemberOptions() MemberOptions {
	return MemberOptions{
		Port:          7946,
		ProbeInterval: 50 * time.Millisecond,
		ProbeTimeout:  25 * time.Millisecond,
		SuspicionMult: 3,
	}
}

// members tracks which speakers are alive, with hashicorp/memberlist.
type members struct {
	log     logr.Logger
	list    *memberlist.Memberlist
	changed func()
	// joined is set when another node joins or comes back; the speaker
	// then re-announces what it owns.
	joined atomic.Bool

	mu    sync.Mutex
	alive map[string]bool
}

// startMembers joins nothing yet; call join with the peers' addresses.
func startMembers(log logr.Logger, name, advertise string, opts MemberOptions, changed func()) (*members, error) {
	m := &members{log: log, changed: changed, alive: map[string]bool{name: true}}
	cfg := memberlist.DefaultLANConfig()
	cfg.Name = name
	cfg.BindAddr = opts.BindAddr
	if cfg.BindAddr == "" {
		cfg.BindAddr = "0.0.0.0"
	}
	cfg.BindPort = opts.Port
	cfg.AdvertiseAddr = advertise
	cfg.AdvertisePort = opts.Port
	cfg.ProbeInterval = opts.ProbeInterval
	cfg.ProbeTimeout = opts.ProbeTimeout
	cfg.SuspicionMult = opts.SuspicionMult
	cfg.SuspicionMaxTimeoutMult = 1
	cfg.GossipInterval = 20 * time.Millisecond
	cfg.GossipToTheDeadTime = 2 * time.Second
	cfg.PushPullInterval = 10 * time.Second
	cfg.TCPTimeout = time.Second
	cfg.IndirectChecks = 2
	cfg.SecretKey = opts.SecretKey
	cfg.Events = m
	cfg.LogOutput = logWriter{log.V(1)}
	list, err := memberlist.Create(cfg)
	if err != nil {
		return nil, fmt.Errorf("start memberlist on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	m.list = list
	return m, nil
}

// join contacts the given peers (addresses without port), ignoring the
// unreachable ones; it is called again while some nodes are not members.
func (m *members) join(peers []string, port int) {
	if len(peers) == 0 {
		return
	}
	addrs := make([]string, len(peers))
	for i, p := range peers {
		addrs[i] = net.JoinHostPort(p, strconv.Itoa(port))
	}
	if n, err := m.list.Join(addrs); err != nil && n == 0 {
		m.log.V(1).Info("no peer answered yet", "peers", addrs, "error", err.Error())
	}
}

// Alive returns the names of the live members, self included. Suspected
// members count as alive until they are declared dead, so one slow answer
// does not move IPs.
func (m *members) Alive() map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]bool, len(m.alive))
	for k := range m.alive {
		out[k] = true
	}
	return out
}

// leave tells the others we are going, so they take over at once, then
// stops.
func (m *members) leave(timeout time.Duration) {
	if err := m.list.Leave(timeout); err != nil {
		m.log.Error(err, "leave memberlist")
	}
	if err := m.list.Shutdown(); err != nil {
		m.log.Error(err, "stop memberlist")
	}
}

// NotifyJoin is called by memberlist when a node joins or comes back.
func (m *members) NotifyJoin(n *memberlist.Node) { m.set(n.Name, true) }

// NotifyLeave is called when a node leaves or is declared dead.
func (m *members) NotifyLeave(n *memberlist.Node) { m.set(n.Name, false) }

// NotifyUpdate is called when a node's metadata changes; we carry none.
func (m *members) NotifyUpdate(*memberlist.Node) {}

func (m *members) set(name string, alive bool) {
	m.mu.Lock()
	changed := m.alive[name] != alive
	if alive {
		m.alive[name] = true
	} else {
		delete(m.alive, name)
	}
	m.mu.Unlock()
	if changed && alive {
		m.joined.Store(true)
	}
	if changed {
		m.log.Info("member changed", "node", name, "alive", alive)
		m.changed()
	}
}

// joinLoop keeps joining the nodes that are not members, so speakers that
// start in any order, or come back, find each other. peers returns node
// name -> address.
func (m *members) joinLoop(ctx context.Context, peers func() map[string]string, port int) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		var missing []string
		alive := m.Alive()
		for name, addr := range peers() {
			if !alive[name] {
				missing = append(missing, addr)
			}
		}
		if len(missing) > 0 {
			m.join(missing, port)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// logWriter sends memberlist's log lines to logr.
type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Info(string(bytes.TrimSpace(p)))
	return len(p), nil
}

var _ io.Writer = logWriter{}
