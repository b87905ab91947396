package bpf

import (
	"encoding/binary"
	"net/netip"
)

// The maps hold addresses and ports as the packet does: in network byte
// order, read as raw memory. An IPv4 address fills the first word only.

// Addr returns a in the maps' layout.
func Addr(a netip.Addr) [4]uint32 {
	var out [4]uint32
	if a.Is4() {
		b := a.As4()
		out[0] = binary.NativeEndian.Uint32(b[:])
		return out
	}
	b := a.As16()
	for i := range out {
		out[i] = binary.NativeEndian.Uint32(b[i*4:])
	}
	return out
}

// AddrFrom is the inverse of Addr.
func AddrFrom(raw [4]uint32, family uint8) netip.Addr {
	var b [16]byte
	for i, w := range raw {
		binary.NativeEndian.PutUint32(b[i*4:], w)
	}
	if family == Family4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

// Port returns a port in the maps' layout.
func Port(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// PortFrom is the inverse of Port.
func PortFrom(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

// Families, as the maps record them.
const (
	Family4 = 4
	Family6 = 6
)

// FamilyOf returns a's family in the maps' terms.
func FamilyOf(a netip.Addr) uint8 {
	if a.Is4() {
		return Family4
	}
	return Family6
}

// VipKeyFor returns the vips key of addr:port/proto.
func VipKeyFor(addr netip.Addr, port uint16, proto uint8) LbVipKey {
	return LbVipKey{Addr: Addr(addr), Port: Port(port), Proto: proto, Family: FamilyOf(addr)}
}

// Flags of a VIP (vip_info.flags).
const (
	VIPAffinity = 1
	VIPLocal    = 2
)

// Flags of a node's configuration (config_entry.flags).
const (
	// ConfigRedirect lets packets for local endpoints leave in XDP by
	// the links listed in endpoint_links.
	ConfigRedirect = 1
	// ConfigHistory turns ring history on: tier 2 passes a TCP flow it
	// does not know on to the node its own ring or the previous one
	// gives it.
	ConfigHistory = 2
)

// DropReasons names the drops map's indexes, enum drop_reason in consts.h
// (generated as LbDropReason, so a reason renamed in C fails this build,
// and one added there has no name until it gets one here: a test checks),
// for the metrics' reason label. stale_speaker counts VIP packets passed
// to the kernel untouched because the speaker stopped refreshing the data
// plane, not drops.
var DropReasons = [LbDropReasonDROP_REASONS]string{
	LbDropReasonDROP_NO_CONFIG:          "no_config",
	LbDropReasonDROP_NO_RING:            "no_ring",
	LbDropReasonDROP_NO_NODE:            "no_node",
	LbDropReasonDROP_NO_BACKEND:         "no_backend",
	LbDropReasonDROP_FIB:                "fib",
	LbDropReasonDROP_ENCAP:              "encap",
	LbDropReasonDROP_DECAP:              "decap",
	LbDropReasonDROP_MALFORMED:          "malformed",
	LbDropReasonDROP_TOO_BIG:            "too_big",
	LbDropReasonDROP_SOURCE_RANGE:       "source_range",
	LbDropReasonDROP_UNTRUSTED_TUNNEL:   "untrusted_tunnel",
	LbDropReasonPASS_STALE:              "stale_speaker",
	LbDropReasonDROP_SOURCE_LIMIT:       "source_limit",
	LbDropReasonDROP_PROXY_PENDING:      "proxy_pending",
	LbDropReasonDROP_COOKIE_UNSUPPORTED: "cookies_unsupported",
}

// MapsLayout is MAPS_LAYOUT in consts.h: the version of the pinned maps'
// layout and meaning, which the loader stamps in the config map.
const MapsLayout = 4

// Slots of the progs array (PROG_* in consts.h): the SYN-cookie program,
// which ironlb_xdp tail-calls, and ironlb_xdp, which it hands packets
// back to. The loader fills both.
const (
	ProgCookie = 0
	ProgMain   = 1
)

// RevnatProxied is REVNAT_PROXIED in consts.h: the bit of a reverse-NAT
// entry's family that says tier 2 proxies the flow's sequence numbers
// (SYN cookies).
const RevnatProxied = 0x80

// AffinityTier2 marks a tier-2 (endpoint) affinity entry.
const AffinityTier2 = 2

// PeerKeyFor returns the tunnel_peers key of a node address.
func PeerKeyFor(a netip.Addr) LbPeerKey {
	return LbPeerKey{Addr: Addr(a), Family: FamilyOf(a)}
}

// RangeKeyFor returns the source_ranges key of a prefix of an access list.
func RangeKeyFor(acl uint32, p netip.Prefix) LbRangeKey {
	k := LbRangeKey{Prefixlen: 32 + uint32(p.Bits()), Acl: acl}
	copy(k.Addr[:], p.Masked().Addr().AsSlice())
	return k
}

// MaxIfMacs is MAX_IF_MACS in consts.h: the if_macs array's size, a
// power of two.
const MaxIfMacs = 256

// IfMacSlot is an interface's slot in if_macs.
func IfMacSlot(ifindex int) uint32 { return uint32(ifindex) & (MaxIfMacs - 1) }
