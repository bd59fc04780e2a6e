// Package app is the small Gin server that every system of the peers
// benchmark runs: the same routes, the same start-up, whatever restarts
// it. Each system's main package wraps it the way that system documents.
package app

import (
	"os"
	"time"

	"github.com/gin-gonic/gin"
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

// New does the start-up and returns the router:
//
//	GET /     {"message":"hello"}, the load's request
//	GET /pid  {"pid":P,"edit":E}: which process answered, and which
//	          version of its source, for the trigger → serving time
//
// edit is a constant of the caller's main package: the benchmark's
// one-line change rewrites it.
func New(edit string) *gin.Engine {
	time.Sleep(StartupDelay) // the start-up's stand-in
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery())
	pid := os.Getpid()
	r.GET("/", func(c *gin.Context) { c.JSON(200, gin.H{"message": "hello"}) })
	r.GET("/pid", func(c *gin.Context) { c.JSON(200, gin.H{"pid": pid, "edit": edit}) })
	return r
}
