package bgp

import (
	"context"
	"fmt"
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

// listenerMD5 tells whether a TCP MD5 key can be set on a listening
// socket made as GoBGP makes its listeners (net.ListenConfig). It cannot
// on a Multipath TCP socket (Go's default for listeners unless GODEBUG
// multipathtcp=0, which go.mod sets) or on a kernel without TCP MD5;
// GoBGP would then only log a warning and accept dynamic peers' sessions
// unsigned, so a dynamic peer with a password is refused instead.
var listenerMD5 = sync.OnceValue(func() error {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("TCP MD5 check: %w", err)
	}
	defer func() { _ = l.Close() }()
	sc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		return fmt.Errorf("TCP MD5 check: %w", err)
	}
	sig := unix.TCPMD5Sig{Flags: unix.TCP_MD5SIG_FLAG_PREFIX, Prefixlen: 8, Keylen: 4}
	sig.Addr.Family = unix.AF_INET
	copy(sig.Addr.Data[2:], []byte{127, 0, 0, 0})
	copy(sig.Key[:], "test")
	var serr error
	if err := sc.Control(func(fd uintptr) {
		serr = unix.SetsockoptTCPMD5Sig(int(fd), unix.IPPROTO_TCP, unix.TCP_MD5SIG_EXT, &sig)
	}); err != nil {
		return fmt.Errorf("TCP MD5 check: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("a TCP MD5 key cannot be set on a listening socket here (%w): a dynamic peer's password would not be checked", serr)
	}
	return nil
})
