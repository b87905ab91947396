package speaker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
	"github.com/ironlb/ironlb/pkg/bfd"
	"github.com/ironlb/ironlb/pkg/bgp"
)

// session is this node's session with one BGPPeer, as its status shows it.
type session struct {
	peer     string
	state    string
	bfd      string
	gr       string
	enh      string
	routers  string // a dynamic peer's routers, comma-separated
	since    time.Time
	prefixes int
	message  string
	// failing: the message reports a failure to act on (a Warning Event),
	// not a session on its way up or a dynamic peer waiting for routers.
	failing bool
}

// notEstablishedAfter is how long a session may take to come up before its
// status and an Event say what to check.
const notEstablishedAfter = 10 * time.Second

// sessionsOf joins the configured peers, the ones that could not be
// configured and the router's view of each session.
func sessionsOf(peers []bgp.Peer, problems map[string]string, states map[string]bgp.State, exported map[string]int,
	bfds map[string]bfd.Status, held map[string]string, gr map[string]string, enh map[string]string, routers map[string][]string) []session {
	var out []session
	for _, p := range peers {
		st := states[p.Name]
		up := st.State == bgp.Established
		s := session{peer: p.Name, state: st.State.String(), since: st.Since, prefixes: exported[p.Name], enh: enh[p.Name], routers: routersOf(routers[p.Name])}
		b, hasBFD := bfds[p.Name]
		if hasBFD {
			s.bfd = b.State.String()
		}
		if p.GracefulRestart > 0 && up {
			s.gr = gr[p.Name]
		}
		switch {
		case held[p.Name] != "":
			s.message = fmt.Sprintf("closed by this node: %s (it opens again once BFD is Up)", held[p.Name])
			s.failing = true
		case hasBFD && b.State != bfd.Up && (up || b.Err != ""):
			s.message = b.String()
			s.failing = b.Err != ""
		case !up && p.Dynamic.IsValid():
			s.message = fmt.Sprintf("listening on %s port %d for routers in %s (AS %d, ours AS %d); none has a session", p.Listen, bgp.ListenPort, p.Dynamic, p.ASN, p.MyASN)
		case !up:
			s.message = fmt.Sprintf("not established with %s (AS %d, ours AS %d)", p.Address, p.ASN, p.MyASN)
			if !st.Since.IsZero() && time.Since(st.Since) > notEstablishedAfter {
				s.failing = true
				if p.Password != "" {
					s.message += ": the peer does not answer; check the TCP MD5 password (a peer drops segments signed with a wrong one without a word), that it expects this node, and that it is reachable"
				} else {
					s.message += ": the peer does not answer; check that it expects this node with these ASNs, whether it wants a TCP MD5 password, and that it is reachable"
				}
			}
		}
		out = append(out, s)
	}
	for name, msg := range problems {
		out = append(out, session{peer: name, state: bgp.Idle.String(), message: msg, failing: true})
	}
	return out
}

// sessionWriter writes this node's entry in each BGPPeer's status and the
// session Events; the writer's loop runs it.
type sessionWriter struct {
	client   client.Client
	recorder recorder.EventRecorder
	node     string
	kick     chan<- struct{} // the writer's loop

	mu       sync.Mutex
	sessions []session
	// written is the last status written per peer, and warned the peers
	// a SessionDown event was sent for since they were last Established.
	written map[string]session
	warned  map[string]bool
	peerUp  map[string]bool // peers whose session was Established once
}

// publish hands over the sessions as the last sync saw them.
func (w *sessionWriter) publish(s []session) {
	w.mu.Lock()
	w.sessions = s
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// write writes this node's entry in each BGPPeer's status (server-
// side apply, one field manager per node, so the speakers never conflict)
// and sends an Event when a session goes down or does not come up.
func (w *sessionWriter) write(ctx context.Context) error {
	w.mu.Lock()
	sessions := w.sessions
	w.mu.Unlock()
	var errs []error
	seen := map[string]bool{}
	for _, s := range sessions {
		seen[s.peer] = true
		if old, ok := w.written[s.peer]; ok && old == s {
			continue
		}
		entry := map[string]any{"node": w.node, "state": s.state, "prefixes": int64(s.prefixes)}
		if !s.since.IsZero() {
			entry["since"] = metav1.NewTime(s.since).UTC().Format(time.RFC3339)
		}
		if s.message != "" {
			entry["message"] = s.message
		}
		if s.bfd != "" {
			entry["bfd"] = s.bfd
		}
		if s.gr != "" {
			entry["gracefulRestart"] = s.gr
		}
		if s.enh != "" {
			entry["extendedNextHop"] = s.enh
		}
		if s.routers != "" {
			var rs []any
			for _, r := range strings.Split(s.routers, ",") {
				rs = append(rs, r)
			}
			entry["routers"] = rs
		}
		if err := w.applyStatus(ctx, s.peer, []any{entry}); err != nil {
			if !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("status of BGPPeer %s: %w", s.peer, err))
			}
			continue
		}
		w.written[s.peer] = s
		w.event(ctx, s)
	}
	// Peers this node no longer keeps a session with: drop its entry.
	for peer := range w.written {
		if seen[peer] {
			continue
		}
		if err := w.applyStatus(ctx, peer, []any{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("status of BGPPeer %s: %w", peer, err))
			continue
		}
		delete(w.written, peer)
		delete(w.warned, peer)
	}
	return errors.Join(errs...)
}

func (w *sessionWriter) applyStatus(ctx context.Context, peer string, nodes []any) error {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": ironlbv1alpha1.GroupVersion.String(),
		"kind":       "BGPPeer",
		"metadata":   map[string]any{"name": peer},
		"status":     map[string]any{"nodes": nodes},
	}}
	return w.client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner("ironlb-speaker-"+w.node), client.ForceOwnership)
}

// event tells, on the BGPPeer, that a session came up, went down, or does
// not come up (once, until it is up again).
func (w *sessionWriter) event(ctx context.Context, s session) {
	var p ironlbv1alpha1.BGPPeer
	if err := w.client.Get(ctx, client.ObjectKey{Name: s.peer}, &p); err != nil {
		return
	}
	switch {
	case s.state == bgp.Established.String():
		if w.warned[s.peer] || !w.peerUp[s.peer] {
			w.recorder.Eventf(&p, nil, corev1.EventTypeNormal, "SessionEstablished", "Peer",
				"node %s: BGP session established, %d routes offered", w.node, s.prefixes)
		}
		w.peerUp[s.peer] = true
		w.warned[s.peer] = false
	case !w.warned[s.peer] && (w.peerUp[s.peer] || s.failing):
		reason := "SessionDown"
		if !w.peerUp[s.peer] {
			reason = "SessionNotEstablished"
		}
		w.recorder.Eventf(&p, nil, corev1.EventTypeWarning, reason, "Peer", "node %s: %s", w.node, s.message)
		w.warned[s.peer] = true
	}
}
