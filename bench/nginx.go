package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/harness"
)

// errNoNginx: nginx is not installed (Debian: apt-get install nginx).
var errNoNginx = errors.New("nginx not found in PATH or /usr/sbin; install it (Debian: apt-get install nginx)")

// findNginx returns the nginx binary: in PATH, or Debian's /usr/sbin,
// which a user's PATH may lack.
func findNginx() (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	if st, err := os.Stat("/usr/sbin/nginx"); err == nil && st.Mode()&0o111 != 0 {
		return "/usr/sbin/nginx", nil
	}
	return "", errNoNginx
}

// nginxConfig is a reverse proxy in front of upstream as such proxies are
// set up in production: a pool of idle keep-alive connections to the
// backend (keepalive 32) and HTTP/1.1 with the Connection header cleared,
// so that the backend's connections are reused. Everything it writes goes
// to dir; it runs in the foreground as a process of the harness, never as
// a system service.
func nginxConfig(dir, listen, upstream string) string {
	user := ""
	if os.Getuid() == 0 {
		// Workers would otherwise run as nobody, who cannot write dir.
		user = "user root;\n"
	}
	return fmt.Sprintf(`%sdaemon off;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  upstream app {
    server %[3]s;
    keepalive 32;
  }
  server {
    listen %[4]s;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`, user, dir, upstream, listen)
}

// nginxProxy is a running nginx in front of a target.
type nginxProxy struct {
	p       *proc
	address string
}

// startNginx runs nginx on a free loopback port in front of upstream and
// waits until it accepts connections.
func startNginx(ctx context.Context, dir, upstream string) (*nginxProxy, error) {
	bin, err := findNginx()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConfig(dir, listen, upstream)), 0o644); err != nil {
		return nil, err
	}
	// -e: the error log before the config is read, which would
	// otherwise be Debian's /var/log/nginx/error.log.
	p, err := startProc(bin, []string{"-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log")}, dir, harness.ChildEnv(), filepath.Join(dir, "nginx.out"))
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(startTimeout)
	for {
		if c, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
			c.Close()
			return &nginxProxy{p: p, address: listen}, nil
		}
		if p.exited() || time.Now().After(deadline) {
			p.kill()
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return nil, fmt.Errorf("nginx did not start (status %d): %s\n%s", p.code, b, p.tail(10))
		}
		select {
		case <-ctx.Done():
			p.kill()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond): // polling a server, not synchronising
		}
	}
}

// stop ends nginx gracefully (SIGQUIT), or kills it. It may be called
// again.
func (n *nginxProxy) stop() {
	if n.p.exited() {
		return
	}
	if _, err := n.p.stop(syscall.SIGQUIT, killTimeout); err != nil {
		n.p.kill()
	}
}
