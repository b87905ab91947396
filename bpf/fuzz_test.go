package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// wellFormedVIP is the Go twin of the program's parser: it reports whether
// b is a packet the data plane may touch, a complete TCP or UDP packet (or
// an IPIP packet to this node carrying one) to a served VIP:port.
func wellFormedVIP(b []byte, vips map[LbVipKey]bool, self4, self6 netip.Addr) bool {
	if len(b) < 14 {
		return false
	}
	return wellFormedIP(b[14:], binary.BigEndian.Uint16(b[12:14]), vips, self4, self6, true)
}

func wellFormedIP(b []byte, ethType uint16, vips map[LbVipKey]bool, self4, self6 netip.Addr, outer bool) bool {
	var src, dst netip.Addr
	var proto uint8
	var l4 []byte
	switch ethType {
	case 0x0800:
		if len(b) < 20 || b[0]>>4 != 4 || b[0]&0xf < 5 {
			return false
		}
		ihl := int(b[0]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(b[2:4]))
		if binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 || tot < ihl || tot > len(b) || ihl > len(b) {
			return false
		}
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		proto, l4 = b[9], b[ihl:tot]
		if proto == 4 {
			return outer && dst == self4 && wellFormedIP(l4, 0x0800, vips, self4, self6, false)
		}
	case 0x86dd:
		if len(b) < 40 || b[0]>>4 != 6 || 40+int(binary.BigEndian.Uint16(b[4:6])) > len(b) {
			return false
		}
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		proto, l4 = b[6], b[40:40+int(binary.BigEndian.Uint16(b[4:6]))]
		if proto == 41 {
			return outer && dst == self6 && wellFormedIP(l4, 0x86dd, vips, self4, self6, false)
		}
	default:
		return false
	}
	_ = src
	if proto == 1 || proto == 58 {
		return icmpAboutVIP(l4, dst, proto, vips, ethType == 0x0800 && b[0]&0xf != 5)
	}
	switch proto {
	case 6:
		if len(l4) < 20 || l4[12]>>4 < 5 {
			return false
		}
	case 17:
		if len(l4) < 8 {
			return false
		}
	default:
		return false
	}
	return vips[VipKeyFor(dst, binary.BigEndian.Uint16(l4[2:4]), proto)]
}

// icmpAboutVIP: an ICMP error, to the VIP dst, about a TCP or UDP packet
// the VIP sent (the program may steer and rewrite those).
func icmpAboutVIP(m []byte, dst netip.Addr, proto uint8, vips map[LbVipKey]bool, options bool) bool {
	if options {
		return false
	}
	if proto == 1 {
		if len(m) < 8+20+4 || (m[0] != 3 && m[0] != 11) {
			return false
		}
		q := m[8:]
		if q[0] != 0x45 || (q[9] != 6 && q[9] != 17) || netip.AddrFrom4([4]byte(q[12:16])) != dst {
			return false
		}
		return vips[VipKeyFor(dst, binary.BigEndian.Uint16(q[20:22]), q[9])]
	}
	if len(m) < 8+40+4 || m[0] < 1 || m[0] > 4 {
		return false
	}
	q := m[8:]
	if (q[6] != 6 && q[6] != 17) || netip.AddrFrom16([16]byte(q[8:24])) != dst {
		return false
	}
	return vips[VipKeyFor(dst, binary.BigEndian.Uint16(q[40:42]), q[6])]
}

// FuzzXDP feeds random bytes and mutated valid packets to the XDP program
// and asserts that traffic not for a VIP is never modified and that
// nothing malformed is ever rewritten or sent on.
func FuzzXDP(f *testing.F) {
	objs := load(f)
	must(f, objs.Config.Put(uint32(0), LbConfigEntry{Self4: Addr(self4)[0], Self6: Addr(self6), RingSize: ringSize, Mtu: 1500}))
	must(f, objs.Nodes.Put(uint32(1), LbNodeInfo{Addr: Addr(self4), Family: 4}))
	must(f, objs.Nodes.Put(uint32(11), LbNodeInfo{Addr: Addr(self6), Family: 6}))
	vips := map[LbVipKey]bool{}
	for id, k := range map[uint32]LbVipKey{1: key(vip4, 80, 6), 2: key(vip4, 7, 17), 3: key(vip6, 80, 6)} {
		must(f, objs.Vips.Put(k, LbVipInfo{ServiceId: id}))
		vips[k] = true
	}
	setRing(f, objs, 1, 1)
	setRing(f, objs, 2, 1)
	setRing(f, objs, 3, 11)
	setBackends(f, objs, 1, 8080, pod1, pod2)
	setBackends(f, objs, 2, 7007, pod1)
	setBackends(f, objs, 3, 8080, pod6)

	seeds := []pkt{
		{src: client4, dst: vip4, proto: 6, sport: 40000, dport: 80, flags: tcpSYN, mss: 1460},
		{src: client4, dst: vip4, proto: 17, sport: 5000, dport: 7, payload: []byte("ping")},
		{src: client6, dst: vip6, proto: 6, sport: 40000, dport: 80, payload: []byte("GET /")},
		{src: client4, dst: nodeB4, proto: 6, sport: 1, dport: 80},
	}
	for _, p := range seeds {
		f.Add(p.frame())
	}
	f.Add(seeds[0].encapsulated(nodeB4, self4, macNodeB, macSelf))
	f.Add(seeds[2].encapsulated(nodeB6, self6, macNodeB, macSelf))
	f.Add([]byte{})
	quoted := pkt{src: vip4, dst: client4, proto: 6, sport: 80, dport: 40000}.ip()[:28]
	f.Add(ether(macClient, macSelf, 4, icmpError(netip.MustParseAddr("10.89.0.1"), vip4, 3, 4, [4]byte{0, 0, 5, 0xc8}, quoted)))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 1514 {
			return // the kernel refuses these frames
		}
		ret, out := runXDP(t, objs.IronlbXdp, in, 0)
		ok := wellFormedVIP(in, vips, self4, self6)
		modified := !bytes.Equal(out, in)
		if !ok && (ret != xdpPass || modified) {
			t.Fatalf("a packet the data plane must leave alone got verdict %d, modified %v:\n%x", ret, modified, in)
		}
	})
}

// l4Tuple parses a frame as the TC program does: Ethernet, IPv4 without
// fragmentation (options allowed) or IPv6 without extension headers, and a
// complete TCP or UDP header. The IP length fields are not checked against
// the frame: on egress an skb's payload may lie outside its linear part,
// so the program reads only the headers. ok is false for anything else.
func l4Tuple(b []byte) (src, dst netip.Addr, sport, dport uint16, proto uint8, ok bool) {
	if len(b) < 14 {
		return
	}
	ip := b[14:]
	var l4 []byte
	switch binary.BigEndian.Uint16(b[12:14]) {
	case 0x0800:
		if len(ip) < 20 || ip[0]>>4 != 4 || ip[0]&0xf < 5 {
			return
		}
		ihl := int(ip[0]&0xf) * 4
		if binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 || ihl > len(ip) {
			return
		}
		src, dst, proto, l4 = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20])), ip[9], ip[ihl:]
	case 0x86dd:
		if len(ip) < 40 || ip[0]>>4 != 6 {
			return
		}
		src, dst, proto, l4 = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40])), ip[6], ip[40:]
	default:
		return
	}
	switch {
	case proto == 6 && len(l4) >= 20 && l4[12]>>4 >= 5, proto == 17 && len(l4) >= 8:
		return src, dst, binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4]), proto, true
	}
	return netip.Addr{}, netip.Addr{}, 0, 0, 0, false
}

// FuzzTC feeds random bytes and mutated replies to the TC egress program,
// with three flows tracked (their VIP packets went through XDP first). It
// asserts that the program never drops or resizes a frame, that it touches
// only a complete TCP or UDP reply of a tracked flow, and that what it
// writes there is the flow's VIP and port as the source.
func FuzzTC(f *testing.F) {
	objs := load(f)
	must(f, objs.Config.Put(uint32(0), LbConfigEntry{Self4: Addr(self4)[0], Self6: Addr(self6), RingSize: ringSize, Mtu: 1500}))
	must(f, objs.Nodes.Put(uint32(1), LbNodeInfo{Addr: Addr(self4), Family: 4}))
	must(f, objs.Nodes.Put(uint32(11), LbNodeInfo{Addr: Addr(self6), Family: 6}))
	for id, k := range map[uint32]LbVipKey{1: key(vip4, 80, 6), 2: key(vip4, 7, 17), 3: key(vip6, 80, 6)} {
		must(f, objs.Vips.Put(k, LbVipInfo{ServiceId: id}))
	}
	setRing(f, objs, 1, 1)
	setRing(f, objs, 2, 1)
	setRing(f, objs, 3, 11)
	setBackends(f, objs, 1, 8080, pod1)
	setBackends(f, objs, 2, 7007, pod1)
	setBackends(f, objs, 3, 8080, pod6)
	type tuple struct {
		src, dst     netip.Addr
		sport, dport uint16
		proto        uint8
	}
	// The replies of these flows are tracked, and the VIP they come from.
	tracked := map[tuple]netip.AddrPort{}
	for _, c := range []struct {
		in        pkt
		pod       netip.Addr
		port      uint16
		vip, verd uint32
	}{
		{pkt{src: client4, dst: vip4, proto: 6, sport: 40000, dport: 80, flags: tcpSYN, mss: 1460}, pod1, 8080, 0, xdpPass},
		{pkt{src: client4, dst: vip4, proto: 17, sport: 5000, dport: 7, payload: []byte("ping")}, pod1, 7007, 0, xdpPass},
		{pkt{src: client6, dst: vip6, proto: 6, sport: 40000, dport: 80, flags: tcpSYN}, pod6, 8080, 0, xdpPass},
	} {
		if ret, _ := runXDP(f, objs.IronlbXdp, c.in.frame(), 0); ret != c.verd {
			f.Fatalf("setting up %v: verdict %d", c.in, ret)
		}
		tracked[tuple{c.pod, c.in.src, c.port, c.in.sport, c.in.proto}] = netip.AddrPortFrom(c.in.dst, c.in.dport)
	}
	f.Add(pkt{src: pod1, dst: client4, proto: 6, sport: 8080, dport: 40000, flags: tcpSYN | tcpACK, mss: 1460, srcMAC: macSelf, dstMAC: macClient}.frame())
	f.Add(pkt{src: pod1, dst: client4, proto: 17, sport: 7007, dport: 5000, payload: []byte("pong"), srcMAC: macSelf, dstMAC: macClient}.frame())
	f.Add(pkt{src: pod6, dst: client6, proto: 6, sport: 8080, dport: 40000, flags: tcpACK, payload: []byte("hi"), srcMAC: macSelf, dstMAC: macClient}.frame())
	f.Add(pkt{src: pod1, dst: client4, proto: 6, sport: 8080, dport: 40001, flags: tcpACK, srcMAC: macSelf, dstMAC: macClient}.frame())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 1514 {
			return // the kernel refuses these frames
		}
		opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
		ret, err := objs.IronlbTcEgress.Run(opts)
		if errors.Is(err, unix.EINVAL) {
			return // the kernel's test run refuses it (e.g. an IP ethertype with no room for the header): no skb
		}
		must(t, err)
		out := opts.DataOut
		if ret != tcOK {
			t.Fatalf("verdict %d, want TC_ACT_OK for every frame:\n%x", ret, in)
		}
		if len(out) != len(in) {
			t.Fatalf("the frame went from %d to %d bytes:\n%x", len(in), len(out), in)
		}
		if bytes.Equal(out, in) {
			return
		}
		src, dst, sport, dport, proto, ok := l4Tuple(in)
		vip, known := tracked[tuple{src, dst, sport, dport, proto}]
		if !ok || !known {
			t.Fatalf("a frame that is no complete reply of a tracked flow was rewritten:\n in %x\nout %x", in, out)
		}
		osrc, odst, osport, odport, oproto, ok := l4Tuple(out)
		if !ok || osrc != vip.Addr() || osport != vip.Port() || odst != dst || odport != dport || oproto != proto {
			t.Fatalf("a reply of %v left as %s:%d -> %s:%d (%d), want from %s:\n in %x\nout %x", tuple{src, dst, sport, dport, proto}, osrc, osport, odst, odport, oproto, vip, in, out)
		}
	})
}
