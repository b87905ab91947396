package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/internal/nsrun"
)

// Death is how the announcing node dies in a failover.
type Death string

// The kinds of death the lab can inflict.
const (
	// KillSpeaker: kill -9 of the owner's speaker; the node itself lives
	// on and still forwards what reaches it.
	KillSpeaker Death = "kill -9 speaker"
	// CutLink: the owner's link goes down; nothing reaches it.
	CutLink Death = "link down"
	// StopSpeaker: SIGTERM to the owner's speaker, as in a rolling update;
	// it hands over before it exits.
	StopSpeaker Death = "SIGTERM speaker"
)

// ProbeInterval is how often the failover probe sends.
const ProbeInterval = 10 * time.Millisecond

// Probe sends a UDP datagram to VIP:7 from the client namespace every
// 10 ms, over a pool of source ports so that one flow stuck on a dead
// backend cannot hide the others, and watches both directions with a
// packet socket: the MAC each answered request went to tells which node
// carried it.
type Probe struct {
	vip   netip.Addr
	conns []net.Conn
	psock int

	mu     sync.Mutex
	cond   *sync.Cond
	last   map[string]time.Time // MAC -> time of latest reply
	firsts []reply
	stop   chan struct{}
	wg     sync.WaitGroup
}

type reply struct {
	at  time.Time
	mac string
}

// StartProbe begins probing vip (IPv4) from the client namespace.
func (c Config) StartProbe(ctx context.Context, vip netip.Addr) (*Probe, error) {
	if !vip.Is4() {
		return nil, errors.New("the probe speaks IPv4")
	}
	p := &Probe{vip: vip, last: map[string]time.Time{}, stop: make(chan struct{}), psock: -1}
	p.cond = sync.NewCond(&p.mu)
	err := nsrun.In(ClientNS, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		// ETH_P_ALL: a socket bound to one protocol sees no outgoing
		// frames.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		p.psock = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			return fmt.Errorf("bind packet socket: %w", err)
		}
		tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		for range 32 {
			conn, err := net.Dial("udp", net.JoinHostPort(vip.String(), "7"))
			if err != nil {
				return err
			}
			p.conns = append(p.conns, conn)
		}
		return nil
	})
	if err != nil {
		p.Close()
		return nil, err
	}
	for _, conn := range p.conns {
		p.wg.Go(func() {
			buf := make([]byte, 2048)
			for {
				if _, err := conn.Read(buf); err != nil && errors.Is(err, net.ErrClosed) {
					return
				}
			}
		})
	}
	p.wg.Go(p.capture)
	p.wg.Go(p.send)
	return p, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// send writes one datagram every ProbeInterval, bounded by Close.
func (p *Probe) send() {
	t := time.NewTicker(ProbeInterval)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		_, _ = p.conns[i%len(p.conns)].Write([]byte("probe " + strconv.Itoa(i) + "\n"))
	}
}

// capture reads the probe's frames both ways. A reply counts for the node
// its request was sent to (the MAC the client resolved for the VIP): with
// the kernel data plane that node also sends the reply, with the XDP data
// plane the reply comes straight from the endpoint's node (direct server
// return), so only the request says which node carried the flow.
func (p *Probe) capture() {
	buf := make([]byte, 2048)
	vip := p.vip.As4()
	sentTo := map[int]string{} // probe number -> MAC it was sent to
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		n, from, err := unix.Recvfrom(p.psock, buf, 0)
		if err != nil {
			continue // timeout: look at stop again
		}
		f := buf[:n]
		// Ethernet (14) + IPv4 (>= 20) + UDP (8), to or from VIP port 7.
		if len(f) < 14+20+8 || binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_IP {
			continue
		}
		ip := f[14:]
		ihl := int(ip[0]&0x0f) * 4
		if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl+8 || ip[9] != syscall.IPPROTO_UDP {
			continue
		}
		payload := string(ip[ihl+8:])
		i := strings.Index(payload, "probe ")
		if i < 0 {
			continue
		}
		num, err := strconv.Atoi(strings.TrimSpace(payload[i+len("probe "):]))
		if err != nil {
			continue
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		if ll != nil && ll.Pkttype == unix.PACKET_OUTGOING {
			if [4]byte(ip[16:20]) == vip && binary.BigEndian.Uint16(ip[ihl+2:ihl+4]) == 7 {
				sentTo[num] = net.HardwareAddr(f[0:6]).String()
				delete(sentTo, num-4096) // bounded
			}
			continue
		}
		if [4]byte(ip[12:16]) != vip || binary.BigEndian.Uint16(ip[ihl:ihl+2]) != 7 {
			continue
		}
		mac, ok := sentTo[num]
		if !ok {
			continue
		}
		now := time.Now()
		p.mu.Lock()
		p.last[mac] = now
		p.firsts = append(p.firsts, reply{now, mac})
		if len(p.firsts) > 4096 {
			p.firsts = slices.Clone(p.firsts[2048:])
		}
		p.cond.Broadcast()
		p.mu.Unlock()
	}
}

// Current returns the MAC that answered last, if any reply came within
// the last 100 ms.
func (p *Probe) Current() (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var best string
	var at time.Time
	for mac, t := range p.last {
		if t.After(at) {
			best, at = mac, t
		}
	}
	return best, best != "" && time.Since(at) < 100*time.Millisecond
}

// FirstOther waits until a reply after since comes from a MAC other than
// old, and returns its time.
func (p *Probe) FirstOther(since time.Time, old string, limit time.Duration) (time.Time, string, error) {
	deadline := time.Now().Add(limit)
	timer := time.AfterFunc(limit, func() { p.mu.Lock(); p.cond.Broadcast(); p.mu.Unlock() })
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		for _, r := range p.firsts {
			if r.at.After(since) && r.mac != old {
				return r.at, r.mac, nil
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, "", fmt.Errorf("no reply from a node other than %s within %s", old, limit)
		}
		p.cond.Wait()
	}
}

// Close stops the probe.
func (p *Probe) Close() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.wg.Wait()
	if p.psock >= 0 {
		_ = unix.Close(p.psock)
	}
}

// MACs maps each node's eth0 MAC to the node.
func (c Config) MACs() (map[string]Node, error) {
	out := map[string]Node{}
	for _, n := range c.NodeList() {
		err := nsrun.In(n.NS, func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			out[ifi.HardwareAddr.String()] = n
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Members reads a speaker's view of the live members from its metrics.
func (c Config) Members(ctx context.Context, n Node) (int, error) {
	conn, err := DialIn(ctx, n.NS, "tcp", "127.0.0.1:7473")
	if err != nil {
		return 0, err
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		return 0, err
	}
	b, err := io.ReadAll(io.LimitReader(conn, 1<<20))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "ironlb_members "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), err
		}
	}
	return 0, errors.New("no ironlb_members metric")
}

// WaitSettled polls until every speaker sees every node and the probe gets
// steady answers from one node, and returns that node.
func (c Config) WaitSettled(ctx context.Context, p *Probe, limit time.Duration) (Node, error) {
	macs, err := c.MACs()
	if err != nil {
		return Node{}, err
	}
	deadline := time.Now().Add(limit)
	var last error
	var steadyMAC string
	var steadySince time.Time
	for time.Now().Before(deadline) {
		ok := true
		for _, n := range c.NodeList() {
			m, err := c.Members(ctx, n)
			if err != nil || m != c.Nodes {
				ok, last = false, fmt.Errorf("speaker on %s sees %d members (%v)", n.Name, m, err)
				break
			}
		}
		if ok {
			// Steady: the same node has answered for 300 ms.
			mac, fresh := p.Current()
			n, known := macs[mac]
			switch {
			case !fresh || !known:
				steadyMAC, last = "", errors.New("the probe gets no answers")
			case mac != steadyMAC:
				steadyMAC, steadySince = mac, time.Now()
			case time.Since(steadySince) >= 300*time.Millisecond:
				return n, nil
			}
		} else {
			steadyMAC = ""
		}
		select {
		case <-ctx.Done():
			return Node{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return Node{}, fmt.Errorf("lab not settled after %s: %v", limit, last)
}

// FailoverResult is one failover.
type FailoverResult struct {
	Death    Death
	From, To Node
	// Took is from the death to the first reply through the new owner.
	Took time.Duration
}

// Failover kills the node that answers the probe, the given way, measures
// until a reply comes through another node, and restores the dead part.
func (c Config) Failover(ctx context.Context, p *Probe, death Death) (FailoverResult, error) {
	owner, err := c.WaitSettled(ctx, p, 30*time.Second)
	if err != nil {
		return FailoverResult{}, err
	}
	macs, err := c.MACs()
	if err != nil {
		return FailoverResult{}, err
	}
	oldMAC := ""
	for m, n := range macs {
		if n.Name == owner.Name {
			oldMAC = m
		}
	}
	t0 := time.Now()
	switch death {
	case KillSpeaker:
		err = c.Kill(SpeakerName(owner))
	case CutLink:
		err = c.CutLink(ctx, owner)
	case StopSpeaker:
		err = c.Stop(SpeakerName(owner), 10*time.Second)
	default:
		err = fmt.Errorf("unknown death %q", death)
	}
	if err != nil {
		return FailoverResult{}, err
	}
	at, mac, ferr := p.FirstOther(t0, oldMAC, 10*time.Second)
	// Restore whatever happened before reporting.
	switch death {
	case KillSpeaker, StopSpeaker:
		err = c.StartSpeaker(owner)
	case CutLink:
		err = c.RestoreLink(ctx, owner)
	}
	if ferr != nil {
		return FailoverResult{}, fmt.Errorf("%s of %s: %w", death, owner.Name, ferr)
	}
	if err != nil {
		return FailoverResult{}, err
	}
	return FailoverResult{Death: death, From: owner, To: macs[mac], Took: at.Sub(t0)}, nil
}

// RestartSpeakers stops every speaker and starts it again with c's flags,
// then waits until each sees every node.
func (c Config) RestartSpeakers(ctx context.Context) error {
	for _, n := range c.NodeList() {
		if err := c.Stop(SpeakerName(n), 10*time.Second); err != nil {
			return err
		}
		if err := c.StartSpeaker(n); err != nil {
			return err
		}
	}
	return c.WaitAllMembers(ctx, 60*time.Second)
}

// WaitAllMembers polls until every speaker sees every node.
func (c Config) WaitAllMembers(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, n := range c.NodeList() {
		for {
			m, err := c.Members(ctx, n)
			if err == nil && m == c.Nodes {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("speaker on %s sees %d members (%v)", n.Name, m, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}
