package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

const xdpPass = 2

func load(t testing.TB) *LbObjects {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root; CI runs as root")
	}
	var objs LbObjects
	if err := LoadLbObjects(&objs, nil); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = objs.Close() })
	return &objs
}

// key builds a vips key the way the program reads packets: addresses and
// port in network byte order, as raw memory.
func key(addr netip.Addr, port uint16, proto uint8) LbVipKey {
	var k LbVipKey
	raw := addr.As16()
	if addr.Is4() {
		a4 := addr.As4()
		k.Addr[0] = binary.NativeEndian.Uint32(a4[:])
		k.Family = 4
	} else {
		for i := range 4 {
			k.Addr[i] = binary.NativeEndian.Uint32(raw[i*4:])
		}
		k.Family = 6
	}
	k.Port = binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, port))
	k.Proto = proto
	return k
}

// packet builds Ethernet + IPv4/IPv6 + TCP/UDP with a payload. Checksums
// are not filled: this stage of the program does not read them.
func packet(src, dst netip.Addr, proto uint8, sport, dport uint16, payload []byte) []byte {
	var b []byte
	b = append(b, 0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2) // dst, src MAC
	l4 := make([]byte, 0, 20+len(payload))
	l4 = binary.BigEndian.AppendUint16(l4, sport)
	l4 = binary.BigEndian.AppendUint16(l4, dport)
	if proto == 6 {
		l4 = append(l4, make([]byte, 16)...)
		l4[12] = 5 << 4 // data offset
	} else {
		l4 = binary.BigEndian.AppendUint16(l4, uint16(8+len(payload)))
		l4 = append(l4, 0, 0)
	}
	l4 = append(l4, payload...)
	if dst.Is4() {
		b = append(b, 0x08, 0x00)
		ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0}
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		s, d := src.As4(), dst.As4()
		ip = append(append(ip, s[:]...), d[:]...)
		b = append(b, ip...)
	} else {
		b = append(b, 0x86, 0xdd)
		ip := []byte{0x60, 0, 0, 0, 0, 0, proto, 64}
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		s, d := src.As16(), dst.As16()
		ip = append(append(ip, s[:]...), d[:]...)
		b = append(b, ip...)
	}
	return append(b, l4...)
}

var (
	client4 = netip.MustParseAddr("10.89.0.2")
	vip4    = netip.MustParseAddr("10.89.100.1")
	client6 = netip.MustParseAddr("fd89::2")
	vip6    = netip.MustParseAddr("fd89:100::1")
)

func TestProgram(t *testing.T) {
	objs := load(t)
	for id, k := range map[uint32]LbVipKey{
		1: key(vip4, 80, 6),
		2: key(vip4, 7, 17),
		3: key(vip6, 80, 6),
	} {
		if err := objs.Vips.Put(k, LbVipInfo{ServiceId: id}); err != nil {
			t.Fatal(err)
		}
	}
	tcp4 := packet(client4, vip4, 6, 40000, 80, []byte("GET /"))
	withOptions := bytes.Clone(tcp4)
	// IPv4 with 4 bytes of options (a NOP x4): IHL 6.
	withOptions = append(withOptions[:14+20:14+20], append([]byte{1, 1, 1, 1}, tcp4[14+20:]...)...)
	withOptions[14] = 0x46
	fragment := bytes.Clone(tcp4)
	fragment[14+6] = 0x20 // more fragments
	vlan := append(append(bytes.Clone(tcp4[:12]), 0x81, 0x00, 0, 1), tcp4[12:]...)
	tests := map[string]struct {
		pkt       []byte
		wantCount uint32 // service id whose counter must move; 0 = none
	}{
		"IPv4 TCP to a VIP":             {tcp4, 1},
		"IPv4 with options to a VIP":    {withOptions, 1},
		"IPv4 UDP to a VIP":             {packet(client4, vip4, 17, 40000, 7, []byte("x")), 2},
		"IPv6 TCP to a VIP":             {packet(client6, vip6, 6, 40000, 80, nil), 3},
		"VIP, port not served":          {packet(client4, vip4, 6, 40000, 81, nil), 0},
		"VIP, protocol not served":      {packet(client4, vip4, 17, 40000, 80, nil), 0},
		"not a VIP":                     {packet(client4, netip.MustParseAddr("10.89.0.11"), 6, 40000, 80, nil), 0},
		"fragment":                      {fragment, 0},
		"VLAN tag":                      {vlan, 0},
		"truncated TCP header":          {tcp4[:14+20+10], 0},
		"truncated IPv4 header":         {tcp4[:14+12], 0},
		"truncated Ethernet":            {tcp4[:10], 0},
		"IPv4 header length under five": {func() []byte { p := bytes.Clone(tcp4); p[14] = 0x44; return p }(), 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := counts(t, objs)
			out := make([]byte, len(tc.pkt)+64)
			ret, err := objs.IronlbXdp.Run(&ebpf.RunOptions{Data: tc.pkt, DataOut: out})
			if err != nil {
				if len(tc.pkt) < 14 {
					return // the kernel refuses frames shorter than Ethernet
				}
				t.Fatal(err)
			}
			if ret != xdpPass {
				t.Errorf("verdict %d, want XDP_PASS", ret)
			}
			if !bytes.Equal(out[:len(tc.pkt)], tc.pkt) {
				t.Error("the packet was modified")
			}
			after := counts(t, objs)
			for id := uint32(1); id <= 3; id++ {
				moved := after[id] - before[id]
				switch {
				case id == tc.wantCount && moved != 1:
					t.Errorf("service %d counted %d packets, want 1", id, moved)
				case id != tc.wantCount && moved != 0:
					t.Errorf("service %d counted %d packets, want 0", id, moved)
				}
			}
		})
	}
}

// counts sums the per-CPU packet counters of services 1-3.
func counts(t *testing.T, objs *LbObjects) map[uint32]uint64 {
	t.Helper()
	out := map[uint32]uint64{}
	for id := uint32(1); id <= 3; id++ {
		var per []LbServiceStats
		if err := objs.Stats.Lookup(id, &per); err != nil {
			t.Fatal(err)
		}
		for _, s := range per {
			out[id] += s.Packets
		}
	}
	return out
}

// BenchmarkProgram measures ns per packet with BPF_PROG_TEST_RUN and
// repeat, next to a trivial XDP_PASS program as the floor. The program
// does not modify packets yet, so repeating one input measures the right
// path.
func BenchmarkProgram(b *testing.B) {
	objs := load(b)
	if err := objs.Vips.Put(key(vip4, 80, 6), LbVipInfo{ServiceId: 1}); err != nil {
		b.Fatal(err)
	}
	trivial, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = trivial.Close() }()
	const repeat = 1_000_000
	for name, run := range map[string]struct {
		prog *ebpf.Program
		pkt  []byte
	}{
		"trivial-pass": {trivial, packet(client4, vip4, 6, 40000, 80, nil)},
		"non-VIP":      {objs.IronlbXdp, packet(client4, netip.MustParseAddr("10.89.0.11"), 6, 40000, 80, nil)},
		"VIP":          {objs.IronlbXdp, packet(client4, vip4, 6, 40000, 80, nil)},
	} {
		b.Run(name, func(b *testing.B) {
			var per float64
			for b.Loop() {
				_, d, err := run.prog.Benchmark(run.pkt, repeat, nil)
				if err != nil {
					b.Fatal(err)
				}
				per = float64(d.Nanoseconds())
			}
			b.ReportMetric(per, "ns/packet")
		})
	}
}
