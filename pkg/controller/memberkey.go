package controller

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// +kubebuilder:rbac:groups="",namespace=ironlb-system,resources=secrets,verbs=create

// MemberKeyEntry is the memberlist Secret's entry whose value the speakers
// derive their encryption key from.
const MemberKeyEntry = "secretkey"

// memberKey creates the Secret holding the speakers' memberlist key, with a
// random value, unless it exists: an install that brings its own Secret
// keeps it. It runs on every replica, leader or not (creating is
// idempotent), and retries until the Secret exists, so speakers that wait
// for it are not kept waiting by a missing leader.
type memberKey struct {
	log logr.Logger
	c   client.Client
	key client.ObjectKey
}

// NeedLeaderElection is false: see memberKey.
func (memberKey) NeedLeaderElection() bool { return false }

// Start creates the Secret, retrying with backoff until it exists.
func (m memberKey) Start(ctx context.Context) error {
	wait := time.Second
	for {
		created, err := m.ensure(ctx)
		if err == nil {
			if created {
				m.log.Info("created the memberlist key", "secret", m.key)
			}
			return nil
		}
		m.log.Error(err, "create the memberlist key; the speakers wait for it", "secret", m.key)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func (m memberKey) ensure(ctx context.Context) (bool, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return false, fmt.Errorf("random key: %w", err)
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: m.key.Namespace, Name: m.key.Name,
			Labels: map[string]string{"app.kubernetes.io/name": "ironlb", "app.kubernetes.io/component": "memberlist-key"}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{MemberKeyEntry: []byte(base64.StdEncoding.EncodeToString(raw))},
	}
	err := m.c.Create(ctx, sec)
	if apierrors.IsAlreadyExists(err) {
		return false, nil
	}
	return err == nil, err
}
