package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The fleet's network: one namespace for the load balancer, holding a
// bridge, and one namespace per host, each joined to the bridge by a veth
// pair. Nothing is added to the namespace the harness runs in: its
// traffic reaches HAProxy through a unix socket, and HAProxy reaches the
// hosts over the bridge, on addresses of a test subnet that exists only
// inside these namespaces.
const (
	subnet   = "10.213.0"     // /24, inside the fleet's namespaces only
	lbAddr   = subnet + ".1"  // the bridge, in the load balancer's namespace
	nsPrefix = "baton-fleet-" // + the harness's pid + "-" + lb or a host
)

// network is the namespaces of one run; close removes all of them, with
// the veths and the bridge inside.
type network struct {
	prefix string // nsPrefix + pid + "-"
	lb     string // the load balancer's namespace

	mu    sync.Mutex
	hosts []string // namespaces of the hosts that exist
}

// ip runs the ip command (iproute2) and returns its error with its output.
func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// newNetwork creates the load balancer's namespace and its bridge. It
// first removes what a run that was killed left behind: namespaces of
// this prefix whose harness is gone.
func newNetwork(ctx context.Context) (*network, error) {
	removeStale(ctx)
	n := &network{prefix: nsPrefix + strconv.Itoa(os.Getpid()) + "-"}
	n.lb = n.prefix + "lb"
	steps := [][]string{
		{"netns", "add", n.lb},
		{"-n", n.lb, "link", "set", "lo", "up"},
		{"-n", n.lb, "link", "add", "br0", "type", "bridge"},
		{"-n", n.lb, "addr", "add", lbAddr + "/24", "dev", "br0"},
		{"-n", n.lb, "link", "set", "br0", "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			n.close()
			return nil, err
		}
	}
	return n, nil
}

// hostAddr is the address of host number i (1, 2, …).
func hostAddr(i int) string { return fmt.Sprintf("%s.%d", subnet, 10+i) }

// addHost creates host name's namespace, with lo and eth0 (addr/24) up,
// joined to the bridge.
func (n *network) addHost(ctx context.Context, name, addr string) (string, error) {
	ns := n.prefix + name
	n.mu.Lock()
	n.hosts = append(n.hosts, ns)
	n.mu.Unlock()
	veth := "v-" + name
	steps := [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		{"link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", veth, "netns", n.lb},
		{"-n", ns, "addr", "add", addr + "/24", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", n.lb, "link", "set", veth, "master", "br0"},
		{"-n", n.lb, "link", "set", veth, "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return "", fmt.Errorf("host %s: %w", name, err)
		}
	}
	return ns, nil
}

// cutLink takes host name's link to the bridge down (up = false) or up
// again: its packets are dropped, as when a machine loses its network.
func (n *network) cutLink(ctx context.Context, name string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return ip(ctx, "-n", n.lb, "link", "set", "v-"+name, state)
}

// killAll sends SIGKILL to every process of namespace ns and waits until
// they are gone: a host that dies at once.
func killAll(ns string) error {
	for round := 0; round < 50; round++ {
		pids := nsPids(ns)
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond) // the processes' parents reap them
	}
	return fmt.Errorf("processes of %s survive SIGKILL: %v", ns, nsPids(ns))
}

// nsPids lists the processes of namespace ns (ip netns pids).
func nsPids(ns string) []int {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// removeHost kills what still runs in host namespace ns and deletes it;
// its veth, and the peer in the load balancer's namespace, go with it.
func (n *network) removeHost(ns string) {
	killAll(ns)
	exec.Command("ip", "netns", "del", ns).Run()
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, h := range n.hosts {
		if h == ns {
			n.hosts = append(n.hosts[:i], n.hosts[i+1:]...)
			break
		}
	}
}

// close removes every namespace of the run, hosts first. It is safe to
// call more than once.
func (n *network) close() {
	n.mu.Lock()
	hosts := append([]string(nil), n.hosts...)
	n.mu.Unlock()
	for _, ns := range hosts {
		n.removeHost(ns)
	}
	killAll(n.lb)
	exec.Command("ip", "netns", "del", n.lb).Run()
}

// removeStale deletes the namespaces of earlier runs whose harness no
// longer runs (killed before it could clean up).
func removeStale(ctx context.Context) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return
	}
	var stale []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], nsPrefix) {
			continue
		}
		rest := strings.TrimPrefix(f[0], nsPrefix)
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		stale = append(stale, f[0])
	}
	// Hosts before the load balancer's namespace.
	for _, last := range []bool{false, true} {
		for _, ns := range stale {
			if strings.HasSuffix(ns, "-lb") == last {
				killAll(ns)
				exec.Command("ip", "netns", "del", ns).Run()
			}
		}
	}
}

// canCreateNamespaces reports why network namespaces cannot be made here,
// or "" when they can.
func canCreateNamespaces() string {
	if os.Getuid() != 0 {
		return "network namespaces need root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "iproute2 (ip) is not installed"
	}
	ns := fmt.Sprintf("%s%d-probe", nsPrefix, os.Getpid())
	out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("cannot create a network namespace: %v: %s", err, bytes.TrimSpace(out))
	}
	exec.Command("ip", "netns", "del", ns).Run()
	return ""
}
