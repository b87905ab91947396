package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ironlb/ironlb/internal/nsrun"
)

// DialIn opens a connection from inside a lab namespace.
func DialIn(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := nsrun.In(ns, func() error {
		var err error
		d := net.Dialer{Timeout: 2 * time.Second}
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// RunAgent serves, until ctx ends, what the lab needs from one long-lived
// process: in every node namespace a listener on 127.0.0.1:APIPort that
// forwards to the API server on the root namespace's loopback, and in
// every pod namespace the backends (HTTP on TCP 80, line echo on TCP 7 and
// UDP 7), each answering with its pod name.
func (c Config) RunAgent(ctx context.Context) error {
	var wg sync.WaitGroup
	var closers []io.Closer
	defer func() {
		for _, cl := range closers {
			_ = cl.Close()
		}
		wg.Wait()
	}()
	api := net.JoinHostPort("127.0.0.1", strconv.Itoa(c.APIPort))
	if c.Kubelet {
		// The kubelet lab's API server lives in lab-control; the root
		// namespace's 127.0.0.1:APIPort leads there.
		l, err := net.Listen("tcp", api)
		if err != nil {
			return fmt.Errorf("API forwarder: %w", err)
		}
		closers = append(closers, l)
		to := net.JoinHostPort(ControlIPv4, strconv.Itoa(ControlAPIPort))
		wg.Go(func() {
			forward(l, func() (net.Conn, error) { return DialIn(ctx, ControlNS, "tcp", to) })
		})
		<-ctx.Done()
		return nil
	}
	for _, n := range c.NodeList() {
		var l net.Listener
		if err := nsrun.In(n.NS, func() error {
			var err error
			l, err = net.Listen("tcp", api)
			return err
		}); err != nil {
			return fmt.Errorf("API forwarder in %s: %w", n.NS, err)
		}
		closers = append(closers, l)
		wg.Go(func() { forward(l, func() (net.Conn, error) { return net.DialTimeout("tcp", api, 5*time.Second) }) })
	}
	for _, p := range c.Pods() {
		var httpL, echoL net.Listener
		var udp net.PacketConn
		if err := nsrun.In(p.NS, func() error {
			var err error
			if httpL, err = net.Listen("tcp", ":80"); err != nil {
				return err
			}
			if echoL, err = net.Listen("tcp", ":7"); err != nil {
				return err
			}
			udp, err = net.ListenPacket("udp", ":7")
			return err
		}); err != nil {
			return fmt.Errorf("backend %s: %w", p.Name, err)
		}
		closers = append(closers, serveBackend(&wg, p.Name, httpL, echoL, udp)...)
	}
	<-ctx.Done()
	return nil
}

// serveBackend answers on a pod's listeners: HTTP with the pod name and
// the client's address, echo lines and datagrams prefixed with the pod
// name. It returns what to close to stop.
func serveBackend(wg *sync.WaitGroup, name string, httpL, echoL net.Listener, udp net.PacketConn) []io.Closer {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			_, _ = fmt.Fprintf(w, "%s %s\n", name, host)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	wg.Go(func() { _ = srv.Serve(httpL) })
	wg.Go(func() { echoTCP(echoL, name) })
	wg.Go(func() { echoUDP(udp, name) })
	return []io.Closer{httpL, echoL, udp, srv}
}

// ServeBackend is a kubelet lab pod (`ironlb-lab backend`): the same
// backends as the process lab's, in the pod's own network namespace,
// until ctx ends.
func ServeBackend(ctx context.Context, name string) error {
	httpL, err := net.Listen("tcp", ":80")
	if err != nil {
		return err
	}
	echoL, err := net.Listen("tcp", ":7")
	if err != nil {
		return err
	}
	udp, err := net.ListenPacket("udp", ":7")
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	closers := serveBackend(&wg, name, httpL, echoL, udp)
	<-ctx.Done()
	for _, cl := range closers {
		_ = cl.Close()
	}
	wg.Wait()
	return nil
}

// forward copies connections from l to what dial opens.
func forward(l net.Listener, dial func() (net.Conn, error)) {
	for {
		in, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer func() { _ = in.Close() }()
			out, err := dial()
			if err != nil {
				return
			}
			defer func() { _ = out.Close() }()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
			go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
			<-done
		}()
	}
}

// echoTCP answers each line with the pod name and the line, keeping the
// connection open: a long-lived connection shows which backend holds it.
func echoTCP(l net.Listener, pod string) {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer func() { _ = conn.Close() }()
			r := bufio.NewReader(io.LimitReader(conn, 1<<30))
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if _, err := fmt.Fprintf(conn, "%s %s\n", pod, strings.TrimRight(line, "\r\n")); err != nil {
					return
				}
			}
		}()
	}
}

// echoUDP answers each datagram with the pod name and the datagram.
func echoUDP(pc net.PacketConn, pod string) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		reply := append([]byte(pod+" "), buf[:n]...)
		_, _ = pc.WriteTo(reply, from)
	}
}
