package speaker

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"
	"time"
)

func derived(v string) []byte { s := sha256.Sum256([]byte(v)); return s[:] }

func TestKeysFromSecret(t *testing.T) {
	a, b := strings.Repeat("a", 16), strings.Repeat("b", 40)
	primary, all, err := keysFromSecret(map[string][]byte{PrimaryKeyEntry: []byte(a), "old": []byte(b), "same": []byte(a)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(primary, derived(a)) || len(primary) != 32 {
		t.Errorf("primary is not SHA-256 of the value")
	}
	if len(all) != 2 {
		t.Errorf("want the two distinct keys, got %d", len(all))
	}
	for name, data := range map[string]map[string][]byte{
		"no primary":  {"old": []byte(b)},
		"short":       {PrimaryKeyEntry: []byte("too-short")},
		"short extra": {PrimaryKeyEntry: []byte(a), "x": nil},
	} {
		if _, _, err := keysFromSecret(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestKeyringRotation: a new primary is accepted at once and encrypts
// after the grace; the old key is accepted for the grace after the
// switch, then removed; an extra key stays while the Secret holds it.
func TestKeyringRotation(t *testing.T) {
	k1, k2, k3 := derived("one-one-one-one-1"), derived("two-two-two-two-2"), derived("three-three-three")
	grace := 10 * time.Second
	k, err := newKeyring(k1, [][]byte{k1}, grace)
	if err != nil {
		t.Fatal(err)
	}
	has := func(key []byte) bool {
		for _, x := range k.ring.GetKeys() {
			if bytes.Equal(x, key) {
				return true
			}
		}
		return false
	}
	t0 := time.Unix(1000, 0)
	// One step: the Secret now holds k2 only.
	pending, err := k.apply(t0, k2, [][]byte{k2})
	if err != nil || !pending {
		t.Fatalf("pending %v, %v", pending, err)
	}
	if !bytes.Equal(k.ring.GetPrimaryKey(), k1) || !has(k2) {
		t.Fatalf("at once: want k1 encrypting and k2 accepted")
	}
	if pending, _ = k.apply(t0.Add(grace-time.Second), k2, [][]byte{k2}); !pending || !bytes.Equal(k.ring.GetPrimaryKey(), k1) {
		t.Fatalf("before the grace: k2 must not encrypt yet")
	}
	pending, _ = k.apply(t0.Add(grace), k2, [][]byte{k2})
	if !pending || !bytes.Equal(k.ring.GetPrimaryKey(), k2) || !has(k1) {
		t.Fatalf("after the grace: want k2 encrypting, k1 still accepted (pending %v)", pending)
	}
	pending, _ = k.apply(t0.Add(2*grace-time.Second), k2, [][]byte{k2})
	if !pending || !has(k1) {
		t.Fatalf("k1 removed before a grace after the switch")
	}
	pending, _ = k.apply(t0.Add(2*grace), k2, [][]byte{k2})
	if pending || has(k1) || len(k.ring.GetKeys()) != 1 {
		t.Fatalf("after two graces: want k2 alone, pending %v keys %d", pending, len(k.ring.GetKeys()))
	}
	// An extra entry is accepted and stays; it never encrypts.
	if pending, _ = k.apply(t0.Add(3*grace), k2, [][]byte{k2, k3}); pending || !has(k3) || !bytes.Equal(k.ring.GetPrimaryKey(), k2) {
		t.Fatalf("extra key: pending %v", pending)
	}
	if pending, _ = k.apply(t0.Add(10*grace), k2, [][]byte{k2, k3}); pending || !has(k3) {
		t.Fatalf("an extra key the Secret still holds was removed")
	}
}
