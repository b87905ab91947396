package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/internal/nsrun"
	"github.com/ironlb/ironlb/pkg/lab"
)

// FloodResult is what a SYN flood sent.
type FloodResult struct {
	Sent uint64
	Took time.Duration
}

// Rate is the frames a second the generator sent.
func (r FloodResult) Rate() float64 { return float64(r.Sent) / r.Took.Seconds() }

func (r FloodResult) String() string {
	return fmt.Sprintf("%d never-seen SYNs in %s: %.2f Mpps", r.Sent, r.Took.Round(time.Millisecond), r.Rate()/1e6)
}

// MaxFloodFrames bounds one flood: every frame is a flow never seen
// before (65 536 source addresses times 64 511 source ports).
const MaxFloodFrames = 65536 * 64511

// FloodSources is where the flood's clients are: the benchmarking range
// (RFC 2544), which nothing in the lab routes; the endpoints' SYN-ACKs to
// it go nowhere.
var FloodSources = netip.MustParsePrefix("198.18.0.0/16")

// SYNFlood sends frames TCP SYNs to vip:port from lab-client, each from a
// client and port never seen before (198.18.0.0/16, ports from 1024; the
// flows after the first skipped: another flood's first is the frames an
// earlier one sent, so it repeats none of them), at
// the fastest rate the kernel's XDP live-frames generator reaches, for at
// most limit. The client must have spoken to vip (it needs the
// announcer's MAC). Every checksum is right: the endpoints' stacks take
// the SYNs as real ones and answer.
func SYNFlood(ctx context.Context, c lab.Config, vip netip.Addr, port uint16, first, frames uint32, limit time.Duration) (FloodResult, error) {
	if frames == 0 || uint64(first)+uint64(frames) > MaxFloodFrames || limit <= 0 || limit > time.Minute {
		return FloodResult{}, fmt.Errorf("flood of %d frames after %d in %s: want 1 to %d frames in all, within a minute", frames, first, limit, MaxFloodFrames)
	}
	src, dst, ifindex, err := clientLink(vip)
	if err != nil {
		return FloodResult{}, err
	}
	frame := synFrame(src, dst, vip, port)
	pass, err := lab.XDPProgram(2) // XDP_PASS
	if err != nil {
		return FloodResult{}, err
	}
	defer func() { _ = pass.Close() }()
	tx, tmpl, err := floodGenerator(frame)
	if err != nil {
		return FloodResult{}, err
	}
	defer func() { _ = tx.Close(); _ = tmpl.Close() }()
	if err := skipFlows(tmpl, frame, first); err != nil {
		return FloodResult{}, err
	}
	// The bridge would cap the flood far below what the generator sends.
	restore, err := switchFabric(c, src, pass)
	if err != nil {
		return FloodResult{}, err
	}
	defer restore()
	var res FloodResult
	err = nsrun.In(lab.ClientNS, func() error {
		l, err := link.AttachXDP(link.XDPOptions{Program: pass, Interface: ifindex})
		if err != nil {
			return fmt.Errorf("attach to the client's link: %w", err)
		}
		defer func() { _ = l.Close() }()
		opts := &ebpf.RunOptions{
			Data:      frame,
			BatchSize: 128,
			Flags:     unix.BPF_F_TEST_XDP_LIVE_FRAMES,
			Context:   xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifindex)},
		}
		start := time.Now()
		end := start.Add(limit)
		var sent uint32
		for sent < frames && time.Now().Before(end) && ctx.Err() == nil {
			opts.Repeat = min(burst, frames-sent)
			if _, err := tx.Run(opts); err != nil {
				return err
			}
			sent += opts.Repeat
		}
		res = FloodResult{Sent: uint64(sent), Took: time.Since(start)}
		return nil
	})
	return res, err
}

// skipFlows starts the generator's counter at first.
func skipFlows(tmpl *ebpf.Map, frame []byte, first uint32) error {
	v := append(slices.Clone(frame), make([]byte, templateRoom+8-len(frame))...)
	binary.NativeEndian.PutUint32(v[templateRoom:], first)
	return tmpl.Put(uint32(0), v)
}

// synFrame is the flood's frame for counter 0: Ethernet, IPv4 (ID 0xffff)
// and TCP with an MSS option (source port 1024, sequence number
// 0xffff_fbff) from 198.18.0.0.
func synFrame(src, dst net.HardwareAddr, vip netip.Addr, port uint16) []byte {
	client := FloodSources.Addr()
	tcp := binary.BigEndian.AppendUint16(nil, 1024)
	tcp = binary.BigEndian.AppendUint16(tcp, port)
	tcp = binary.BigEndian.AppendUint32(tcp, 0xffff<<16|(0xffff-1024))
	tcp = binary.BigEndian.AppendUint32(tcp, 0)
	tcp = append(tcp, 6<<4, 0x02) // 24 bytes, SYN
	tcp = binary.BigEndian.AppendUint16(tcp, 64240)
	tcp = append(tcp, 0, 0, 0, 0)       // checksum, urgent
	tcp = append(tcp, 2, 4, 0x05, 0xb4) // MSS 1460
	ph := append(append([]byte{}, client.AsSlice()...), vip.AsSlice()...)
	ph = append(ph, 0, 6)
	ph = binary.BigEndian.AppendUint16(ph, uint16(len(tcp)))
	binary.BigEndian.PutUint16(tcp[16:], checksum(append(ph, tcp...)))
	ip := []byte{0x45, 0, 0, 0, 0xff, 0xff, 0x40, 0, 64, 6, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
	ip = append(append(ip, client.AsSlice()...), vip.AsSlice()...)
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	f := append(append(append([]byte{}, dst...), src...), 0x08, 0x00)
	return append(append(f, ip...), tcp...)
}

func checksum(b []byte) uint16 {
	var c uint32
	for i := 0; i+1 < len(b); i += 2 {
		c += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for c>>16 != 0 {
		c = c&0xffff + c>>16
	}
	return ^uint16(c)
}

// synFrameLen is the size of synFrame's frames.
const synFrameLen = 14 + 20 + 24

// floodGenerator returns an XDP program that writes frame over the packet,
// makes the nth frame a flow never seen before and sends it (XDP_TX).
// With a = n mod 65536 and b = n / 65536, the source is 198.18.a and its
// port 1024+b; the IP ID (0xffff-a) and the TCP sequence number's halves
// (0xffff-a, 0xfbff-b) move the other way, so both checksums stay right
// without being computed: one's complement sums do not change when one
// 16-bit field grows by what another shrinks.
func floodGenerator(frame []byte) (*ebpf.Program, *ebpf.Map, error) {
	if len(frame) != synFrameLen {
		return nil, nil, fmt.Errorf("frame of %d bytes, want %d", len(frame), synFrameLen)
	}
	tmpl, err := frameTemplate(frame)
	if err != nil {
		return nil, nil, err
	}
	insns := copyFrame(tmpl, synFrameLen)
	// store16 writes R5 (host order) as a big-endian half at off.
	store16 := func(off int16) asm.Instructions {
		return asm.Instructions{asm.HostTo(asm.BE, asm.R5, asm.Half), asm.StoreMem(asm.R2, off, asm.R5, asm.Half)}
	}
	insns = append(insns,
		asm.LoadMem(asm.R7, asm.R0, templateRoom, asm.Word),
		asm.Add.Imm(asm.R7, 1),
		asm.StoreMem(asm.R0, templateRoom, asm.R7, asm.Word),
		asm.Mov.Reg(asm.R8, asm.R7),
		asm.RSh.Imm(asm.R8, 16),     // b
		asm.And.Imm(asm.R7, 0xffff), // a
	)
	// Source address, low half: a.
	insns = append(insns, asm.Mov.Reg(asm.R5, asm.R7))
	insns = append(insns, store16(14+12+2)...)
	// IP ID: 0xffff - a.
	insns = append(insns, asm.Mov.Imm(asm.R5, 0xffff), asm.Sub.Reg(asm.R5, asm.R7))
	insns = append(insns, store16(14+4)...)
	// Sequence number, high half: 0xffff - a.
	insns = append(insns, asm.Mov.Imm(asm.R5, 0xffff), asm.Sub.Reg(asm.R5, asm.R7))
	insns = append(insns, store16(14+20+4)...)
	// Source port: 1024 + b.
	insns = append(insns, asm.Mov.Reg(asm.R5, asm.R8), asm.Add.Imm(asm.R5, 1024))
	insns = append(insns, store16(14+20)...)
	// Sequence number, low half: 0xffff - 1024 - b.
	insns = append(insns, asm.Mov.Imm(asm.R5, 0xffff-1024), asm.Sub.Reg(asm.R5, asm.R8))
	insns = append(insns, store16(14+20+6)...)
	insns = append(insns,
		asm.Mov.Imm(asm.R0, 3), // XDP_TX
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"), // XDP_PASS
		asm.Return(),
	)
	prog, err := lab.LoadXDP("flood generator", insns, tmpl)
	return prog, tmpl, err
}
