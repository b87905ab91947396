package controller_test

import (
	"bytes"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/pkg/controller"
)

// TestMemberlistKey: the controller creates the memberlist Secret with a
// random key when it is absent, and keeps one an install brought, across
// restarts.
func TestMemberlistKey(t *testing.T) {
	ctx := t.Context()
	get := func(ns string) *corev1.Secret {
		t.Helper()
		var sec corev1.Secret
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "ironlb-memberlist"}, &sec)
			if err == nil {
				return &sec
			}
			if time.Now().After(deadline) {
				t.Fatalf("no memberlist Secret in %s: %v", ns, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Absent: created, random, long enough.
	made := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "mlkey-"}}
	brought := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "mlkey-own-"}}
	for _, ns := range []*corev1.Namespace{made, brought} {
		if err := k8s.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	own := []byte("a key the user made, not the controller")
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: brought.Name, Name: "ironlb-memberlist"},
		Data: map[string][]byte{controller.MemberKeyEntry: own}}); err != nil {
		t.Fatal(err)
	}
	var first []byte
	for round := range 2 {
		for _, ns := range []string{made.Name, brought.Name} {
			o := testOptions()
			o.LeaderElection = false
			o.Namespace, o.MemberlistSecret = ns, "ironlb-memberlist"
			stop := startController(t, o)
			sec := get(ns)
			key := sec.Data[controller.MemberKeyEntry]
			switch {
			case ns == brought.Name && !bytes.Equal(key, own):
				t.Errorf("round %d: the Secret an install brought was changed to %q", round, key)
			case ns == made.Name && len(key) < 32:
				t.Errorf("round %d: created key %q is too short", round, key)
			case ns == made.Name && round == 0:
				first = key
			case ns == made.Name && !bytes.Equal(key, first):
				t.Errorf("a restarted controller replaced the key it made")
			}
			stop()
		}
	}
}
