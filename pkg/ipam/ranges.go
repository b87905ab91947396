// Package ipam assigns LoadBalancer IPs from pools.
//
// It is pure logic: it imports only the standard library, takes plain
// descriptions of pools and Services, and never talks to Kubernetes. The
// controller translates API objects into these types (pkg/config) and writes
// the results back. Keeping it pure lets every allocation rule be tested in
// milliseconds and fuzzed.
package ipam

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
)

// Family is an IP address family.
type Family uint8

// The two address families a pool or Service can use.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// String returns "IPv4" or "IPv6", the spelling Kubernetes uses in
// spec.ipFamilies.
func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return fmt.Sprintf("Family(%d)", uint8(f))
}

// FamilyOf returns the family of an address; IPv4-mapped IPv6 addresses
// count as IPv6, as they do on the wire.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// Range is an inclusive range of addresses of one family.
type Range struct {
	First, Last netip.Addr
}

// ParseRange parses a pool entry: a CIDR ("10.0.0.0/24", "fd00::/120") or an
// inclusive range ("10.0.0.10-10.0.0.20"). Both ends of a range must be of the
// same family and in order. A CIDR with host bits set is accepted and means
// its whole network, as in MetalLB.
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if first, last, ok := strings.Cut(s, "-"); ok {
		a, err := netip.ParseAddr(strings.TrimSpace(first))
		if err != nil {
			return Range{}, fmt.Errorf("range %q: start: %w", s, err)
		}
		b, err := netip.ParseAddr(strings.TrimSpace(last))
		if err != nil {
			return Range{}, fmt.Errorf("range %q: end: %w", s, err)
		}
		if a.Zone() != "" || b.Zone() != "" {
			return Range{}, fmt.Errorf("range %q: zoned addresses are not allowed", s)
		}
		if a.Is4() != b.Is4() {
			return Range{}, fmt.Errorf("range %q: ends are of different families", s)
		}
		if b.Less(a) {
			return Range{}, fmt.Errorf("range %q: start is after end", s)
		}
		return Range{First: a, Last: b}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return Range{}, fmt.Errorf("%q is neither a CIDR nor a range: %w", s, err)
	}
	return PrefixRange(p), nil
}

// PrefixRange returns the range of addresses a prefix covers.
func PrefixRange(p netip.Prefix) Range {
	p = p.Masked()
	first := p.Addr()
	b := first.AsSlice()
	bits := p.Bits()
	for i := range b {
		// Set every bit past the prefix length.
		lo := i * 8
		switch {
		case lo >= bits:
			b[i] = 0xff
		case lo+8 > bits:
			b[i] |= byte(0xff >> (bits - lo))
		}
	}
	last, _ := netip.AddrFromSlice(b)
	return Range{First: first, Last: last}
}

// Family returns the range's address family.
func (r Range) Family() Family { return FamilyOf(r.First) }

// Contains reports whether a lies in the range.
func (r Range) Contains(a netip.Addr) bool {
	return a.Is4() == r.First.Is4() && r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0
}

// String returns the range as "first-last".
func (r Range) String() string {
	return r.First.String() + "-" + r.Last.String()
}

// Size returns how many addresses the range holds, saturating at
// math.MaxUint64 (an IPv6 range can be larger than any integer type).
func (r Range) Size() uint64 {
	if r.First.Is4() {
		return uint64(v4(r.Last)-v4(r.First)) + 1
	}
	fh, fl := v6(r.First)
	lh, ll := v6(r.Last)
	if lh-fh > 1 || (lh-fh == 1 && ll >= fl) {
		return math.MaxUint64
	}
	n := ll - fl // wraps correctly when lh == fh+1 and ll < fl
	if n == math.MaxUint64 {
		return n
	}
	return n + 1
}

// buggyCount returns how many IPv4 addresses of the range end in .0 or .255.
func (r Range) buggyCount() uint64 {
	if !r.First.Is4() {
		return 0
	}
	upTo := func(n uint32) uint64 { // buggy addresses in [0, n]
		c := 2*uint64(n>>8) + 1
		if n&0xff == 0xff {
			c++
		}
		return c
	}
	f, l := v4(r.First), v4(r.Last)
	c := upTo(l)
	if f > 0 {
		c -= upTo(f - 1)
	}
	return c
}

// isBuggy reports whether a is an IPv4 address ending in .0 or .255, which
// some old clients mistake for network or broadcast addresses.
func isBuggy(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	last := a.As4()[3]
	return last == 0 || last == 255
}

func v4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func v6(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	for i := range 8 {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[8+i])
	}
	return hi, lo
}

// mergeRanges sorts ranges and merges the ones that overlap or touch, so a
// pool's entries that repeat each other are counted once.
func mergeRanges(in []Range) []Range {
	rs := slices.Clone(in)
	slices.SortFunc(rs, func(a, b Range) int {
		if a.First.Is4() != b.First.Is4() {
			if a.First.Is4() {
				return -1
			}
			return 1
		}
		return cmp.Or(a.First.Compare(b.First), a.Last.Compare(b.Last))
	})
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && out[n-1].First.Is4() == r.First.Is4() {
			prev := &out[n-1]
			next := prev.Last.Next()
			if r.First.Compare(prev.Last) <= 0 || (next.IsValid() && r.First == next) {
				if prev.Last.Less(r.Last) {
					prev.Last = r.Last
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// overlap reports whether two ranges share an address.
func overlap(a, b Range) bool {
	return a.First.Is4() == b.First.Is4() && a.First.Compare(b.Last) <= 0 && b.First.Compare(a.Last) <= 0
}
