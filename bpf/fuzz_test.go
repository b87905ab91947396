package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
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
	must(f, objs.Config.Put(uint32(0), LbSettings{Self4: Addr(self4)[0], Self6: Addr(self6), RingSize: ringSize, Mtu: 1500}))
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
