package bpf

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// SYN cookies: above the rate a VIP answers SYNs itself with a cookie and
// keeps nothing; a client's ACK of a good cookie becomes the SYN the
// endpoint sees, and tier 2 then proxies the flow's sequence numbers.

const tcRedirect = 7

// seg is a TCP segment as a test reads it back from a frame.
type seg struct {
	src, dst     netip.Addr
	sport, dport uint16
	seq, ack     uint32
	flags        uint8
	win          uint16
	opts         []byte
	payload      []byte
}

// decodeTCP reads the TCP segment of an Ethernet frame, and fails the
// test when a checksum is wrong.
func decodeTCP(t *testing.T, what string, frame []byte) seg {
	t.Helper()
	l3 := frame[14:]
	var s seg
	var l4 []byte
	if frame[12] == 0x08 {
		if !ipv4HeaderOK(l3) {
			t.Fatalf("%s: bad IPv4 header checksum", what)
		}
		s.src, s.dst = netip.AddrFrom4([4]byte(l3[12:16])), netip.AddrFrom4([4]byte(l3[16:20]))
		l4 = l3[20:binary.BigEndian.Uint16(l3[2:4])]
	} else {
		s.src, s.dst = netip.AddrFrom16([16]byte(l3[8:24])), netip.AddrFrom16([16]byte(l3[24:40]))
		l4 = l3[40 : 40+binary.BigEndian.Uint16(l3[4:6])]
	}
	if !l4ChecksumOK(l3) {
		t.Fatalf("%s: bad TCP checksum", what)
	}
	s.sport, s.dport = binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
	s.seq, s.ack = binary.BigEndian.Uint32(l4[4:]), binary.BigEndian.Uint32(l4[8:])
	off := int(l4[12]>>4) * 4
	s.flags, s.win = l4[13], binary.BigEndian.Uint16(l4[14:])
	s.opts, s.payload = l4[20:off], l4[off:]
	return s
}

// mssOf returns the MSS option of a segment that starts its options with
// it, or 0.
func mssOf(s seg) uint16 {
	if len(s.opts) < 4 || s.opts[0] != 2 || s.opts[1] != 4 {
		return 0
	}
	return binary.BigEndian.Uint16(s.opts[2:])
}

// cookieRate sets --syn-cookie-rate.
func cookieRate(t testing.TB, objs *LbObjects, rate uint32) {
	t.Helper()
	var c LbConfigEntry
	must(t, objs.Config.Lookup(uint32(0), &c))
	c.SynCookieRate = rate
	must(t, objs.Config.Put(uint32(0), c))
}

func cookieStats(t testing.TB, objs *LbObjects, id uint32) (sent, ok, bad uint64) {
	t.Helper()
	var per []LbServiceStats
	must(t, objs.Stats.Lookup(id, &per))
	for _, p := range per {
		sent, ok, bad = sent+p.CookiesSent, ok+p.CookiesOk, bad+p.CookiesBad
	}
	return sent, ok, bad
}

func pendingDrops(t testing.TB, objs *LbObjects) uint64 {
	return drops(t, objs)[LbDropReasonDROP_PROXY_PENDING]
}

// TestSYNCookies, for each family, on a node that is both director and
// endpoint node: the VIP port's second SYN in a second (rate 1) turns
// cookies on and gets a cookie SYN-ACK, with nothing recorded; an ACK
// without a good cookie goes on as a mid-flow packet; the ACK of the
// cookie reaches the endpoint as the client's SYN, with the cookie's MSS;
// the endpoint's SYN-ACK becomes the ACK that completes its handshake;
// from then on the client's acknowledgements and the endpoint's sequence
// numbers are shifted between the two, and the flow becomes established.
func TestSYNCookies(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	setRing(t, objs, 1, 1)  // vip4:80 -> this node
	setRing(t, objs, 3, 11) // vip6:80 -> this node
	setBackends(t, objs, 1, 8080, pod1)
	setBackends(t, objs, 3, 8080, pod6)
	cookieRate(t, objs, 1)
	for _, c := range []struct {
		client, vip, ep     netip.Addr
		id                  uint32
		clientMSS, synack   uint16 // the client's, and the SYN-ACK's (clamped for the tunnel)
		cookieMSS           uint16 // what the cookie keeps of the client's
		sport, other, stray uint16
	}{
		{client4, vip4, pod1, 1, 1460, 1440, 1460, 52001, 52000, 52002},
		{client6, vip6, pod6, 3, 1440, 1400, 1440, 53001, 53000, 53002},
	} {
		earlyInSecond(t)
		first := pkt{src: c.client, dst: c.vip, proto: 6, sport: c.other, dport: 80, flags: tcpSYN, mss: c.clientMSS, seq: 900}
		if ret, out := runXDP(t, objs.IronlbXdp, first.frame(), ifindex); ret != xdpPass || dstOf(out) != c.ep {
			t.Fatalf("%s: the first SYN of the second (under the rate) must go to the endpoint: verdict %d to %s", c.vip, ret, dstOf(out))
		}
		syn := pkt{src: c.client, dst: c.vip, proto: 6, sport: c.sport, dport: 80, flags: tcpSYN, mss: c.clientMSS, seq: 5000}
		ret, out := runXDP(t, objs.IronlbXdp, syn.frame(), ifindex)
		if ret != xdpTX {
			t.Fatalf("%s: the second SYN (over the rate) must be answered here: verdict %d", c.vip, ret)
		}
		sa := decodeTCP(t, "cookie SYN-ACK", out)
		if sa.src != c.vip || sa.dst != c.client || sa.sport != 80 || sa.dport != c.sport ||
			sa.flags != tcpSYN|tcpACK || sa.ack != 5001 || mssOf(sa) != c.synack || len(sa.payload) != 0 {
			t.Fatalf("%s: SYN-ACK %+v", c.vip, sa)
		}
		if string(out[0:6]) != string(macClient[:]) || string(out[6:12]) != string(macSelf[:]) {
			t.Fatalf("%s: the SYN-ACK must go back to the client's MAC from ours", c.vip)
		}
		var e1 LbCt1Entry
		var e2 LbCt2Entry
		if has(objs.Ct1New, flowOf(syn), &e1) || has(objs.Ct2New, flowOf(syn), &e2) {
			t.Fatalf("%s: a SYN answered with a cookie must leave no state", c.vip)
		}
		cookie := sa.seq

		// An ACK that holds no cookie: a connection picked up mid-way.
		stray := pkt{src: c.client, dst: c.vip, proto: 6, sport: c.stray, dport: 80, flags: tcpACK, seq: 7001, ack: cookie + 2}
		if ret, out := runXDP(t, objs.IronlbXdp, stray.frame(), ifindex); ret != xdpPass || decodeTCP(t, "stray", out).flags != tcpACK {
			t.Fatalf("%s: an ACK without a cookie must go on unchanged: verdict %d", c.vip, ret)
		}
		var sh LbSeqShift
		if has(objs.Shifts, replyOf(stray, c.ep, 8080), &sh) {
			t.Fatalf("%s: an ACK without a cookie must not be proxied", c.vip)
		}

		// The ACK of the cookie: the endpoint gets the client's SYN.
		ack := pkt{src: c.client, dst: c.vip, proto: 6, sport: c.sport, dport: 80, flags: tcpACK, seq: 5001, ack: cookie + 1}
		ret, out = runXDP(t, objs.IronlbXdp, ack.frame(), ifindex)
		if ret != xdpPass {
			t.Fatalf("%s: cookie ACK verdict %d", c.vip, ret)
		}
		s := decodeTCP(t, "SYN to the endpoint", out)
		if s.src != c.client || s.dst != c.ep || s.dport != 8080 || s.flags != tcpSYN || s.seq != 5000 || s.ack != 0 || mssOf(s) != c.cookieMSS {
			t.Fatalf("%s: the endpoint must get the client's SYN (seq 5000, MSS %d): %+v", c.vip, c.cookieMSS, s)
		}
		rk := replyOf(ack, c.ep, 8080)
		var ne LbRevnatNewEntry
		if !has(objs.Ct2New, flowOf(ack), &e2) || e2.Flags != 1 || !has(objs.RevnatNew, rk, &ne) || ne.Vip.Family&RevnatProxied == 0 {
			t.Fatalf("%s: the flow must be recorded as proxied: ct2_new %+v, revnat_new %+v", c.vip, e2, ne)
		}
		if !has(objs.Shifts, rk, &sh) || sh.Cookie != cookie || sh.Ready != 0 {
			t.Fatalf("%s: shifts %+v, want cookie %#x not ready", c.vip, sh, cookie)
		}
		if sent, ok, bad := cookieStats(t, objs, c.id); sent != 1 || ok != 1 || bad != 1 {
			t.Fatalf("%s: cookies sent %d, good %d, bad %d; want 1 each", c.vip, sent, ok, bad)
		}

		// Data before the endpoint answered: dropped, sent again.
		early := ack
		early.payload = []byte("early")
		before := pendingDrops(t, objs)
		if ret, _ := runXDP(t, objs.IronlbXdp, early.frame(), ifindex); ret != xdpDrop || pendingDrops(t, objs) != before+1 {
			t.Fatalf("%s: data before the endpoint's SYN-ACK: verdict %d, want a proxy_pending drop", c.vip, ret)
		}

		// The endpoint's SYN-ACK completes its handshake, sent back in.
		synack := pkt{src: c.ep, dst: c.client, proto: 6, sport: 8080, dport: c.sport, flags: tcpSYN | tcpACK, mss: 1460, seq: 0x7777, ack: 5001, srcMAC: macSelf, dstMAC: macClient}
		ret, out = runTC(t, objs.IronlbTcEgress, synack.frame())
		if ret != tcRedirect {
			t.Fatalf("%s: the endpoint's SYN-ACK: verdict %d, want TC_ACT_REDIRECT", c.vip, ret)
		}
		a := decodeTCP(t, "ACK to the endpoint", out)
		if a.src != c.client || a.dst != c.ep || a.sport != c.sport || a.dport != 8080 || a.flags != tcpACK ||
			a.seq != 5001 || a.ack != 0x7778 || a.win != 0xffff || string(a.opts) != "\x01\x01\x01\x01" {
			t.Fatalf("%s: ACK %+v", c.vip, a)
		}
		if string(out[0:6]) != string(macSelf[:]) {
			t.Fatalf("%s: the ACK must be addressed to this host's MAC", c.vip)
		}

		// From now on the two views are shifted into each other.
		data := ack
		data.payload = []byte("hello")
		ret, out = runXDP(t, objs.IronlbXdp, data.frame(), ifindex)
		d := decodeTCP(t, "client data", out)
		if ret != xdpPass || d.dst != c.ep || d.ack != 0x7778 || d.seq != 5001 || string(d.payload) != "hello" {
			t.Fatalf("%s: client data: verdict %d, %+v", c.vip, ret, d)
		}
		var vk LbVipKey
		if !has(objs.Ct2, flowOf(ack), &e2) || e2.Flags != 1 || !has(objs.Revnat, rk, &vk) || vk.Family != FamilyOf(c.vip)|RevnatProxied {
			t.Fatalf("%s: acknowledging the endpoint's ISN must make the proxied flow established", c.vip)
		}
		reply := pkt{src: c.ep, dst: c.client, proto: 6, sport: 8080, dport: c.sport, flags: tcpACK, seq: 0x7778, ack: 5006, payload: []byte("world"), srcMAC: macSelf, dstMAC: macClient}
		ret, out = runTC(t, objs.IronlbTcEgress, reply.frame())
		r := decodeTCP(t, "endpoint data", out)
		if ret != tcOK || r.src != c.vip || r.sport != 80 || r.seq != cookie+1 || r.ack != 5006 || string(r.payload) != "world" {
			t.Fatalf("%s: endpoint data: verdict %d, %+v", c.vip, ret, r)
		}

		// A router on the client's path says the reply was too big: the
		// endpoint gets the error about the packet it sent, with its own
		// sequence number.
		quoted := pkt{src: c.vip, dst: c.client, proto: 6, sport: 80, dport: c.sport, flags: tcpACK, seq: cookie + 1, ack: 5006}.ip()
		sent := pkt{src: c.vip, dst: c.client, proto: 6, sport: 80, dport: c.sport, flags: tcpACK, seq: 0x7778, ack: 5006}.ip()
		router, typ, code, rest := netip.MustParseAddr("10.89.0.1"), byte(3), byte(4), [4]byte{0, 0, 0x05, 0xc8}
		n := 28
		if c.vip.Is6() {
			router, typ, code, rest, n = netip.MustParseAddr("fd89::1"), 2, 0, [4]byte{0, 0, 0x05, 0xb4}, 48
		}
		in := ether(macClient, macSelf, family(c.vip), icmpError(router, c.vip, typ, code, rest, quoted[:n]))
		want := ether(macClient, macSelf, family(c.vip), icmpError(router, c.ep, typ, code, rest, asSentBy(sent[:n], c.ep, 8080)))
		if ret, out := runXDP(t, objs.IronlbXdp, in, ifindex); ret != xdpPass || string(out[:len(want)]) != string(want) {
			t.Fatalf("%s: ICMP error about a proxied reply: verdict %d\n got %x\nwant %x", c.vip, ret, out[:len(want)], want)
		}

		// The endpoint's RST takes the shift with the flow.
		rst := reply
		rst.flags, rst.payload = 0x04, nil
		if ret, _ := runTC(t, objs.IronlbTcEgress, rst.frame()); ret != tcOK || has(objs.Shifts, rk, &sh) {
			t.Fatalf("%s: the endpoint's RST must leave no shift behind", c.vip)
		}
	}
}

// TestSYNCookieSwitch: cookies stay off at or below the rate, go on above
// it, and once the hold has passed SYNs are forwarded again while ACKs of
// cookies already sent are still checked; a node where cookies are
// unusable forwards SYNs.
func TestSYNCookieSwitch(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	setRing(t, objs, 1, 1)
	setBackends(t, objs, 1, 8080, pod1)
	cookieRate(t, objs, 3)
	earlyInSecond(t)
	verdicts := []uint32{}
	for i := range 5 {
		syn := pkt{src: client4, dst: vip4, proto: 6, sport: uint16(54000 + i), dport: 80, flags: tcpSYN, mss: 1460, seq: 100}
		ret, _ := runXDP(t, objs.IronlbXdp, syn.frame(), ifindex)
		verdicts = append(verdicts, ret)
	}
	if want := []uint32{xdpPass, xdpPass, xdpPass, xdpTX, xdpTX}; !equal(verdicts, want) {
		t.Fatalf("verdicts %v, want %v: three SYNs a second pass, the fourth turns cookies on", verdicts, want)
	}
	var cs LbCookieState
	must(t, objs.Cookies.Lookup(uint32(1), &cs))
	now := nowCoarse(t)
	if cs.OnUntil <= now || cs.CheckUntil <= cs.OnUntil {
		t.Fatalf("cookie state %+v at %d: want on, and checked longer", cs, now)
	}
	syn := pkt{src: client4, dst: vip4, proto: 6, sport: 54100, dport: 80, flags: tcpSYN, mss: 1460, seq: 100}
	_, out := runXDP(t, objs.IronlbXdp, syn.frame(), ifindex)
	cookie := decodeTCP(t, "SYN-ACK", out).seq

	// The hold is over (as if the flood stopped five seconds ago).
	cs.OnUntil = now - 1
	must(t, objs.Cookies.Put(uint32(1), cs))
	cookieRate(t, objs, 1000)
	late := syn
	late.sport = 54101
	if ret, out := runXDP(t, objs.IronlbXdp, late.frame(), ifindex); ret != xdpPass || dstOf(out) != pod1 {
		t.Fatalf("after the hold a SYN must go to the endpoint again: verdict %d", ret)
	}
	ack := pkt{src: client4, dst: vip4, proto: 6, sport: 54100, dport: 80, flags: tcpACK, seq: 101, ack: cookie + 1}
	ret, out := runXDP(t, objs.IronlbXdp, ack.frame(), ifindex)
	if s := decodeTCP(t, "late cookie ACK", out); ret != xdpPass || s.flags != tcpSYN || s.seq != 100 {
		t.Fatalf("a cookie ACK after the hold must still be proxied: verdict %d, %+v", ret, s)
	}
	// A node whose driver gave the cookie program no metadata room has
	// cookies off for good: SYNs are forwarded even while the port is over
	// the rate.
	cookieRate(t, objs, 1)
	must(t, objs.Cookies.Put(uint32(1), LbCookieState{OnUntil: nowCoarse(t) + 10e9, CheckUntil: nowCoarse(t) + 100e9}))
	must(t, objs.CookiesUnusable.Put(uint32(0), uint32(1)))
	late.sport = 54103
	if ret, out := runXDP(t, objs.IronlbXdp, late.frame(), ifindex); ret != xdpPass || dstOf(out) != pod1 {
		t.Fatalf("with cookies unusable a SYN must go to the endpoint: verdict %d", ret)
	}
	must(t, objs.CookiesUnusable.Put(uint32(0), uint32(0)))
	// Without cookies configured nothing is checked: the same kind of
	// ACK goes on as a mid-flow packet.
	cookieRate(t, objs, 0)
	ack.sport = 54102
	if ret, out := runXDP(t, objs.IronlbXdp, ack.frame(), ifindex); ret != xdpPass || decodeTCP(t, "ACK", out).flags != tcpACK {
		t.Fatalf("with --syn-cookie-rate 0 an ACK must go on as it is: verdict %d", ret)
	}
}

func equal(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSYNCookieTunnel: the SYN made of a cookie ACK leaves for another
// node's endpoints marked (outer IPv4 ID 0x1b2e); that node proxies the
// flow only for a marked SYN from a node, never for a client's SYN that
// happens to carry an acknowledgement number.
func TestSYNCookieTunnel(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	setRing(t, objs, 1, 2) // vip4:80 -> node B
	cookieRate(t, objs, 1)
	must(t, objs.Cookies.Put(uint32(1), LbCookieState{OnUntil: nowCoarse(t) + 10e9, CheckUntil: nowCoarse(t) + 100e9}))
	syn := pkt{src: client4, dst: vip4, proto: 6, sport: 55000, dport: 80, flags: tcpSYN, mss: 1460, seq: 300}
	ret, out := runXDP(t, objs.IronlbXdp, syn.frame(), ifindex)
	if ret != xdpTX {
		t.Fatalf("SYN: verdict %d", ret)
	}
	cookie := decodeTCP(t, "SYN-ACK", out).seq
	ack := pkt{src: client4, dst: vip4, proto: 6, sport: 55000, dport: 80, flags: tcpACK, seq: 301, ack: cookie + 1}
	ret, out = runXDP(t, objs.IronlbXdp, ack.frame(), ifindex)
	if ret != xdpTX || out[12] != 0x08 || out[14+9] != 4 || dstOf(out) != nodeB4 {
		t.Fatalf("cookie ACK: verdict %d, want it encapsulated to node B", ret)
	}
	if id := binary.BigEndian.Uint16(out[14+4:]); id != 0x1b2e {
		t.Fatalf("outer IPv4 ID %#x, want the proxied mark 0x1b2e", id)
	}
	inner := decodeTCP(t, "inner SYN", append(append([]byte{}, out[:14]...), out[34:]...))
	if inner.flags != tcpSYN || inner.seq != 300 || inner.ack != cookie+1 {
		t.Fatalf("inner %+v: a SYN carrying the cookie's acknowledgement", inner)
	}

	// On node B (here: this node as tier 2).
	setRing(t, objs, 1, 1)
	setBackends(t, objs, 1, 8080, pod1)
	marked := func(p pkt, id uint16) []byte {
		f := p.encapsulated(nodeB4, self4, macClient, macSelf)
		binary.BigEndian.PutUint16(f[14+4:], id)
		f[14+10], f[14+11] = 0, 0
		binary.BigEndian.PutUint16(f[14+10:], fold(sum16(f[14:34], 0)))
		return f
	}
	var sh LbSeqShift
	proxied := pkt{src: client4, dst: vip4, proto: 6, sport: 55001, dport: 80, flags: tcpSYN, mss: 1460, seq: 400, ack: 0xabcd}
	ret, out = runXDP(t, objs.IronlbXdp, marked(proxied, 0x1b2e), ifindex)
	if s := decodeTCP(t, "delivered SYN", out); ret != xdpPass || s.dst != pod1 || s.flags != tcpSYN || s.ack != 0 {
		t.Fatalf("a marked SYN: verdict %d, %+v: the endpoint gets a plain SYN", ret, s)
	}
	if !has(objs.Shifts, replyOf(proxied, pod1, 8080), &sh) || sh.Cookie != 0xabcc {
		t.Fatalf("a marked SYN's flow must be proxied with cookie 0xabcc: %+v", sh)
	}
	plain := proxied
	plain.sport = 55002
	if ret, _ := runXDP(t, objs.IronlbXdp, marked(plain, 0), ifindex); ret != xdpPass || has(objs.Shifts, replyOf(plain, pod1, 8080), &sh) {
		t.Fatalf("an unmarked SYN must not be proxied: verdict %d", ret)
	}
	direct := proxied
	direct.sport = 55003
	if ret, _ := runXDP(t, objs.IronlbXdp, direct.frame(), ifindex); ret != xdpTX || has(objs.Shifts, replyOf(direct, pod1, 8080), &sh) {
		t.Fatalf("a client's SYN with an acknowledgement number must not be proxied: verdict %d", ret)
	}
}

// withIPOptions returns an IPv4 frame with four bytes of IP options (NOPs
// and an end) after its header.
func withIPOptions(frame []byte) []byte {
	out := append(append(append([]byte{}, frame[:34]...), 1, 1, 1, 0), frame[34:]...)
	out[14] = 0x46
	binary.BigEndian.PutUint16(out[16:], binary.BigEndian.Uint16(out[16:])+4)
	out[24], out[25] = 0, 0
	binary.BigEndian.PutUint16(out[24:], fold(sum16(out[14:38], 0)))
	return out
}

// TestSYNCookieEdges: a SYN and an ACK with IPv4 options get cookies like
// any (a flood cannot dodge them with options; the replies go without);
// an endpoint that refuses the proxied SYN resets the client at the
// sequence number the client waits for.
func TestSYNCookieEdges(t *testing.T) {
	objs := load(t)
	ifindex := testNet(t)
	world(t, objs)
	setRing(t, objs, 1, 1)
	setBackends(t, objs, 1, 8080, pod1)
	cookieRate(t, objs, 1)
	must(t, objs.Cookies.Put(uint32(1), LbCookieState{OnUntil: nowCoarse(t) + 10e9, CheckUntil: nowCoarse(t) + 100e9}))

	syn := pkt{src: client4, dst: vip4, proto: 6, sport: 56000, dport: 80, flags: tcpSYN, mss: 1460, seq: 700}
	ret, out := runXDP(t, objs.IronlbXdp, withIPOptions(syn.frame()), ifindex)
	if ret != xdpTX || out[14] != 0x45 {
		t.Fatalf("a SYN with IP options: verdict %d, IP header %#x: want a cookie SYN-ACK without options", ret, out[14])
	}
	sa := decodeTCP(t, "SYN-ACK", out)
	if sa.flags != tcpSYN|tcpACK || sa.ack != 701 || sa.dst != client4 {
		t.Fatalf("SYN-ACK %+v", sa)
	}
	ack := pkt{src: client4, dst: vip4, proto: 6, sport: 56000, dport: 80, flags: tcpACK, seq: 701, ack: sa.seq + 1, payload: []byte("GET /")}
	ret, out = runXDP(t, objs.IronlbXdp, withIPOptions(ack.frame()), ifindex)
	s := decodeTCP(t, "SYN", out)
	if ret != xdpPass || out[14] != 0x45 || s.flags != tcpSYN || s.seq != 700 || len(s.payload) != 0 || mssOf(s) != 1460 {
		t.Fatalf("an ACK with IP options and data: verdict %d, %+v: want the client's SYN, without either", ret, s)
	}

	// The endpoint has no listener: its RST reaches the client.
	rst := pkt{src: pod1, dst: client4, proto: 6, sport: 8080, dport: 56000, flags: 0x04 | tcpACK, seq: 0, ack: 701, srcMAC: macSelf, dstMAC: macClient}
	ret, out = runTC(t, objs.IronlbTcEgress, rst.frame())
	r := decodeTCP(t, "RST", out)
	if ret != tcOK || r.src != vip4 || r.sport != 80 || r.flags != 0x04|tcpACK || r.seq != sa.seq+1 {
		t.Fatalf("the endpoint's RST: verdict %d, %+v: want it from the VIP at the cookie's sequence + 1", ret, r)
	}
	var sh LbSeqShift
	if has(objs.Shifts, replyOf(ack, pod1, 8080), &sh) {
		t.Fatal("the RST must take the flow's shift with it")
	}
	// Any other reply before the endpoint's SYN-ACK is dropped.
	ack.sport, ack.payload = 56001, nil
	syn.sport = 56001
	_, out = runXDP(t, objs.IronlbXdp, syn.frame(), ifindex)
	ack.ack = decodeTCP(t, "SYN-ACK", out).seq + 1
	if ret, _ := runXDP(t, objs.IronlbXdp, ack.frame(), ifindex); ret != xdpPass {
		t.Fatalf("cookie ACK: verdict %d", ret)
	}
	stray := pkt{src: pod1, dst: client4, proto: 6, sport: 8080, dport: 56001, flags: tcpACK, seq: 9, ack: 701, srcMAC: macSelf, dstMAC: macClient}
	if ret, _ := runTC(t, objs.IronlbTcEgress, stray.frame()); ret != 2 {
		t.Fatalf("a reply before the shift is known: verdict %d, want TC_ACT_SHOT", ret)
	}
}
