// Command plainapp is the peers' app with no restart machinery, as Gin's
// quick start runs it: the app alone, and the app air rebuilds and
// restarts.
package main

import "github.com/baton-run/baton/bench/peers/app"

const edit = "0" // the benchmark's one-line change rewrites this line

func main() {
	r := app.New(edit)
	if err := r.Run(app.Addr()); err != nil {
		panic(err)
	}
}
