package speaker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// PrimaryKeyEntry is the entry of the memberlist Secret whose value
// encrypts what a speaker sends. Every other entry of that Secret is a key
// the speakers also accept, for the time a rotation takes.
const PrimaryKeyEntry = "secretkey"

// minKeyValue is the shortest Secret value taken as a key: a value is
// hashed into the AES-256 key, so it must carry the entropy itself.
const minKeyValue = 16

// keysFromSecret turns the memberlist Secret's data into AES-256 keys: the
// SHA-256 of each value, as MetalLB derives its memberlist key. primary
// encrypts; all (sorted, primary included) decrypt.
func keysFromSecret(data map[string][]byte) (primary []byte, all [][]byte, err error) {
	p, ok := data[PrimaryKeyEntry]
	if !ok {
		return nil, nil, fmt.Errorf("the Secret has no %q entry, the key that encrypts member traffic", PrimaryKeyEntry)
	}
	var errs []error
	for name, v := range data {
		if len(v) < minKeyValue {
			errs = append(errs, fmt.Errorf("entry %q holds %d bytes: a key needs at least %d random bytes", name, len(v), minKeyValue))
			continue
		}
		sum := sha256.Sum256(v)
		all = append(all, sum[:])
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	sum := sha256.Sum256(p)
	sort.Slice(all, func(i, j int) bool { return bytes.Compare(all[i], all[j]) < 0 })
	all = dedupe(all)
	return sum[:], all, nil
}

func dedupe(keys [][]byte) [][]byte {
	out := keys[:0]
	for i, k := range keys {
		if i > 0 && bytes.Equal(k, keys[i-1]) {
			continue
		}
		out = append(out, k)
	}
	return out
}

// keyring follows the memberlist Secret with memberlist's keyring so that
// keys rotate without any member missing another's packets: a key new in
// the Secret is accepted at once but encrypts only after grace, by when
// every speaker has read the Secret too; a key gone from the Secret is
// still accepted for grace after it stopped being this speaker's primary,
// for the speakers that switch later.
type keyring struct {
	ring  *memberlist.Keyring
	grace time.Duration
	// seen is when each key of the Secret was first seen; gone is when a
	// key of the ring left the Secret (or stopped being primary after
	// that).
	seen map[string]time.Time
	gone map[string]time.Time
}

// newKeyring starts with the Secret's keys as they are: nothing to wait
// for, there is no earlier key here.
func newKeyring(primary []byte, all [][]byte, grace time.Duration) (*keyring, error) {
	ring, err := memberlist.NewKeyring(all, primary)
	if err != nil {
		return nil, err
	}
	k := &keyring{ring: ring, grace: grace, seen: map[string]time.Time{}, gone: map[string]time.Time{}}
	for _, key := range all {
		k.seen[string(key)] = time.Time{}
	}
	return k, nil
}

// apply moves the ring towards the Secret's keys as of now. It returns
// whether something is still to happen (a primary or a removal waiting
// out the grace), so the caller calls again later.
func (k *keyring) apply(now time.Time, primary []byte, all [][]byte) (pending bool, err error) {
	want := map[string]bool{}
	for _, key := range all {
		want[string(key)] = true
		if _, ok := k.seen[string(key)]; !ok {
			if err := k.ring.AddKey(key); err != nil {
				return false, err
			}
			k.seen[string(key)] = now
		}
	}
	for key := range k.seen {
		if !want[key] {
			delete(k.seen, key)
		}
	}
	if !bytes.Equal(k.ring.GetPrimaryKey(), primary) {
		if now.Sub(k.seen[string(primary)]) >= k.grace {
			if err := k.ring.UseKey(primary); err != nil {
				return false, err
			}
		} else {
			pending = true
		}
	}
	current := k.ring.GetPrimaryKey()
	// A copy: RemoveKey reuses the ring's slice.
	for _, key := range append([][]byte(nil), k.ring.GetKeys()...) {
		if want[string(key)] || bytes.Equal(key, current) {
			delete(k.gone, string(key))
			continue
		}
		since, ok := k.gone[string(key)]
		if !ok {
			k.gone[string(key)] = now
			since = now
		}
		if now.Sub(since) >= k.grace {
			if err := k.ring.RemoveKey(key); err != nil {
				return false, err
			}
			delete(k.gone, string(key))
			continue
		}
		pending = true
	}
	return pending, nil
}

// memberKeys follows the memberlist Secret for a running speaker.
type memberKeys struct {
	log    logr.Logger
	reader client.Reader
	rec    recorder.EventRecorder
	key    client.ObjectKey
	node   string
	ring   *keyring
	m      *keyMetrics
	poke   chan struct{}
	// warned is the last warning sent, so a lasting fault warns once.
	warned string
}

// errNoKey says why a speaker without a key does not start.
func errNoKey(key client.ObjectKey, cause error) error {
	return fmt.Errorf("no memberlist key: %w. Member traffic would be plaintext and any host on the node network could join the member list and move IPs. "+
		"The controller creates Secret %s with a random key on its first start; check that it runs, or create the Secret yourself "+
		"(kubectl -n %s create secret generic %s --from-literal=%s=\"$(openssl rand -base64 32)\"), "+
		"or run the speakers with --memberlist-insecure to accept that risk", cause, key, key.Namespace, key.Name, PrimaryKeyEntry)
}

// loadKeys reads the memberlist Secret, waiting up to wait for the
// controller to create it.
func loadKeys(ctx context.Context, log logr.Logger, r client.Reader, key client.ObjectKey, grace, wait time.Duration) (*keyring, string, error) {
	deadline := time.Now().Add(wait)
	next := time.Now()
	for {
		var sec corev1.Secret
		err := r.Get(ctx, key, &sec)
		if err == nil {
			primary, all, err := keysFromSecret(sec.Data)
			if err != nil {
				return nil, "", errNoKey(key, fmt.Errorf("the Secret %s: %w", key, err))
			}
			ring, err := newKeyring(primary, all, grace)
			return ring, sec.ResourceVersion, err
		}
		if !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err) {
			log.Error(err, "read the memberlist key", "secret", key)
		}
		if time.Now().After(deadline) {
			return nil, "", errNoKey(key, fmt.Errorf("read the Secret %s: %w", key, err))
		}
		if time.Now().After(next) {
			log.Info("waiting for the memberlist key", "secret", key, "error", err.Error())
			next = time.Now().Add(10 * time.Second)
		}
		select {
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// run applies the Secret's keys whenever it changes, and every second
// while a rotation waits out its grace.
func (k *memberKeys) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	pending := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-k.poke:
		case <-t.C:
			if !pending {
				continue
			}
		}
		pending = k.sync(ctx)
	}
}

// sync reads the Secret and moves the ring towards it. A Secret that is
// gone or invalid changes nothing: the speakers keep talking with the keys
// they have, and a Warning Event says why the change is not taken.
func (k *memberKeys) sync(ctx context.Context) (pending bool) {
	var sec corev1.Secret
	if err := k.reader.Get(ctx, k.key, &sec); err != nil {
		if ctx.Err() == nil {
			k.warn(nil, "MemberlistKeyUnreadable", fmt.Sprintf("cannot read Secret %s (%v); the member list keeps the keys it has", k.key, err))
		}
		return true
	}
	primary, all, err := keysFromSecret(sec.Data)
	if err != nil {
		k.warn(&sec, "InvalidMemberlistKey", fmt.Sprintf("node %s keeps the memberlist keys it has: %v", k.node, err))
		return false
	}
	pending, err = k.ring.apply(time.Now(), primary, all)
	if err != nil {
		k.warn(&sec, "InvalidMemberlistKey", fmt.Sprintf("node %s: %v", k.node, err))
		return false
	}
	k.warned = ""
	k.m.keys.Set(float64(len(k.ring.ring.GetKeys())))
	k.m.pending.Set(b2f(pending))
	if !pending {
		k.m.applied.Reset()
		k.m.applied.WithLabelValues(sec.ResourceVersion).Set(1)
		k.log.V(1).Info("memberlist keys follow the Secret", "resourceVersion", sec.ResourceVersion, "keys", len(k.ring.ring.GetKeys()))
	}
	return pending
}

func (k *memberKeys) warn(sec *corev1.Secret, reason, msg string) {
	if msg == k.warned {
		return
	}
	k.warned = msg
	k.log.Info("memberlist key not applied", "reason", reason, "message", msg)
	var regarding runtime.Object = sec
	if sec == nil {
		regarding = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: k.node, UID: types.UID(k.node)}}
	}
	k.rec.Eventf(regarding, nil, corev1.EventTypeWarning, reason, "RotateKey", "%s", msg)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// keyMetrics show where a rotation stands on this node.
type keyMetrics struct {
	keys    prometheus.Gauge
	pending prometheus.Gauge
	applied *prometheus.GaugeVec
}

func newKeyMetrics(reg prometheus.Registerer) *keyMetrics {
	m := &keyMetrics{
		keys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ironlb_memberlist_keys",
			Help: "Keys this speaker's member list accepts; 0 with --memberlist-insecure.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ironlb_memberlist_key_rotation_pending",
			Help: "1 while a key change waits out its grace before it encrypts or is dropped.",
		}),
		applied: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ironlb_memberlist_key_secret_info",
			Help: "The resourceVersion of the memberlist Secret whose keys this speaker uses in full.",
		}, []string{"resource_version"}),
	}
	reg.MustRegister(m.keys, m.pending, m.applied)
	return m
}
