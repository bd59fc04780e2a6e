package supervisor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-run/baton/supervisor/config"
)

// socket is a listening socket owned by the supervisor and passed to every
// generation that serves the listener.
//
// Its *os.File wraps a descriptor that was in blocking mode when the File
// was made, so the File is not "non-blocking" to Go and File.Fd, which
// os/exec calls on every ExtraFiles entry, never changes the O_NONBLOCK
// flag. That flag lives in the open file description shared with every
// generation: switching it to blocking mode under a running Go child
// leaves it stuck in accept(2) while it should drain.
type socket struct {
	key     string // config.Listener.Key, or "fd:" and the name systemd gave it
	address string // as configured
	bound   string // as bound: the port of ":0" resolved
	file    *os.File
	unix    string // path of a unix socket we created, removed on close
	ino     uint64 // its inode, so we never remove someone else's file
	refs    int    // leases held on it; guarded by the pool's mutex
	// systemd passed it to baton: it is never closed, so that it can
	// serve again if a reload brings its listener back.
	inherited bool
	program   string // inherited: the program that holds it now
}

// socketPool is the supervisor's table of open listening sockets, shared
// by its programs. Whoever needs sockets holds a lease on them: a program
// for its config, a generation while it runs, a reload request until it
// ends. Each lease is released exactly once, by its holder; a socket
// closes when the last lease on it is released. (caddy's UsagePool is
// the model.)
type socketPool struct {
	mu    sync.Mutex
	byKey map[string]*socket // refs counts the leases on each
	// inherited are sockets baton itself was given by systemd, by name.
	// They are never closed, so that a reload that brings their listener
	// back can serve them again.
	inherited map[string]*os.File
}

func newSocketPool() *socketPool {
	return &socketPool{byKey: map[string]*socket{}, inherited: map[string]*os.File{}}
}

// lease is one holder's claim on the sockets of a program's listeners,
// in listener order. Its methods are safe to call on a nil lease.
type lease struct {
	pool     *socketPool
	sockets  []*socket
	released atomic.Bool
}

// acquire leases the sockets of program's listeners ls, opening those not
// open yet. On error nothing is held.
func (t *socketPool) acquire(program string, ls []config.Listener) (*lease, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := &lease{pool: t}
	for _, cl := range ls {
		s, err := t.acquireLocked(program, cl)
		if err != nil {
			t.releaseLocked(l.sockets)
			return nil, fmt.Errorf("listener %q: %w", cl.Name, err)
		}
		l.sockets = append(l.sockets, s)
	}
	return l, nil
}

// acquireLocked takes a reference on the socket of one listener: the one
// systemd passed to baton under the name "program.listener" or
// "listener", else the one open for its key, else a new one. A socket
// passed under a plain listener name serves one program at a time: two
// programs with a listener of that name would share it unknowingly, so
// the second is refused.
func (t *socketPool) acquireLocked(program string, l config.Listener) (*socket, error) {
	key := l.Key(program)
	for _, name := range []string{program + "." + l.Name, l.Name} {
		f, ok := t.inherited[name]
		if !ok {
			continue
		}
		key = "fd:" + name
		s, open := t.byKey[key]
		switch {
		case !open:
			t.byKey[key] = &socket{key: key, address: l.Address, bound: boundAddr(f), file: f, inherited: true, program: program}
		case s.refs == 0:
			s.program = program
		case s.program != program:
			return nil, fmt.Errorf("systemd passed one socket named %q, and programs %q and %q both have a listener %q: name the sockets %q and %q (FileDescriptorName= in the socket unit), one for each", name, s.program, program, l.Name, s.program+"."+l.Name, program+"."+l.Name)
		}
		break
	}
	s, ok := t.byKey[key]
	if !ok {
		var err error
		if s, err = openSocket(l.Address); err != nil {
			return nil, err
		}
		s.key = key
		t.byKey[key] = s
	}
	s.refs++
	return s, nil
}

func (t *socketPool) releaseLocked(ss []*socket) {
	for _, s := range ss {
		s.refs--
		if s.refs == 0 && !s.inherited {
			delete(t.byKey, s.key)
			s.close()
		}
	}
}

// clone returns a new lease on the same sockets, for another holder.
func (l *lease) clone() *lease {
	if l == nil {
		return nil
	}
	l.pool.mu.Lock()
	defer l.pool.mu.Unlock()
	for _, s := range l.sockets {
		s.refs++
	}
	return &lease{pool: l.pool, sockets: l.sockets}
}

// release gives the sockets back; the second and later calls do nothing.
func (l *lease) release() {
	if l == nil || !l.released.CompareAndSwap(false, true) {
		return
	}
	l.pool.mu.Lock()
	defer l.pool.mu.Unlock()
	l.pool.releaseLocked(l.sockets)
}

// files returns the sockets' files, in listener order: fds 3, 4, … of a
// generation.
func (l *lease) files() []*os.File {
	files := make([]*os.File, len(l.sockets))
	for i, s := range l.sockets {
		files[i] = s.file
	}
	return files
}

// bound returns the address socket i is bound to, or "" without one.
func (l *lease) bound(i int) string {
	if l == nil || i >= len(l.sockets) {
		return ""
	}
	return l.sockets[i].bound
}

// boundAddr returns the address a socket is bound to.
func boundAddr(f *os.File) string {
	sa, err := syscall.Getsockname(int(f.Fd()))
	if err != nil {
		return f.Name()
	}
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *syscall.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *syscall.SockaddrUnix:
		return "unix:" + a.Name
	}
	return f.Name()
}

func (s *socket) close() {
	s.file.Close()
	if s.unix != "" {
		var st syscall.Stat_t
		if syscall.Stat(s.unix, &st) == nil && st.Ino == s.ino {
			os.Remove(s.unix)
		}
	}
}

var somaxconn = func() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if n, err2 := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && err2 == nil && n > 0 {
		return n
	}
	return 4096
}()

// openSocket binds and listens with system calls, leaving the descriptor
// in blocking mode (see socket).
func openSocket(address string) (*socket, error) {
	if path, ok := strings.CutPrefix(address, "unix:"); ok {
		return openUnix(address, path)
	}
	return openTCP(address)
}

func openTCP(address string) (*socket, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		if port, err = net.LookupPort("tcp", portStr); err != nil {
			return nil, err
		}
	}
	ip := net.ParseIP(host)
	var family int
	var sa syscall.Sockaddr
	v6only := 1
	switch {
	case host == "":
		// All interfaces, IPv4 and IPv6, as net.Listen does.
		family, v6only = syscall.AF_INET6, 0
		sa = &syscall.SockaddrInet6{Port: port}
	case ip.To4() != nil:
		family = syscall.AF_INET
		s4 := &syscall.SockaddrInet4{Port: port}
		copy(s4.Addr[:], ip.To4())
		sa = s4
	default:
		family = syscall.AF_INET6
		s6 := &syscall.SockaddrInet6{Port: port}
		copy(s6.Addr[:], ip.To16())
		sa = s6
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil && host == "" {
		family, sa = syscall.AF_INET, &syscall.SockaddrInet4{Port: port}
		fd, err = syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	fail := func(op string, err error) (*socket, error) {
		syscall.Close(fd)
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%s is already in use by another process; stop it or choose another address (ss -ltnp shows who listens)", address)
		}
		if errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("%s: permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE", address)
		}
		return nil, fmt.Errorf("%s %s: %w", op, address, err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return fail("setsockopt", err)
	}
	if family == syscall.AF_INET6 {
		if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, v6only); err != nil {
			return fail("setsockopt", err)
		}
	}
	if err := syscall.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if err := syscall.Listen(fd, somaxconn); err != nil {
		return fail("listen", err)
	}
	bound := address
	if got, err := syscall.Getsockname(fd); err == nil {
		switch a := got.(type) {
		case *syscall.SockaddrInet4:
			bound = net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
		case *syscall.SockaddrInet6:
			h := net.IP(a.Addr[:]).String()
			if host == "" {
				h = ""
			}
			bound = net.JoinHostPort(h, strconv.Itoa(a.Port))
		}
	}
	return &socket{address: address, bound: bound, file: os.NewFile(uintptr(fd), "listener "+bound)}, nil
}

func openUnix(address, path string) (*socket, error) {
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; remove it or choose another path", path)
		}
		// A socket file: in use if someone answers, stale otherwise.
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is already in use by another process", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove the stale socket %s: %w", path, err)
		}
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := syscall.Listen(fd, somaxconn); err != nil {
		syscall.Close(fd)
		os.Remove(path)
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	var st syscall.Stat_t
	syscall.Stat(path, &st)
	return &socket{address: address, bound: address, file: os.NewFile(uintptr(fd), "listener "+address), unix: path, ino: st.Ino}, nil
}

// keys returns the keys of the lease's sockets, in listener order: how an
// upgrade names them to the new image.
func (l *lease) keys() []string {
	if l == nil {
		return nil
	}
	keys := make([]string, len(l.sockets))
	for i, s := range l.sockets {
		keys[i] = s.key
	}
	return keys
}

// leaseKeys leases the open sockets of keys, in order: a holder the new
// image of an upgrade goes on with.
func (t *socketPool) leaseKeys(keys []string) (*lease, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := &lease{pool: t}
	for _, k := range keys {
		s, ok := t.byKey[k]
		if !ok {
			t.releaseLocked(l.sockets)
			return nil, fmt.Errorf("socket %s was not passed", k)
		}
		s.refs++
		l.sockets = append(l.sockets, s)
	}
	return l, nil
}
