package bpf

import (
	"encoding/binary"
	"net/netip"
)

// pkt describes a test packet; build renders it with every checksum right,
// so a rewritten packet can be compared byte for byte with the one the
// program should produce.
type pkt struct {
	srcMAC, dstMAC [6]byte
	src, dst       netip.Addr
	proto          uint8 // 6 TCP, 17 UDP
	sport, dport   uint16
	flags          uint8  // TCP flags
	mss            uint16 // a TCP MSS option when non-zero
	tcpOpts        []byte // more TCP options, after the MSS (a multiple of 4 bytes with it)
	payload        []byte
	udpNoCsum      bool
	tos            uint8
	ttl            uint8  // 0: 64
	seq, ack       uint32 // TCP sequence (0: 1) and acknowledgement numbers
}

const (
	tcpSYN = 0x02
	tcpACK = 0x10
)

var (
	macClient = [6]byte{0x02, 0, 0, 0, 0, 0x02}
	macSelf   = [6]byte{0x02, 0, 0, 0, 0, 0x11}
)

func sum16(b []byte, c uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		c += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		c += uint32(b[len(b)-1]) << 8
	}
	return c
}

func fold(c uint32) uint16 {
	for c>>16 != 0 {
		c = c&0xffff + c>>16
	}
	return ^uint16(c)
}

// l4 renders the TCP or UDP header and payload with its checksum.
func (p pkt) l4() []byte {
	var b []byte
	b = binary.BigEndian.AppendUint16(b, p.sport)
	b = binary.BigEndian.AppendUint16(b, p.dport)
	if p.proto == 6 {
		opts := []byte{}
		if p.mss != 0 {
			opts = binary.BigEndian.AppendUint16([]byte{2, 4}, p.mss)
		}
		opts = append(opts, p.tcpOpts...)
		seq := p.seq
		if seq == 0 {
			seq = 1
		}
		b = binary.BigEndian.AppendUint32(b, seq)
		b = binary.BigEndian.AppendUint32(b, p.ack)
		b = append(b, byte((20+len(opts))/4)<<4, p.flags)
		b = append(b, 0xff, 0xff, 0, 0, 0, 0) // window, checksum, urgent
		b = append(b, opts...)
	} else {
		b = binary.BigEndian.AppendUint16(b, uint16(8+len(p.payload)))
		b = append(b, 0, 0)
	}
	b = append(b, p.payload...)
	if p.proto == 17 && p.udpNoCsum && p.dst.Is4() {
		return b
	}
	// Pseudo-header.
	var ph []byte
	s, d := p.src.AsSlice(), p.dst.AsSlice()
	ph = append(append(ph, s...), d...)
	if p.dst.Is4() {
		ph = append(ph, 0, p.proto)
		ph = binary.BigEndian.AppendUint16(ph, uint16(len(b)))
	} else {
		ph = binary.BigEndian.AppendUint32(ph, uint32(len(b)))
		ph = append(ph, 0, 0, 0, p.proto)
	}
	c := fold(sum16(b, sum16(ph, 0)))
	if p.proto == 17 && c == 0 {
		c = 0xffff
	}
	off := 16
	if p.proto == 17 {
		off = 6
	}
	binary.BigEndian.PutUint16(b[off:], c)
	return b
}

// ip renders the IP header and everything after it.
func (p pkt) ip() []byte {
	l4 := p.l4()
	h := ipHeader(p.src, p.dst, p.proto, p.tos, l4)
	if p.ttl != 0 {
		if p.dst.Is4() {
			h[8] = p.ttl
			h[10], h[11] = 0, 0
			binary.BigEndian.PutUint16(h[10:], fold(sum16(h[:20], 0)))
		} else {
			h[7] = p.ttl
		}
	}
	return h
}

func ipHeader(src, dst netip.Addr, proto, tos uint8, payload []byte) []byte {
	if dst.Is4() {
		h := []byte{0x45, tos, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0}
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
		h = append(append(h, src.AsSlice()...), dst.AsSlice()...)
		binary.BigEndian.PutUint16(h[10:], fold(sum16(h, 0)))
		return append(h, payload...)
	}
	h := []byte{0x60 | tos>>4, tos << 4, 0, 0, 0, 0, proto, 64}
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h = append(append(h, src.AsSlice()...), dst.AsSlice()...)
	return append(h, payload...)
}

func ether(src, dst [6]byte, family int, l3 []byte) []byte {
	b := append(append([]byte{}, dst[:]...), src[:]...)
	if family == 4 {
		b = append(b, 0x08, 0x00)
	} else {
		b = append(b, 0x86, 0xdd)
	}
	return append(b, l3...)
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// frame renders the whole Ethernet frame.
func (p pkt) frame() []byte {
	src, dst := p.srcMAC, p.dstMAC
	if src == [6]byte{} {
		src = macClient
	}
	if dst == [6]byte{} {
		dst = macSelf
	}
	return ether(src, dst, family(p.dst), p.ip())
}

// encapsulated renders p inside an outer IP header from outerSrc to
// outerDst, as tier 1 sends it.
func (p pkt) encapsulated(outerSrc, outerDst netip.Addr, srcMAC, dstMAC [6]byte) []byte {
	inner := p.ip()
	var outer []byte
	if outerDst.Is4() {
		outer = ipHeader(outerSrc, outerDst, 4, p.tos, inner)
		outer[6] = 0x40 // DF
		outer[10], outer[11] = 0, 0
		binary.BigEndian.PutUint16(outer[10:], fold(sum16(outer[:20], 0)))
	} else {
		outer = ipHeader(outerSrc, outerDst, 41, p.tos, inner)
	}
	return ether(srcMAC, dstMAC, family(outerDst), outer)
}
