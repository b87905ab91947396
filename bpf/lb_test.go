package bpf

import (
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

func key(addr netip.Addr, port uint16, proto uint8) LbVipKey {
	return VipKeyFor(addr, port, proto)
}

var (
	client4 = netip.MustParseAddr("10.89.0.2")
	vip4    = netip.MustParseAddr("10.89.100.1")
	client6 = netip.MustParseAddr("fd89::2")
	vip6    = netip.MustParseAddr("fd89:100::1")
)

// BenchmarkProgram measures ns per packet with BPF_PROG_TEST_RUN and
// repeat, next to a trivial XDP_PASS program as the floor. Repeat reuses
// the packet the program wrote, so only paths that leave it unchanged are
// measured here: a packet to a VIP is rewritten (DNAT or IPIP).
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
		"trivial-pass": {trivial, pkt{src: client4, dst: vip4, proto: 6, sport: 40000, dport: 80}.frame()},
		"non-VIP":      {objs.IronlbXdp, pkt{src: client4, dst: netip.MustParseAddr("10.89.0.11"), proto: 6, sport: 40000, dport: 80}.frame()},
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
