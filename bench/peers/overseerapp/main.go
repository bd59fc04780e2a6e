// Command overseerapp is the peers' app under overseer, as overseer's
// README shows it with graceful restarts only: the master process holds
// the socket and restarts the program on SIGUSR2; the program serves
// state.Listener with http.Serve.
package main

import (
	"net/http"

	"github.com/baton-run/baton/bench/peers/app"
	"github.com/jpillora/overseer"
)

const edit = "0" // the benchmark's one-line change rewrites this line

func main() {
	overseer.Run(overseer.Config{
		Program: prog,
		Address: app.Addr(),
	})
}

// prog runs in the child process.
func prog(state overseer.State) {
	http.Serve(state.Listener, app.New(edit))
}
