package bpf

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

const xdpRedirect = 4

var (
	macHost = [6]byte{0x02, 0, 0, 0, 0x01, 0x01} // the node's end of a pod's veth
	macPod  = [6]byte{0x02, 0, 0, 0, 0x01, 0x02} // the pod's end
)

// podLink adds, in the test's namespace, a veth pair standing for a pod's:
// p0 on the node's side with 10.89.1.1/24 and fd89:1::1/64, and permanent
// neighbour entries for pod1 and pod6 behind it (pod2 has none). It
// returns p0's index.
func podLink(t *testing.T) int {
	t.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "p0", HardwareAddr: net.HardwareAddr(macHost[:])}, PeerName: "p1"}
	must(t, netlink.LinkAdd(veth))
	p0, err := netlink.LinkByName("p0")
	must(t, err)
	p1, err := netlink.LinkByName("p1")
	must(t, err)
	must(t, netlink.LinkSetUp(p0))
	must(t, netlink.LinkSetUp(p1))
	for _, a := range []string{"10.89.1.1/24", "fd89:1::1/64"} {
		addr, _ := netlink.ParseAddr(a)
		addr.Flags = 0x02 // IFA_F_NODAD
		must(t, netlink.AddrAdd(p0, addr))
	}
	for _, ip := range []netip.Addr{pod1, pod6} {
		must(t, netlink.NeighAdd(&netlink.Neigh{LinkIndex: p0.Attrs().Index, State: netlink.NUD_PERMANENT,
			IP: ip.AsSlice(), HardwareAddr: net.HardwareAddr(macPod[:])}))
	}
	return p0.Attrs().Index
}

// TestDeliver: with redirection allowed, a packet for a local endpoint
// behind a listed link leaves in XDP for that link, as the kernel would
// forward it (pod's MAC, TTL one lower); every other case is left to the
// kernel after DNAT, TTL untouched.
func TestDeliver(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	p0 := podLink(t)
	world(t, objs)
	setRing(t, objs, 1, 1)
	setRing(t, objs, 3, 11)
	setBackends(t, objs, 3, 8080, pod6)
	redirect := func(on bool) {
		cfg := LbConfigEntry{Self4: Addr(self4)[0], Self6: Addr(self6), RingSize: ringSize, Mtu: 1500}
		if on {
			cfg.Flags = ConfigRedirect
		}
		must(t, objs.Config.Put(uint32(0), cfg))
	}

	in := func(sport uint16, ttl uint8) pkt {
		return pkt{src: client4, dst: vip4, proto: 6, sport: sport, dport: 80, flags: tcpACK, payload: []byte("x"), ttl: ttl}
	}
	at := func(p pkt, to netip.Addr, ttl uint8, src, dst [6]byte) []byte {
		p.dst, p.dport, p.ttl, p.srcMAC, p.dstMAC = to, 8080, ttl, src, dst
		return p.frame()
	}
	in6 := pkt{src: client6, dst: vip6, proto: 6, sport: 40000, dport: 80, flags: tcpACK}

	steps := []struct {
		name    string
		setup   func()
		in      []byte
		verdict uint32
		out     []byte
	}{
		{
			name:    "redirection off: DNAT, to the kernel",
			setup:   func() { setBackends(t, objs, 1, 8080, pod1) },
			in:      in(1000, 0).frame(),
			verdict: xdpPass,
			out:     at(in(1000, 0), pod1, 64, [6]byte{}, [6]byte{}),
		},
		{
			name:    "redirection on, link not listed: to the kernel",
			setup:   func() { redirect(true) },
			in:      in(1001, 0).frame(),
			verdict: xdpPass,
			out:     at(in(1001, 0), pod1, 64, [6]byte{}, [6]byte{}),
		},
		{
			name:    "link listed: redirected with the pod's MAC and TTL 63",
			setup:   func() { must(t, objs.EndpointLinks.Put(uint32(p0), uint32(p0))) },
			in:      in(1002, 0).frame(),
			verdict: xdpRedirect,
			out:     at(in(1002, 0), pod1, 63, macHost, macPod),
		},
		{
			// Two other endpoints now, pod1 gone from the set: a new
			// placement could not give pod1, so only the flow's
			// conntrack entry sends it there.
			name:    "the same flow again, two other endpoints ready: redirected by its conntrack entry",
			setup:   func() { setBackends(t, objs, 1, 8080, pod2, netip.MustParseAddr("10.89.1.4")) },
			in:      in(1002, 0).frame(),
			verdict: xdpRedirect,
			out:     at(in(1002, 0), pod1, 63, macHost, macPod),
		},
		{
			name: "longer than the link's MTU now: to the kernel, which answers frag needed",
			setup: func() {
				l, err := netlink.LinkByName("p0")
				must(t, err)
				must(t, netlink.LinkSetMTU(l, 1280))
			},
			in:      func() []byte { p := in(1002, 0); p.payload = make([]byte, 1300); return p.frame() }(),
			verdict: xdpPass,
			out: func() []byte {
				p := in(1002, 0)
				p.payload = make([]byte, 1300)
				return at(p, pod1, 64, [6]byte{}, [6]byte{})
			}(),
		},
		{
			name:    "short again: redirected",
			in:      in(1002, 0).frame(),
			verdict: xdpRedirect,
			out:     at(in(1002, 0), pod1, 63, macHost, macPod),
		},
		{
			name: "link no longer listed: the flow goes to the kernel, untouched but for DNAT",
			setup: func() {
				l, err := netlink.LinkByName("p0")
				must(t, err)
				must(t, netlink.LinkSetMTU(l, 1500))
				must(t, objs.EndpointLinks.Delete(uint32(p0)))
			},
			in:      in(1002, 0).frame(),
			verdict: xdpPass,
			out:     at(in(1002, 0), pod1, 64, [6]byte{}, [6]byte{}),
		},
		{
			name:    "listed again: redirected",
			setup:   func() { must(t, objs.EndpointLinks.Put(uint32(p0), uint32(p0))) },
			in:      in(1002, 0).frame(),
			verdict: xdpRedirect,
			out:     at(in(1002, 0), pod1, 63, macHost, macPod),
		},
		{
			name:    "TTL 1: to the kernel, which answers time exceeded",
			setup:   func() { setBackends(t, objs, 1, 8080, pod1) },
			in:      in(1003, 1).frame(),
			verdict: xdpPass,
			out:     at(in(1003, 1), pod1, 1, [6]byte{}, [6]byte{}),
		},
		{
			name:    "no neighbour entry for the endpoint: to the kernel, which resolves it",
			setup:   func() { setBackends(t, objs, 1, 8080, pod2) },
			in:      in(1004, 0).frame(),
			verdict: xdpPass,
			out:     at(in(1004, 0), pod2, 64, [6]byte{}, [6]byte{}),
		},
		{
			name:    "IPv6: redirected, hop limit 63",
			in:      in6.frame(),
			verdict: xdpRedirect,
			out: func() []byte {
				p := in6
				p.dst, p.dport, p.ttl, p.srcMAC, p.dstMAC = pod6, 8080, 63, macHost, macPod
				return p.frame()
			}(),
		},
		{
			name:    "redirection off again: to the kernel",
			setup:   func() { redirect(false); setBackends(t, objs, 1, 8080, pod1) },
			in:      in(1005, 0).frame(),
			verdict: xdpPass,
			out:     at(in(1005, 0), pod1, 64, [6]byte{}, [6]byte{}),
		},
	}
	for _, s := range steps {
		if s.setup != nil {
			s.setup()
		}
		ret, out := runXDP(t, objs.IronlbXdp, s.in, ifindex)
		if ret != s.verdict {
			t.Errorf("%s: verdict %d, want %d (drops %v)", s.name, ret, s.verdict, drops(t, objs))
			continue
		}
		if !bytes.Equal(out, s.out) {
			t.Errorf("%s: output differs\n got %x\nwant %x", s.name, out, s.out)
		}
	}
}
