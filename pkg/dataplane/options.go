package dataplane

import (
	"net/netip"
	"time"

	"github.com/ironlb/ironlb/pkg/maglev"
)

// Options configure the loader.
type Options struct {
	// PinDir is a directory on a bpffs mount where maps and links are
	// pinned, so a restarted speaker finds them and forwarding never
	// stops.
	PinDir string
	// Interfaces get the XDP program and the TC egress program.
	Interfaces []string
	// XDPMode is native, generic or auto (native where the driver has
	// it).
	XDPMode string
	// RingSize is the Maglev table size, one of maglev.Sizes.
	RingSize uint32
	// Flows is the size of each conntrack table of established flows.
	Flows uint32
	// NewFlows is the size of each table of unverified flows (lone
	// SYNs, young UDP flows, flows recorded while the flood guard is
	// tripped); 0: Flows/8, at least 1024.
	NewFlows uint32
	// RingHistory is how long a port's previous ring is kept after a
	// change, for flows that lost their tier-1 entry (a new receiving
	// node) and whose slot moved: the current ring's node passes them
	// on to the previous ring's. 0: no history.
	RingHistory time.Duration
	// NewFlowRate is the flood guard: above this many new flows a
	// second on one CPU, tier 1 records no more (the ring sends them)
	// and tier 2 records them as unverified only. 0: no guard.
	NewFlowRate uint32
	// SynCookieRate: above this many never-seen SYNs a second to one
	// Service port on one CPU, the port answers SYNs with SYN cookies
	// (and for COOKIE_HOLD_NS after), so a SYN flood reaches no
	// endpoint. 0: never.
	SynCookieRate uint32
	// MTU of the node's links; TCP MSS is clamped so IPIP fits in it.
	MTU uint32
	// EndpointRedirect sends packets for local endpoints to the pod's
	// veth in XDP instead of through the kernel's forwarding. The pod's
	// end of the veth must run NAPI (GRO on, or an XDP program), or the
	// kernel drops what is redirected to it.
	EndpointRedirect bool
	// StaleAfter is how long the data plane forwards without a
	// heartbeat from its speaker; after that it hands VIP traffic to
	// the kernel untouched. 0 never goes stale.
	StaleAfter time.Duration
}

// UnverifiedFlows is the size of each table of unverified flows.
func (o Options) UnverifiedFlows() uint32 {
	if o.NewFlows != 0 {
		return o.NewFlows
	}
	return max(o.Flows/8, 1024)
}

// DefaultNewFlowRate is the flood guard's default rate per CPU: Katran's.
const DefaultNewFlowRate = 125000

// DefaultSynCookieRate is the SYN rate per CPU and Service port above
// which SYN cookies go on: far above what one port's legitimate clients
// open on one CPU, far below what a flood sends.
const DefaultSynCookieRate = 20000

// DefaultRingHistory keeps a previous ring for ten minutes: long enough
// for a drain together with a failover, a rolling restart of the
// speakers or a router's ECMP change to settle.
const DefaultRingHistory = 10 * time.Minute

// DefaultStaleAfter outlasts a rolling restart of the speaker (image
// pull, start, cache sync) with room to spare, and bounds how long a
// node forwards by rings and endpoints that nobody keeps up to date.
const DefaultStaleAfter = 5 * time.Minute

// DefaultOptions are the speaker's defaults.
func DefaultOptions() Options {
	return Options{PinDir: "/sys/fs/bpf/ironlb", XDPMode: "auto", RingSize: maglev.DefaultSize, Flows: 131072, NewFlowRate: DefaultNewFlowRate, SynCookieRate: DefaultSynCookieRate, RingHistory: DefaultRingHistory, MTU: 1500,
		StaleAfter: DefaultStaleAfter}
}

// Self is this node's addresses.
type Self struct {
	V4, V6 netip.Addr
}
