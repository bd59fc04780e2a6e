// Package app is the small Gin server that every system of the peers
// benchmark runs: the same routes, the same start-up, whatever restarts
// it. Each system's main package wraps it the way that system documents.
package app

import (
	"os"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/sys/unix"
)

// StartupDelay is the work a real server does before it can serve
// (opening a database, loading templates), the same for every system, so
// that a restart costs the same start-up everywhere.
const StartupDelay = 50 * time.Millisecond

// Addr is the address a server that binds its own socket listens on:
// PEER_ADDR, or 127.0.0.1:8080.
func Addr() string {
	if a := os.Getenv("PEER_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:8080"
}

// Mono reads CLOCK_MONOTONIC in nanoseconds: the clock of Go's own
// time.Now readings, which the benchmark reads too, so that the app's
// times and the benchmark's compare.
func Mono() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// initAt is when this package was initialised: the Go runtime has
// started and the packages it imports are initialised.
var initAt = Mono()

// New does the start-up and returns the router:
//
//	GET /     {"message":"hello"}, the load's request
//	GET /pid  {"pid":P,"edit":E,"init":I,"startup":[B,F],"at":A}: which
//	          process answered, which version of its source, when (Mono)
//	          it was initialised and began and finished its start-up,
//	          and when it answered, for the trigger → serving time and
//	          its parts
//
// edit is a constant of the caller's main package: the benchmark's
// one-line change rewrites it.
func New(edit string) *gin.Engine {
	begin := Mono()
	time.Sleep(StartupDelay) // the start-up's stand-in
	startup := []int64{begin, Mono()}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery())
	pid := os.Getpid()
	r.GET("/", func(c *gin.Context) { c.JSON(200, gin.H{"message": "hello"}) })
	r.GET("/pid", func(c *gin.Context) {
		c.JSON(200, gin.H{"pid": pid, "edit": edit, "init": initAt, "startup": startup, "at": Mono()})
	})
	return r
}
