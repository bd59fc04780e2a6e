package supervisor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// probeInterval is the pause between two HTTP readiness probes.
var probeInterval = 100 * time.Millisecond

// probe checks an HTTP readiness path until it answers 2xx from g itself,
// then calls ready. It ends when g exits.
//
// During a handover the old generation accepts on the same socket, so an
// answer proves nothing unless it came from g. For a TCP listener the
// probe finds the server side of its connection in /proc/net/tcp and only
// counts a connection that g's process accepted. A unix-socket listener
// offers no such attribution; there any 2xx counts (config check warns).
func probe(g *generation, ready func()) {
	var s *socket
	for i, l := range g.cfg.Listeners {
		if l.Name == g.cfg.Ready.Listener {
			s = g.lease.sockets[i]
		}
	}
	if s == nil {
		return
	}
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-g.done:
			return
		case <-t.C:
		}
		if err := probeOnce(s, g.cfg.Ready.Path, g.pid); err == nil {
			ready()
			return
		} else {
			g.log.Trace("readiness probe", "result", err)
		}
	}
}

var errNotOurs = fmt.Errorf("answered by another process")

// bakeProbe probes path on g's listener every interval while g bakes, and
// reports each answer of g's own: up to a few connections a round, since
// the old generation accepts on the same socket; a round that reaches
// only the old one reports nothing.
func bakeProbe(g *generation, path, listener string, every time.Duration, report func(error)) (cancel func()) {
	var s *socket
	for i, l := range g.cfg.Listeners {
		if l.Name == listener {
			s = g.lease.sockets[i]
		}
	}
	stop := make(chan struct{})
	if s == nil {
		return func() {}
	}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-g.done:
				return
			case <-t.C:
			}
			for range 8 {
				if err := probeOnce(s, path, g.pid); !errors.Is(err, errNotOurs) {
					report(err)
					break
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(stop) }) }
}

func probeOnce(s *socket, path string, pid int) error {
	network, addr := "tcp", dialable(s.bound)
	if p, ok := strings.CutPrefix(s.bound, "unix:"); ok {
		network, addr = "unix", p
	}
	conn, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if network == "tcp" {
		local := conn.LocalAddr().(*net.TCPAddr)
		server := conn.RemoteAddr().(*net.TCPAddr)
		if !acceptedBy(pid, server.Port, local.Port, 500*time.Millisecond) {
			return errNotOurs
		}
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: baton-ready\r\nConnection: close\r\n\r\n", path, addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return nil
}

// dialable turns a bound wildcard address into a loopback one.
func dialable(bound string) string {
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// acceptedBy waits up to wait for the server side of the connection from
// clientPort to serverPort to be accepted, and reports whether process
// pid accepted it. A connection still in the accept queue has no inode.
func acceptedBy(pid, serverPort, clientPort int, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		if ino := serverInode(serverPort, clientPort); ino != "" && ino != "0" {
			return hasSocket(pid, ino)
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond) // polling the kernel's tables, not synchronising
	}
}

// serverInode finds, in /proc/net/tcp and tcp6, the inode of the socket
// whose local port is serverPort and remote port clientPort.
func serverInode(serverPort, clientPort int) string {
	want := fmt.Sprintf(":%04X", serverPort)
	peer := fmt.Sprintf(":%04X", clientPort)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range bytes.Split(b, []byte{'\n'})[1:] {
			fields := strings.Fields(string(line))
			if len(fields) < 10 {
				continue
			}
			if strings.HasSuffix(fields[1], want) && strings.HasSuffix(fields[2], peer) {
				return fields[9]
			}
		}
	}
	return ""
}

// hasSocket reports whether process pid holds the socket with inode ino.
func hasSocket(pid int, ino string) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	want := "socket:[" + ino + "]"
	for _, e := range entries {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == want {
			return true
		}
	}
	return false
}
