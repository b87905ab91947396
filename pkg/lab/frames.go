package lab

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// XDPProgram returns an XDP program that only returns verdict.
func XDPProgram(verdict int32) (*ebpf.Program, error) {
	return LoadXDP("constant", asm.Instructions{asm.Mov.Imm(asm.R0, verdict), asm.Return()}, nil)
}

// LoadXDP loads an XDP program; on failure it closes the map the program
// would have used (when not nil).
func LoadXDP(what string, insns asm.Instructions, m *ebpf.Map) (*ebpf.Program, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "Dual BSD/GPL", Instructions: insns})
	if err != nil {
		if m != nil {
			_ = m.Close()
		}
		return nil, fmt.Errorf("load the %s XDP program: %w", what, err)
	}
	return prog, nil
}

// UDPFrame builds Ethernet + IPv4 + UDP with correct checksums.
func UDPFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	udp := binary.BigEndian.AppendUint16(nil, sport)
	udp = binary.BigEndian.AppendUint16(udp, dport)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(udp, 0, 0)
	udp = append(udp, payload...)
	ph := append(append([]byte{}, src.AsSlice()...), dst.AsSlice()...)
	ph = append(ph, 0, 17)
	ph = binary.BigEndian.AppendUint16(ph, uint16(len(udp)))
	cs := checksum(append(ph, udp...))
	if cs == 0 {
		cs = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], cs)
	ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	ip = append(append(ip, src.AsSlice()...), dst.AsSlice()...)
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	f := append(append(append([]byte{}, dstMAC...), srcMAC...), 0x08, 0x00)
	return append(append(f, ip...), udp...)
}

func checksum(b []byte) uint16 {
	var c uint32
	for i := 0; i+1 < len(b); i += 2 {
		c += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		c += uint32(b[len(b)-1]) << 8
	}
	for c>>16 != 0 {
		c = c&0xffff + c>>16
	}
	return ^uint16(c)
}
