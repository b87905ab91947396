package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// ipv4HeaderOK tells whether b starts with an IPv4 header whose checksum
// is right.
func ipv4HeaderOK(b []byte) bool {
	if len(b) < 20 || b[0]>>4 != 4 || int(b[0]&0xf)*4 > len(b) {
		return false
	}
	return fold(sum16(b[:int(b[0]&0xf)*4], 0)) == 0
}

// l4ChecksumOK tells whether the TCP or UDP checksum of the IP packet b
// (IPv4 without options or IPv6, as long as its length fields say) is
// right. A UDP/IPv4 checksum of zero means none, which is right.
func l4ChecksumOK(b []byte) bool {
	var pseudo uint32
	var l4 []byte
	var proto uint8
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(b[2:4]))
		if tot > len(b) || tot < ihl {
			return false
		}
		proto, l4 = b[9], b[ihl:tot]
		pseudo = sum16(b[12:20], uint32(proto)+uint32(len(l4)))
		if proto == 17 && len(l4) >= 8 && binary.BigEndian.Uint16(l4[6:8]) == 0 {
			return true
		}
	case len(b) >= 40 && b[0]>>4 == 6:
		n := int(binary.BigEndian.Uint16(b[4:6]))
		if 40+n > len(b) {
			return false
		}
		proto, l4 = b[6], b[40:40+n]
		pseudo = sum16(b[8:40], uint32(proto)+uint32(len(l4)))
	default:
		return false
	}
	if (proto != 6 || len(l4) < 20) && (proto != 17 || len(l4) < 8) {
		return false
	}
	return fold(sum16(l4, pseudo)) == 0
}

// inNamespace runs fn on an OS thread in network namespace ns: the fuzz
// engine calls its function on threads of its own, and the program's FIB
// lookups resolve the ingress link in the caller's namespace.
func inNamespace(t testing.TB, ns netns.NsHandle, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer func() { _ = orig.Close() }()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	fn()
	if err := netns.Set(orig); err != nil {
		// Left locked: the runtime retires the thread.
		t.Fatal(err)
	}
	runtime.UnlockOSThread()
}

// FuzzXDPRemote feeds mutated VIP packets to the XDP program on a real
// test network (a veth with this node's addresses, node B a permanent
// neighbour), with rings that send vip4:80/TCP and vip6:80/TCP to node B
// and vip4:7/UDP to a local endpoint, so encapsulation, the FIB lookup,
// the too-big answer and local DNAT all run. Whatever the input:
//   - the verdict is PASS, DROP or TX (never ABORTED, never REDIRECT);
//   - what is not a well-formed VIP packet passes untouched;
//   - a TX frame is either the packet encapsulated to node B (outer
//     header to node B's MAC, from this node to node B, lengths that
//     match, a right header checksum; the inner packet with this
//     packet's addresses, ports and lengths, its checksums right when
//     they were right) or an ICMP error back to the client (checksums
//     right);
//   - a packet rewritten for the kernel (local DNAT) keeps right
//     checksums right.
func FuzzXDPRemote(f *testing.F) {
	objs := load(f)
	ifindex := testNet(f)
	ns, err := netns.Get()
	must(f, err)
	f.Cleanup(func() { _ = ns.Close() })
	vips := world(f, objs)
	setRing(f, objs, 1, 2)  // vip4:80/TCP -> node B
	setRing(f, objs, 3, 12) // vip6:80/TCP -> node B
	setRing(f, objs, 2, 1)  // vip4:7/UDP -> here
	setBackends(f, objs, 2, 7007, pod1)

	seeds := []pkt{
		{src: client4, dst: vip4, proto: 6, sport: 40000, dport: 80, flags: tcpSYN, mss: 1460},
		{src: client4, dst: vip4, proto: 6, sport: 40001, dport: 80, flags: tcpACK, payload: []byte("GET / HTTP/1.1\r\n")},
		{src: client4, dst: vip4, proto: 17, sport: 5000, dport: 7, payload: []byte("ping")},
		{src: client6, dst: vip6, proto: 6, sport: 40000, dport: 80, flags: tcpSYN, mss: 1440},
		{src: client4, dst: vip4, proto: 6, sport: 40002, dport: 80, flags: tcpACK, payload: bytes.Repeat([]byte("x"), 1460)},
	}
	// The seeds take the paths the target is for: encapsulation to node
	// B (both families), local DNAT, and the too-big answer.
	want := []uint32{xdpTX, xdpTX, xdpPass, xdpTX, xdpTX}
	for i, p := range seeds {
		in := p.frame()
		var ret uint32
		var out []byte
		inNamespace(f, ns, func() { ret, out = runXDP(f, objs.IronlbXdp, in, ifindex) })
		if ret != want[i] || bytes.Equal(out, in) {
			f.Fatalf("seed %d: verdict %d, modified %v; want %d, modified", i, ret, !bytes.Equal(out, in), want[i])
		}
		if i == 4 && (len(out) < 14+20 || out[14+9] != 1) {
			f.Fatalf("seed 4 (1514 bytes with DF) is not answered with ICMP: %x", out[:min(len(out), 64)])
		}
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 1514 {
			return // the kernel refuses these frames
		}
		var ret uint32
		var out []byte
		inNamespace(t, ns, func() { ret, out = runXDP(t, objs.IronlbXdp, in, ifindex) })
		ok := wellFormedVIP(in, vips, self4, self6)
		modified := !bytes.Equal(out, in)
		switch {
		case !ok:
			if ret != xdpPass || modified {
				t.Fatalf("a packet the data plane must leave alone got verdict %d, modified %v:\n%x", ret, modified, in)
			}
		case ret == xdpDrop:
		case ret == xdpPass:
			if modified {
				checkRewritten(t, in, out)
			}
		case ret == xdpTX:
			checkSent(t, in, out)
		default:
			t.Fatalf("verdict %d for a VIP packet:\n%x", ret, in)
		}
	})
}

// checkRewritten: a packet handed to the kernel after local DNAT.
func checkRewritten(t *testing.T, in, out []byte) {
	t.Helper()
	if len(out) != len(in) || !bytes.Equal(out[12:14], in[12:14]) {
		t.Fatalf("DNAT changed the frame's length or type:\n%x\n%x", in, out)
	}
	if in[14]>>4 == 4 && ipv4HeaderOK(in[14:]) && !ipv4HeaderOK(out[14:]) {
		t.Fatalf("DNAT broke a right IPv4 header checksum:\n%x\n%x", in, out)
	}
	if l4ChecksumOK(in[14:]) && !l4ChecksumOK(out[14:]) {
		t.Fatalf("DNAT broke a right L4 checksum:\n%x\n%x", in, out)
	}
}

// checkSent: a frame sent back out of the link, encapsulated to node B or
// an ICMP error to the client.
func checkSent(t *testing.T, in, out []byte) {
	t.Helper()
	if len(out) < 14+20 {
		t.Fatalf("TX of a %d-byte frame", len(out))
	}
	inner := in[14:]
	switch binary.BigEndian.Uint16(out[12:14]) {
	case 0x0800:
		o := out[14:]
		tot := int(binary.BigEndian.Uint16(o[2:4]))
		if !ipv4HeaderOK(o) || tot > len(o) || o[8] == 0 {
			t.Fatalf("TX: bad outer IPv4 header:\n%x", out)
		}
		if o[9] == 1 { // an ICMP error back to the client
			checkICMPBack(t, in, out, tot)
			return
		}
		if o[9] != 4 || [6]byte(out[0:6]) != macNodeB || netip.AddrFrom4([4]byte(o[12:16])) != self4 || netip.AddrFrom4([4]byte(o[16:20])) != nodeB4 {
			t.Fatalf("TX: not IPIP from this node to node B's MAC and address:\n%x", out)
		}
		checkInner(t, inner, o[20:tot])
	case 0x86dd:
		o := out[14:]
		if len(o) < 40 {
			t.Fatalf("TX: short IPv6 frame:\n%x", out)
		}
		n := int(binary.BigEndian.Uint16(o[4:6]))
		if 40+n > len(o) || o[7] == 0 {
			t.Fatalf("TX: IPv6 payload length %d in %d bytes:\n%x", n, len(o), out)
		}
		if o[6] == 58 {
			checkICMPBack(t, in, out, 40+n)
			return
		}
		if o[6] != 41 || [6]byte(out[0:6]) != macNodeB || netip.AddrFrom16([16]byte(o[8:24])) != self6 || netip.AddrFrom16([16]byte(o[24:40])) != nodeB6 {
			t.Fatalf("TX: not IPv6-in-IPv6 from this node to node B's MAC and address:\n%x", out)
		}
		checkInner(t, inner, o[40:40+n])
	default:
		t.Fatalf("TX of a frame of type %x", out[12:14])
	}
}

// checkInner: the encapsulated packet is the client's, whole.
func checkInner(t *testing.T, in, got []byte) {
	t.Helper()
	var n int
	if in[0]>>4 == 4 {
		n = int(binary.BigEndian.Uint16(in[2:4]))
		if len(got) != n || !bytes.Equal(got[12:20], in[12:20]) || got[9] != in[9] {
			t.Fatalf("inner IPv4 packet: %d bytes for %d, or other addresses:\n%x\n%x", len(got), n, in, got)
		}
		if ipv4HeaderOK(in) && !ipv4HeaderOK(got) {
			t.Fatalf("inner IPv4 header checksum broken:\n%x\n%x", in, got)
		}
	} else {
		n = 40 + int(binary.BigEndian.Uint16(in[4:6]))
		if len(got) != n || !bytes.Equal(got[8:40], in[8:40]) || got[6] != in[6] {
			t.Fatalf("inner IPv6 packet: %d bytes for %d, or other addresses:\n%x\n%x", len(got), n, in, got)
		}
	}
	if l4ChecksumOK(in[:n]) && !l4ChecksumOK(got) {
		t.Fatalf("inner L4 checksum broken:\n%x\n%x", in, got)
	}
}

// checkICMPBack: an ICMP error from the VIP to the client that sent in,
// to its MAC, with right checksums.
func checkICMPBack(t *testing.T, in, out []byte, ipLen int) {
	t.Helper()
	if !bytes.Equal(out[0:6], in[6:12]) {
		t.Fatalf("ICMP error not sent back to the sender's MAC:\n%x\n%x", in, out)
	}
	o := out[14 : 14+ipLen]
	var icmp []byte
	var pseudo uint32
	if o[0]>>4 == 4 {
		if !bytes.Equal(o[12:16], in[14+16:14+20]) || !bytes.Equal(o[16:20], in[14+12:14+16]) {
			t.Fatalf("ICMP error not from the VIP to the client:\n%x\n%x", in, out)
		}
		icmp = o[20:]
	} else {
		if !bytes.Equal(o[8:24], in[14+24:14+40]) || !bytes.Equal(o[24:40], in[14+8:14+24]) {
			t.Fatalf("ICMPv6 error not from the VIP to the client:\n%x\n%x", in, out)
		}
		icmp = o[40:]
		pseudo = sum16(o[8:40], 58+uint32(len(icmp)))
	}
	if fold(sum16(icmp, pseudo)) != 0 {
		t.Fatalf("ICMP checksum wrong:\n%x", out)
	}
}
