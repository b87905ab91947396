package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/internal/nsrun"
	"github.com/ironlb/ironlb/pkg/lab"
)

// PPSResult is one data plane's forwarding rate.
type PPSResult struct {
	Dataplane      string
	Sent, Received uint64
	Took           time.Duration
}

// Rate is the packets per second that reached the backends.
func (r PPSResult) Rate() float64 { return float64(r.Received) / r.Took.Seconds() }

func (r PPSResult) String() string {
	return fmt.Sprintf("%-6s %d frames sent, %d reached the backends in %s: %.2f Mpps",
		r.Dataplane, r.Sent, r.Received, r.Took.Round(time.Millisecond), r.Rate()/1e6)
}

// MaxFrames bounds one measurement (and a minute does).
const MaxFrames = 20_000_000

// burst is how many frames one generator call sends. Each call costs
// about 25 ms of set-up here (a page pool), so small bursts measure the
// generator; the path behind it keeps up with bursts of 65 536 and starts
// to drop beyond.
const burst = 65536

// PPS floods the demo Service's IPv4 VIP on UDP 7 from lab-client
// with the kernel's XDP live-frames generator (BPF_PROG_RUN with
// BPF_F_TEST_XDP_LIVE_FRAMES: one frame, sent frames times as fast as the
// kernel can), and counts the packets that reached the backends' IP layer.
// The generator and the frame are the same whatever the data plane, so two
// runs compare the data planes. The count is bounded by frames.
func PPS(ctx context.Context, c lab.Config, vip netip.Addr, frames uint32) (PPSResult, error) {
	if frames == 0 || frames > MaxFrames {
		return PPSResult{}, fmt.Errorf("frames %d: want 1 to %d", frames, MaxFrames)
	}
	// A settled lab: every speaker sees every node (right after start-up
	// the announcer may still move), and one exchange so the client knows
	// the announcer's MAC.
	if err := c.WaitAllMembers(ctx, 30*time.Second); err != nil {
		return PPSResult{}, err
	}
	if _, err := c.WaitHTTP(ctx, vip, 20*time.Second); err != nil {
		return PPSResult{}, err
	}
	src, dst, ifindex, err := clientLink(vip)
	if err != nil {
		return PPSResult{}, err
	}
	// 64 bytes, the size the generator rewrites.
	frame := lab.UDPFrame(src, dst, netip.MustParseAddr(lab.ClientIPv4), vip, 40000, 7, []byte("ironlb pps bench ....\n"))
	if len(frame) != frameLen {
		return PPSResult{}, fmt.Errorf("frame of %d bytes, want %d", len(frame), frameLen)
	}
	frame[40], frame[41] = 0, 0 // no UDP checksum: the generator changes the source port

	pass, err := lab.XDPProgram(2) // XDP_PASS
	if err != nil {
		return PPSResult{}, err
	}
	defer func() { _ = pass.Close() }()
	tx, tmpl, err := generator(frame)
	if err != nil {
		return PPSResult{}, err
	}
	defer func() { _ = tx.Close(); _ = tmpl.Close() }()
	// Both data planes receive through NAPI on the nodes' links, as from
	// a NIC's ring: XDP turns it on for the xdp data plane, GRO for the
	// kernel one (without either, a veth queues to the CPU's backlog and
	// drops beyond 1 000 packets, which no NIC does).
	if c.Dataplane == "kernel" {
		for _, n := range c.NodeList() {
			if err := nsrun.In(n.NS, func() error { return lab.NAPIOn("eth0") }); err != nil {
				return PPSResult{}, err
			}
		}
	}
	restore, err := switchFabric(c, src, pass)
	if err != nil {
		return PPSResult{}, err
	}
	defer restore()

	// Each pod counts and drops what reaches it, in XDP on its own link:
	// the pods' stacks (and the echo servers' replies) would otherwise
	// cost more than either data plane and hide the difference.
	sink, counter, err := sinkProgram()
	if err != nil {
		return PPSResult{}, err
	}
	defer func() { _ = sink.Close(); _ = counter.Close() }()
	for _, p := range c.Pods() {
		if err := lab.SetXDP(p.NS, []string{"eth0"}, sink); err != nil {
			return PPSResult{}, err
		}
	}
	defer func() {
		for _, p := range c.Pods() {
			_ = lab.SetXDP(p.NS, []string{"eth0"}, nil)
		}
	}()
	podsReceived := func() (uint64, error) {
		var per []uint64
		if err := counter.Lookup(uint32(0), &per); err != nil {
			return 0, err
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		return n, nil
	}
	before, err := podsReceived()
	if err != nil {
		return PPSResult{}, err
	}
	var took time.Duration
	var sent uint32
	err = nsrun.In(lab.ClientNS, func() error {
		l, err := link.AttachXDP(link.XDPOptions{Program: pass, Interface: ifindex})
		if err != nil {
			return fmt.Errorf("attach to the client's link: %w", err)
		}
		defer func() { _ = l.Close() }()
		// Bursts: between calls the kernel finishes the receive work
		// a burst queued. One call for all frames would overflow the
		// receivers' rings and measure drops instead of forwarding.
		opts := &ebpf.RunOptions{
			Data:      frame,
			Repeat:    burst,
			BatchSize: 128,
			Flags:     unix.BPF_F_TEST_XDP_LIVE_FRAMES,
			Context:   xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifindex)},
		}
		start := time.Now()
		limit := start.Add(60 * time.Second)
		for sent = 0; sent < frames && time.Now().Before(limit); sent += opts.Repeat {
			opts.Repeat = min(burst, frames-sent)
			if _, err := tx.Run(opts); err != nil {
				return err
			}
		}
		took = time.Since(start)
		return nil
	})
	if err != nil {
		return PPSResult{}, fmt.Errorf("generator: %w", err)
	}
	// Let the last frames arrive: poll until the count stops moving.
	var after uint64
	deadline := time.Now().Add(5 * time.Second)
	for prev := uint64(0); time.Now().Before(deadline); prev = after {
		if after, err = podsReceived(); err != nil {
			return PPSResult{}, err
		}
		if after == prev {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return PPSResult{Dataplane: c.Dataplane, Sent: uint64(sent), Received: after - before, Took: took}, nil
}

// switchFabric makes the fabric switch in XDP while a generator runs, as a
// hardware switch costs the hosts nothing: frames go from port to port by
// destination MAC without becoming socket buffers on the bridge.
// Broadcasts and unknown MACs still go to the bridge. An XDP program on
// the client's port also makes it run NAPI, which it needs to take the
// frames the generator sends with XDP_TX. restore puts the ports back as
// the lab had them: the nodes' ports keep pass (NAPI) with the xdp data
// plane, the client's has none.
func switchFabric(c lab.Config, clientMAC net.HardwareAddr, pass *ebpf.Program) (restore func(), err error) {
	sw, macs, err := fabricSwitch(c, clientMAC)
	if err != nil {
		return nil, err
	}
	ports := []string{"fab-client"}
	for _, n := range c.NodeList() {
		ports = append(ports, n.FabricLink)
	}
	restore = func() {
		_ = lab.SetXDP(lab.FabricNS, ports[:1], nil)
		nodes := pass
		if c.Dataplane != "xdp" {
			nodes = nil
		}
		_ = lab.SetXDP(lab.FabricNS, ports[1:], nodes)
		_ = sw.Close()
		_ = macs.Close()
	}
	if err := lab.SetXDP(lab.FabricNS, ports, sw); err != nil {
		restore()
		return nil, err
	}
	return restore, nil
}

// clientLink returns lab-client's MAC, the MAC it sends to for vip (the
// announcer's: it must have spoken to vip before), and its link's index.
func clientLink(vip netip.Addr) (src, dst net.HardwareAddr, ifindex int, err error) {
	err = nsrun.In(lab.ClientNS, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		src, ifindex = l.Attrs().HardwareAddr, l.Attrs().Index
		neighs, err := netlink.NeighList(ifindex, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, n := range neighs {
			if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == vip && len(n.HardwareAddr) == 6 {
				dst = n.HardwareAddr
			}
		}
		if dst == nil {
			return fmt.Errorf("the client has no MAC for %s", vip)
		}
		return nil
	})
	return src, dst, ifindex, err
}

type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// frameLen is the size of the generator's frame.
const frameLen = 64

// benchFlows is how many flows (source ports) the generator cycles
// through; a power of two.
const benchFlows = 256

// generator returns an XDP program that writes frame over the packet (see
// copyFrame) and sends it (XDP_TX).
func generator(frame []byte) (*ebpf.Program, *ebpf.Map, error) {
	tmpl, err := frameTemplate(frame)
	if err != nil {
		return nil, nil, err
	}
	insns := copyFrame(tmpl, int16(len(frame)))
	// Source port 40000 + n mod benchFlows for the nth frame: as many
	// flows, which each data plane spreads over its endpoints as it
	// would clients. (The frame's UDP checksum is zero: none.)
	insns = append(insns,
		asm.LoadMem(asm.R5, asm.R0, templateRoom, asm.Word),
		asm.Add.Imm(asm.R5, 1),
		asm.StoreMem(asm.R0, templateRoom, asm.R5, asm.Word),
		asm.And.Imm(asm.R5, benchFlows-1),
		asm.Add.Imm(asm.R5, 40000),
		asm.HostTo(asm.BE, asm.R5, asm.Half),
		asm.StoreMem(asm.R2, 34, asm.R5, asm.Half),
		asm.Mov.Imm(asm.R0, 3), // XDP_TX
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"), // XDP_PASS
		asm.Return(),
	)
	prog, err := lab.LoadXDP("generator", insns, tmpl)
	return prog, tmpl, err
}

// templateRoom is the room for a generator's frame in its template map;
// the counter that numbers the frames sent follows it.
const templateRoom = 64

// frameTemplate makes the map a generator copies its frame from: the
// frame, padded to templateRoom bytes, then the counter.
func frameTemplate(frame []byte) (*ebpf.Map, error) {
	if len(frame) > templateRoom {
		return nil, fmt.Errorf("frame of %d bytes, more than %d", len(frame), templateRoom)
	}
	tmpl, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: templateRoom + 8, MaxEntries: 1})
	if err != nil {
		return nil, err
	}
	if err := tmpl.Put(uint32(0), append(slices.Clone(frame), make([]byte, templateRoom+8-len(frame))...)); err != nil {
		_ = tmpl.Close()
		return nil, err
	}
	return tmpl, nil
}

// copyFrame returns the start of a generator: with the context in R6, the
// template's value in R0 and the packet's start in R2, the first n bytes
// of the template written over the packet (an even n); it jumps to "pass"
// when the lookup fails or the packet is shorter. Live-frames mode
// recycles its pages without re-initialising them, and the receivers
// rewrite packets in place (NAT, encapsulation): without a fresh copy
// every time, later frames would carry what an earlier one became.
func copyFrame(tmpl *ebpf.Map, n int16) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, tmpl.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, int32(n)),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
	}
	off := int16(0)
	for ; off+8 <= n; off += 8 {
		insns = append(insns, asm.LoadMem(asm.R5, asm.R0, off, asm.DWord), asm.StoreMem(asm.R2, off, asm.R5, asm.DWord))
	}
	for ; off < n; off += 2 {
		insns = append(insns, asm.LoadMem(asm.R5, asm.R0, off, asm.Half), asm.StoreMem(asm.R2, off, asm.R5, asm.Half))
	}
	return insns
}

// fabricSwitch returns an XDP program for the bridge's ports that sends a
// frame for the client's or a node's MAC straight to that host's port
// (XDP_REDIRECT), and everything else to the bridge.
func fabricSwitch(c lab.Config, clientMAC net.HardwareAddr) (*ebpf.Program, *ebpf.Map, error) {
	macs, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 4, MaxEntries: 64})
	if err != nil {
		return nil, nil, err
	}
	add := func(mac net.HardwareAddr, port string) error {
		var idx int
		if err := nsrun.In(lab.FabricNS, func() error {
			l, err := netlink.LinkByName(port)
			if err == nil {
				idx = l.Attrs().Index
			}
			return err
		}); err != nil {
			return err
		}
		var key [8]byte
		copy(key[:], mac)
		return macs.Put(key, uint32(idx))
	}
	if err := add(clientMAC, "fab-client"); err != nil {
		_ = macs.Close()
		return nil, nil, err
	}
	for _, n := range c.NodeList() {
		var mac net.HardwareAddr
		err := nsrun.In(n.NS, func() error {
			l, err := netlink.LinkByName("eth0")
			if err == nil {
				mac = l.Attrs().HardwareAddr
			}
			return err
		})
		if err == nil {
			err = add(mac, n.FabricLink)
		}
		if err != nil {
			_ = macs.Close()
			return nil, nil, err
		}
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 14),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		// key: the 6 bytes of the destination MAC, then two zero bytes
		asm.LoadMem(asm.R7, asm.R2, 0, asm.Word),
		asm.LoadMem(asm.R8, asm.R2, 4, asm.Half),
		asm.StoreMem(asm.RFP, -8, asm.R7, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R8, asm.Half),
		asm.StoreImm(asm.RFP, -2, 0, asm.Half),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.LoadMapPtr(asm.R1, macs.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),  // target ifindex
		asm.LoadMem(asm.R2, asm.R6, 12, asm.Word), // ingress ifindex
		asm.JEq.Reg(asm.R1, asm.R2, "pass"),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"), // XDP_PASS
		asm.Return(),
	}
	prog, err := lab.LoadXDP("fabric switch", insns, macs)
	return prog, macs, err
}

// sinkProgram returns an XDP program that counts IPv4 UDP packets to port
// 7 in a per-CPU counter and drops them, and passes everything else.
func sinkProgram() (*ebpf.Program, *ebpf.Map, error) {
	counter, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		return nil, nil, err
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 14+20+8),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JNE.Imm(asm.R5, 0x0008, "pass"), // IPv4, network order
		asm.LoadMem(asm.R5, asm.R2, 14+9, asm.Byte),
		asm.JNE.Imm(asm.R5, 17, "pass"), // UDP
		asm.LoadMem(asm.R5, asm.R2, 14+20+2, asm.Half),
		asm.JNE.Imm(asm.R5, 0x0700, "pass"), // port 7, network order
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, counter.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("drop"), // XDP_DROP
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"), // XDP_PASS
		asm.Return(),
	}
	prog, err := lab.LoadXDP("sink", insns, counter)
	return prog, counter, err
}
