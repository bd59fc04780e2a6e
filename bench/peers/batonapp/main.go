// Command batonapp is the peers' app as baton documents a server: the
// child package takes the inherited socket (or binds PEER_ADDR alone)
// before the app's start-up, as the README and examples/orders do, serves
// the app on it, says READY=1 once serving, and drains on SIGTERM.
package main

import (
	"context"
	"os"

	"github.com/baton-run/baton/bench/peers/app"
	"github.com/baton-run/baton/child"
)

const edit = "0" // the benchmark's one-line change rewrites this line

func main() {
	srv, err := child.New(child.Config{Listener: "http", Addr: app.Addr()})
	if err != nil {
		os.Exit(child.ExitFailure)
	}
	r := app.New(edit)
	os.Exit(child.ExitCode(srv.Serve(context.Background(), r)))
}
