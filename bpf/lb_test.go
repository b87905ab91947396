package bpf

import (
	"net/netip"
	"os"
	"testing"
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
	withProgs(t, &objs)
	return &objs
}

// withProgs fills the progs array as the loader does: the cookie program
// and the main one, which it hands packets back to.
func withProgs(t testing.TB, objs *LbObjects) {
	t.Helper()
	must(t, objs.Progs.Put(uint32(ProgCookie), objs.IronlbCookie))
	must(t, objs.Progs.Put(uint32(ProgMain), objs.IronlbXdp))
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
