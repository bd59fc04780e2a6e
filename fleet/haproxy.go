package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// HAProxy in front of the fleet, as a production setup would run it for
// this test's purpose: health checks every 500 ms, a server down after 2
// failed checks and up after 2 good ones, keep-alive connections to the
// servers, and no retry and no redispatch, so that every failure a server
// causes reaches the client (kube-proxy does not retry either).
const haproxyConfig = `global
    stats socket {{.Dir}}/stats.sock mode 600 level admin
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse safe
    retries 0
    timeout connect 1s
    timeout client 30s
    timeout server {{.ServerTimeout}}
    timeout check 2s

frontend fe
    bind {{.Dir}}/fe.sock mode 600
    default_backend be

backend be
    balance roundrobin
    option httpchk GET {{.CheckPath}}
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
{{- range .Servers}}
    server {{.Name}} {{.Addr}}:8080 check port {{.CheckPort}}
{{- end}}
`

// Check timings of the configuration above.
const (
	checkInter = 500 * time.Millisecond
	checkFall  = 2
)

type hapServer struct {
	Name, Addr string
	CheckPort  int
}

type haproxy struct {
	dir  string
	proc *proc
}

// startHAProxy runs HAProxy in the load balancer's namespace with servers
// at addr:8080, checked on checkPath of checkPort, and waits for its stats
// socket.
func startHAProxy(ctx context.Context, ns, dir string, servers []hapServer, checkPath string, serverTimeout time.Duration) (*haproxy, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	f, err := os.Create(cfg)
	if err != nil {
		return nil, err
	}
	err = template.Must(template.New("cfg").Parse(haproxyConfig)).Execute(f, map[string]any{
		"Dir": dir, "Servers": servers, "CheckPath": checkPath, "ServerTimeout": fmt.Sprintf("%dms", serverTimeout.Milliseconds()),
	})
	f.Close()
	if err != nil {
		return nil, err
	}
	p, err := startIn(ns, "haproxy", []string{"haproxy", "-db", "-f", cfg}, dir, os.Environ(), filepath.Join(dir, "haproxy.log"))
	if err != nil {
		return nil, err
	}
	h := &haproxy{dir: dir, proc: p}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := h.stats(); err == nil {
			return h, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			h.close()
			return nil, fmt.Errorf("haproxy did not open its stats socket; %s", p.tail(10))
		}
		time.Sleep(20 * time.Millisecond) // polling a socket file HAProxy creates
	}
}

// frontend is the address clients send to: HAProxy's unix socket.
func (h *haproxy) frontend() string { return "unix:" + filepath.Join(h.dir, "fe.sock") }

func (h *haproxy) close() { h.proc.stop(syscall.SIGTERM, 5*time.Second) }

// serverStat is one server's line of "show stat".
type serverStat struct {
	Name     string
	Status   string // UP, DOWN, "UP 1/2", "DOWN 1/2", MAINT, …
	ChkDown  int    // UP → DOWN transitions
	Econ     int    // connection errors
	Eresp    int    // response errors
	Retries  int    // wretr: retries (none with retries 0)
	Redisp   int    // wredis: redispatches (none without option redispatch)
	Hrsp5xx  int
	Sessions int // stot
}

// command sends one command to the stats socket and returns the answer.
func (h *haproxy) command(cmd string) (string, error) {
	c, err := net.DialTimeout("unix", filepath.Join(h.dir, "stats.sock"), time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(bufio.NewReader(c))
	return string(b), err
}

// stats returns the backend's servers, by name.
func (h *haproxy) stats() (map[string]serverStat, error) {
	out, err := h.command("show stat")
	if err != nil {
		return nil, err
	}
	out = strings.TrimPrefix(out, "# ")
	r := csv.NewReader(strings.NewReader(out))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil || len(recs) < 2 {
		return nil, fmt.Errorf("show stat: %v: %q", err, out)
	}
	col := map[string]int{}
	for i, name := range recs[0] {
		col[name] = i
	}
	num := func(rec []string, name string) int {
		i, ok := col[name]
		if !ok || i >= len(rec) {
			return 0
		}
		n, _ := strconv.Atoi(rec[i])
		return n
	}
	servers := map[string]serverStat{}
	for _, rec := range recs[1:] {
		if len(rec) <= col["status"] || rec[col["pxname"]] != "be" {
			continue
		}
		name := rec[col["svname"]]
		if name == "BACKEND" {
			continue
		}
		servers[name] = serverStat{
			Name: name, Status: rec[col["status"]], ChkDown: num(rec, "chkdown"),
			Econ: num(rec, "econ"), Eresp: num(rec, "eresp"), Retries: num(rec, "wretr"),
			Redisp: num(rec, "wredis"), Hrsp5xx: num(rec, "hrsp_5xx"), Sessions: num(rec, "stot"),
		}
	}
	return servers, nil
}

// waitStatus polls the stats until server name's status is want (UP or
// DOWN; transitional states such as "UP 1/2" do not count) and returns
// when it saw it.
func (h *haproxy) waitStatus(ctx context.Context, name, want string, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := h.stats()
		if err == nil && st[name].Status == want {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("haproxy: server %s not %s after %v (now %q)", name, want, timeout, st[name].Status)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(10 * time.Millisecond): // polling HAProxy's state: it has no events
		}
	}
}
