package bfd

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Ports (RFC 5881 section 4, RFC 5883 section 5).
const (
	PortSingleHop = 3784
	PortMultihop  = 4784
)

// Conn receives control packets on a node address and sends them from a
// source port in 49152-65535, with a TTL of 255.
type Conn struct {
	rx, tx *net.UDPConn
	v6     bool
	// minTTL is the lowest TTL accepted: 255 for single hop.
	minTTL int
}

// Listen opens a Conn on addr (the node's address, never a wildcard),
// port 3784 for single hop or 4784 for multihop; a multihop Conn accepts
// packets that crossed up to 255-minTTL routers.
func Listen(addr netip.Addr, multihop bool, minTTL int) (*Conn, error) {
	if !addr.IsValid() || addr.IsUnspecified() {
		return nil, fmt.Errorf("bfd: listen on %v: a node address, not a wildcard", addr)
	}
	port := PortSingleHop
	if multihop {
		port = PortMultihop
	} else {
		minTTL = 255
	}
	c := &Conn{v6: addr.Is6(), minTTL: minTTL}
	// Received packets carry their TTL (hop limit); sent ones leave with 255.
	recvTTL := sockopt(unix.IPPROTO_IP, unix.IP_RECVTTL, 1)
	sendTTL := sockopt(unix.IPPROTO_IP, unix.IP_TTL, 255)
	if c.v6 {
		recvTTL = sockopt(unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1)
		sendTTL = sockopt(unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, 255)
	}
	lc := net.ListenConfig{Control: recvTTL}
	pc, err := lc.ListenPacket(context.Background(), "udp", netip.AddrPortFrom(addr, uint16(port)).String())
	if err != nil {
		return nil, fmt.Errorf("bfd: listen: %w", err)
	}
	c.rx = pc.(*net.UDPConn)
	// The sending socket: a source port in 49152-65535 (RFC 5881
	// section 4), TTL 255.
	for range 64 {
		// Unpredictable, so that an off-path forger must guess it too.
		var r [2]byte
		if _, err := rand.Read(r[:]); err != nil {
			_ = c.rx.Close()
			return nil, err
		}
		src := netip.AddrPortFrom(addr, 49152+binary.BigEndian.Uint16(r[:])%16384)
		lc := net.ListenConfig{Control: sendTTL}
		tx, err := lc.ListenPacket(context.Background(), "udp", src.String())
		if err == nil {
			c.tx = tx.(*net.UDPConn)
			return c, nil
		}
	}
	_ = c.rx.Close()
	return nil, errors.New("bfd: no free source port in 49152-65535")
}

// sockopt is a socket Control function that sets one integer option.
func sockopt(level, opt, value int) func(string, string, syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, value) })
		return errors.Join(err, serr)
	}
}

// Close closes both sockets.
func (c *Conn) Close() error { return errors.Join(c.rx.Close(), c.tx.Close()) }

// Send sends p to the peer's BFD port.
func (c *Conn) Send(p Packet, to netip.Addr) error {
	port := PortSingleHop
	if c.minTTL != 255 {
		port = PortMultihop
	}
	_, err := c.tx.WriteToUDPAddrPort(p.Marshal(), netip.AddrPortFrom(to, uint16(port)))
	return err
}

// Read returns the next packet and its sender. A packet with a wrong TTL
// is ErrTTL, one that does not parse the Parse error: the caller counts
// them and reads on.
func (c *Conn) Read() (Packet, netip.Addr, error) {
	buf := make([]byte, 64)
	oob := make([]byte, 64)
	n, oobn, _, from, err := c.rx.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		return Packet{}, netip.Addr{}, err
	}
	src := from.Addr().Unmap()
	ttl := -1
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err == nil {
		for _, m := range msgs {
			if (m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TTL) ||
				(m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT) {
				if len(m.Data) >= 4 {
					ttl = int(int32(nativeEndian.Uint32(m.Data[:4])))
				} else if len(m.Data) >= 1 {
					ttl = int(m.Data[0])
				}
			}
		}
	}
	if ttl < c.minTTL {
		return Packet{}, src, &TTLError{TTL: ttl, Min: c.minTTL}
	}
	p, err := Parse(buf[:n])
	return p, src, err
}

// SetReadDeadline bounds the next Read.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.rx.SetReadDeadline(t) }
