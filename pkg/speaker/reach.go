package speaker

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// A speaker that memberlist declares gone may have only its process gone
// (a crash, a restart, an upgrade): its node's XDP program forwards on from
// the pinned maps, and the flows through it must stay where they are. A
// node that is dead (powered off, cut off) forwards nothing, and its
// flows must be placed again at once. The kernel tells the two apart: it
// answers an ICMP echo while the node lives, whatever its speaker does.

// reachable reports whether addr's kernel answers an ICMP echo: up to
// tries requests, each given wait for its answer. It needs CAP_NET_RAW,
// which the speaker has for ARP. The socket's own receive timeout bounds
// each wait, not a Go deadline: a busy machine that runs the probe late
// still reads an answer that came in time (Go fails a read whose deadline
// has passed before it looks), so a live node is never taken for dead
// because this process was slow.
func reachable(addr netip.Addr, tries int, wait time.Duration) (bool, error) {
	family, proto, icmpProto := unix.AF_INET, unix.IPPROTO_ICMP, 1
	var typ, reply icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if addr.Is6() {
		family, proto, icmpProto = unix.AF_INET6, unix.IPPROTO_ICMPV6, 58
		typ, reply = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return false, fmt.Errorf("icmp socket: %w", err)
	}
	defer func() { _ = unix.Close(fd) }()
	tv := unix.NsecToTimeval(wait.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return false, fmt.Errorf("icmp socket timeout: %w", err)
	}
	var to unix.Sockaddr
	if addr.Is4() {
		to = &unix.SockaddrInet4{Addr: addr.As4()}
	} else {
		to = &unix.SockaddrInet6{Addr: addr.As16()}
	}
	var token [4]byte
	_, _ = rand.Read(token[:])
	ident := int(binary.BigEndian.Uint16(token[:2]))
	buf := make([]byte, 1500)
	for seq := range tries {
		msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: ident, Seq: seq, Data: token[:]}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return false, err
		}
		if err := unix.Sendto(fd, b, 0, to); err != nil {
			continue // no route, or the link is down: not reachable now
		}
		deadline := time.Now().Add(wait)
		for {
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK) {
				break // this try's wait is over
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return false, err
			}
			if matches(buf[:n], from, addr, icmpProto, reply, ident, token) {
				return true, nil
			}
			if time.Now().After(deadline) {
				break // others' ICMP kept us busy past this try's wait
			}
		}
	}
	return false, nil
}

// matches reports whether a packet a raw ICMP socket received is the echo
// reply of addr to our request.
func matches(pkt []byte, from unix.Sockaddr, addr netip.Addr, proto int, reply icmp.Type, ident int, token [4]byte) bool {
	var src netip.Addr
	switch f := from.(type) {
	case *unix.SockaddrInet4:
		src = netip.AddrFrom4(f.Addr)
		// An IPv4 raw socket hands over the IP header too.
		if len(pkt) < 20 {
			return false
		}
		hl := int(pkt[0]&0x0f) * 4
		if hl < 20 || len(pkt) < hl {
			return false
		}
		pkt = pkt[hl:]
	case *unix.SockaddrInet6:
		src = netip.AddrFrom16(f.Addr)
	default:
		return false
	}
	if src.Unmap() != addr {
		return false
	}
	m, err := icmp.ParseMessage(proto, pkt)
	if err != nil || m.Type != reply {
		return false
	}
	e, ok := m.Body.(*icmp.Echo)
	return ok && e.ID == ident && string(e.Data) == string(token[:])
}
