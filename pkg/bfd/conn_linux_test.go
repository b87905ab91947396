package bfd

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/internal/netnstest"
)

// sendWithTTL sends b to to from a plain UDP socket with the given TTL,
// as a host some hops away (or a forger) would.
func sendWithTTL(t *testing.T, b []byte, to netip.AddrPort, ttl int) {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl) })
		return errors.Join(err, serr)
	}}
	c, err := d.Dial("udp", to.String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// TestConnTTL: a single-hop session takes packets that arrive with a TTL
// of 255 (what Conn sends, from a source port in 49152-65535) and drops
// any other TTL, which only a packet from beyond a router, or a forger
// off the link, can have (GTSM). A multihop Conn takes what crossed at
// most 255-minTTL routers.
func TestConnTTL(t *testing.T) {
	netnstest.Enter(t)
	a, err := Listen(netip.MustParseAddr("127.0.0.1"), false, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.Close() }()
	b, err := Listen(netip.MustParseAddr("127.0.0.2"), false, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close() }()
	if port := b.tx.LocalAddr().(*net.UDPAddr).Port; port < 49152 {
		t.Errorf("sends from port %d, want 49152-65535", port)
	}
	p := valid()
	if err := b.Send(p, netip.MustParseAddr("127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	_ = a.SetReadDeadline(time.Now().Add(2 * time.Second))
	got, from, err := a.Read()
	if err != nil || got != p || from != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("read %+v from %s: %v; want the packet from 127.0.0.2", got, from, err)
	}
	sendWithTTL(t, p.Marshal(), netip.MustParseAddrPort("127.0.0.1:3784"), 254)
	_ = a.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, _, err := a.Read(); !errors.Is(err, ErrTTL) {
		t.Fatalf("a packet with TTL 254 on a single-hop session: %v, want %v", err, ErrTTL)
	}

	m, err := Listen(netip.MustParseAddr("127.0.0.1"), true, 254)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Close() }()
	for ttl, want := range map[int]error{254: nil, 253: ErrTTL} {
		sendWithTTL(t, p.Marshal(), netip.MustParseAddrPort("127.0.0.1:4784"), ttl)
		_ = m.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := m.Read(); !errors.Is(err, want) {
			t.Errorf("multihop, min TTL 254, a packet with TTL %d: %v, want %v", ttl, err, want)
		}
	}
	if _, err := Listen(netip.IPv4Unspecified(), false, 0); err == nil {
		t.Error("Listen on 0.0.0.0 succeeded: a session must bind the node's address")
	}
}
