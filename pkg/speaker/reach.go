package speaker

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// A speaker that memberlist declares gone may have only its process gone
// (a crash, a restart, an upgrade): its node's XDP program forwards on from
// the pinned maps, and the flows through it must stay where they are. A
// node that is dead (powered off, cut off) forwards nothing, and its
// flows must be placed again at once. The kernel tells the two apart: it
// answers an ICMP echo while the node lives, whatever its speaker does.

// reachable reports whether addr's kernel answers an ICMP echo within
// tries × wait. It needs CAP_NET_RAW, which the speaker has for ARP.
func reachable(addr netip.Addr, tries int, wait time.Duration) (bool, error) {
	network, proto := "ip4:icmp", 1
	var typ, reply icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if addr.Is6() {
		network, proto = "ip6:ipv6-icmp", 58
		typ, reply = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	c, err := icmp.ListenPacket(network, "")
	if err != nil {
		return false, fmt.Errorf("icmp socket: %w", err)
	}
	defer func() { _ = c.Close() }()
	var id [4]byte
	_, _ = rand.Read(id[:])
	ident := int(binary.BigEndian.Uint16(id[:2]))
	buf := make([]byte, 1500)
	for seq := range tries {
		msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: ident, Seq: seq, Data: id[:]}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return false, err
		}
		if _, err := c.WriteTo(b, &net.IPAddr{IP: addr.AsSlice()}); err != nil {
			// No route, or the link is down: not reachable now.
			continue
		}
		deadline := time.Now().Add(wait)
		_ = c.SetReadDeadline(deadline)
		for {
			n, from, err := c.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return false, err
			}
			ip, ok := from.(*net.IPAddr)
			if !ok {
				continue
			}
			src, _ := netip.AddrFromSlice(ip.IP)
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || src.Unmap() != addr || m.Type != reply {
				continue // another host's, or not an answer
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == ident && string(e.Data) == string(id[:]) {
				return true, nil
			}
		}
	}
	return false, nil
}
