// Command tableflipapp is the peers' app under tableflip, as tableflip's
// own example (Example_httpShutdown) runs an HTTP server: SIGHUP upgrades,
// the new process listens on the inherited socket and calls Ready, and
// the old one calls http.Server.Shutdown once its Exit channel closes,
// with a 30 s deadline.
package main

import (
	"context"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/baton-run/baton/bench/peers/app"
	"github.com/cloudflare/tableflip"
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
	server := http.Server{Handler: app.New(edit)}
	go func() {
		if err := server.Serve(ln); err != http.ErrServerClosed {
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
	server.Shutdown(context.Background())
}
