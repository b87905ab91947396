package bench

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

// sum folds the one's complement sum of b: 0xffff over a header whose
// checksum is right.
func sum(b []byte) uint16 { return ^checksum(b) }

// TestFloodGenerator: every frame the flood generator writes is a flow of
// its own (source address and port from the counter) with both checksums
// right.
func TestFloodGenerator(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root; CI runs as root")
	}
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	vip := netip.MustParseAddr("10.89.100.1")
	frame := synFrame(mac, mac, vip, 80)
	prog, tmpl, err := floodGenerator(frame)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = prog.Close(); _ = tmpl.Close() }()
	seen := map[string]bool{}
	// Counters around the carries: skip to the counter (as a repeated
	// flood does), run once.
	for _, n := range []uint32{0, 1, 2, 0xfffe, 0xffff, 0x10000, 0x10001, 0x2a_1234, 64510<<16 | 0xfffe} {
		if err := skipFlows(tmpl, frame, n); err != nil {
			t.Fatal(err)
		}
		opts := &ebpf.RunOptions{Data: make([]byte, len(frame)), DataOut: make([]byte, len(frame))}
		ret, err := prog.Run(opts)
		if err != nil || ret != 3 {
			t.Fatalf("counter %d: verdict %d, %v", n, ret, err)
		}
		out := opts.DataOut
		ip, tcp := out[14:34], out[34:]
		if sum(ip) != 0xffff {
			t.Errorf("counter %d: IPv4 checksum wrong", n)
		}
		ph := append(append([]byte{}, ip[12:20]...), 0, 6, 0, byte(len(tcp)))
		if sum(append(ph, tcp...)) != 0xffff {
			t.Errorf("counter %d: TCP checksum wrong", n)
		}
		a, b := (n+1)&0xffff, (n+1)>>16
		src := netip.AddrFrom4([4]byte(ip[12:16]))
		sport := binary.BigEndian.Uint16(tcp)
		if !FloodSources.Contains(src) || src.As4()[2] != byte(a>>8) || src.As4()[3] != byte(a) || sport != uint16(1024+b) {
			t.Errorf("counter %d: from %s:%d, want 198.18.%d.%d:%d", n, src, sport, a>>8, a&0xff, 1024+b)
		}
		if tcp[13] != 0x02 || binary.BigEndian.Uint16(tcp[2:]) != 80 || netip.AddrFrom4([4]byte(ip[16:20])) != vip {
			t.Errorf("counter %d: not a SYN to %s:80", n, vip)
		}
		k := netip.AddrPortFrom(src, sport).String()
		if seen[k] {
			t.Errorf("counter %d: flow %s again", n, k)
		}
		seen[k] = true
	}
}
