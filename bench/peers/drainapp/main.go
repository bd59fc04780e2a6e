// Command drainapp is tableflipapp with a drain that is aware of
// keep-alive connections in place of the bare http.Server.Shutdown: once
// the upgrade is done it stops accepting, answers every request with
// "Connection: close", waits until its connections are gone, and only
// then shuts down. http.Server.Shutdown alone closes idle keep-alive
// connections at once, racing the clients that are just sending on them.
package main

import (
	"context"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-run/baton/bench/peers/app"
	"github.com/cloudflare/tableflip"
	"github.com/gin-gonic/gin"
)

const edit = "0" // the benchmark's one-line change rewrites this line

func main() {
	upg, err := tableflip.New(tableflip.Options{})
	if err != nil {
		panic(err)
	}
	defer upg.Stop()

	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP)
		for range sig {
			if err := upg.Upgrade(); err != nil {
				log.Println("upgrade failed:", err)
			}
		}
	}()

	ln, err := upg.Listen("tcp", app.Addr())
	if err != nil {
		log.Fatalln("can't listen:", err)
	}
	var d drain
	r := app.New(edit)
	server := http.Server{Handler: d.wrap(r), ConnState: d.connState}
	go func() {
		if err := server.Serve(ln); err != http.ErrServerClosed && !d.draining.Load() {
			log.Println("HTTP server:", err)
		}
	}()

	if err := upg.Ready(); err != nil {
		panic(err)
	}
	<-upg.Exit()

	time.AfterFunc(30*time.Second, func() {
		log.Println("graceful shutdown timed out")
		os.Exit(1)
	})
	d.draining.Store(true)
	ln.Close() // the new process accepts from now on
	d.wait(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	server.Shutdown(ctx)
}

// drain counts the server's open connections and, once draining, closes
// each after its current response.
type drain struct {
	draining atomic.Bool
	mu       sync.Mutex
	open     map[net.Conn]struct{}
	zero     chan struct{} // closed when open reaches zero while draining
}

func (d *drain) wrap(h *gin.Engine) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

func (d *drain) connState(c net.Conn, s http.ConnState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.open == nil {
		d.open = map[net.Conn]struct{}{}
	}
	switch s {
	case http.StateNew:
		d.open[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(d.open, c)
		if len(d.open) == 0 && d.zero != nil {
			close(d.zero)
			d.zero = nil
		}
	}
}

// wait returns when no connection is open, or after timeout.
func (d *drain) wait(timeout time.Duration) {
	d.mu.Lock()
	if len(d.open) == 0 {
		d.mu.Unlock()
		return
	}
	zero := make(chan struct{})
	d.zero = zero
	d.mu.Unlock()
	select {
	case <-zero:
	case <-time.After(timeout):
	}
}
