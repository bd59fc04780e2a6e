// Command batonapp is the peers' app as baton documents a server: the
// child package serves it on the inherited socket (or binds PEER_ADDR
// alone), says READY=1 once serving, and drains on SIGTERM.
package main

import (
	"context"
	"os"

	"github.com/baton-run/baton/bench/peers/app"
	"github.com/baton-run/baton/child"
)

const edit = "0" // the benchmark's one-line change rewrites this line

func main() {
	r := app.New(edit)
	srv, err := child.New(child.Config{Listener: "http", Addr: app.Addr()})
	if err != nil {
		os.Exit(child.ExitFailure)
	}
	os.Exit(child.ExitCode(srv.Serve(context.Background(), r)))
}
