// Command orders is a Gin server that acknowledges orders at once and
// writes them to SQLite from a background batch writer, and never loses an
// acknowledged order when it is stopped: the child package drains HTTP
// first, then the writer.
//
// It runs under baton (socket "http"), under systemd socket activation,
// or alone. "orders migrate" creates the database and its schema and
// exits: a one-shot step to run before the server. Its environment:
//
//	ORDERS_ADDR      address when no socket is inherited (default 127.0.0.1:8080)
//	ORDERS_DB        SQLite database file (default orders.db)
//	ORDERS_JOURNAL   directory of the journal that makes each 202 durable
//	                 before it is sent (default: beside the database,
//	                 orders.journal for orders.db); "off" for none
//	ORDERS_TLS_CERT  with ORDERS_TLS_KEY, PEM files: serve HTTPS, HTTP/2 included
//	ORDERS_FAULT     a bad version on purpose, to try baton's bake and for the
//	                 benchmark: "errors=10%" answers that share of POST /orders
//	                 500, "latency=50ms" slows each down, "crash=2s" exits 2
//	                 that long after serving began; items combine with commas
//
// With the journal, an order answered 202 is written even when the
// process is killed or its drain is cut off: the next start replays it.
// The inserts ignore an id they already have, so a replay that writes an
// order twice still leaves one row.
//
// Endpoints:
//
//	POST /orders         {"id": "…", "item": "…", "qty": N} → 202 {"id": "…"}
//	GET  /orders/count   {"count": N}, the orders written
//	GET  /orders/events  Server-Sent Events: each order written, {"seq","id","count"}
//	                     with id: seq; resumes after Last-Event-ID (or ?last_id=)
//	GET  /orders/ws      the same as WebSocket text messages; resumes after ?last_id=
//	GET  /healthz        {"status":"ok","pid":P,"generation":G}; 503 while draining
//
// Both streams begin with a hello message naming the pid and generation
// that serve them. When the server drains, the SSE stream ends with an
// "event: goodbye" carrying "retry:" and the last id, and the WebSocket
// closes with 1001 Going Away; clients reconnect with the last id they
// saw and miss nothing: the history is the database's.
package main

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/baton-run/baton/child"
	"github.com/gin-gonic/gin"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "migrate" {
		os.Exit(migrate())
	}
	os.Exit(run(options{}))
}

// migrate creates the database and its schema, and exits: a one-shot
// step that baton runs before the server (examples/deploy/config.hcl).
func migrate() int {
	log := child.NewLogger("orders")
	st, err := openStore(dbPath())
	if err != nil {
		log.Error("migration failed", "error", err)
		return child.ExitFailure
	}
	st.close()
	log.Info("the orders schema is ready", "db", dbPath())
	return 0
}

// dbPath is ORDERS_DB, or orders.db.
func dbPath() string {
	if p := os.Getenv("ORDERS_DB"); p != "" {
		return p
	}
	return "orders.db"
}

// options are the seams the tests use; the zero value is production.
type options struct {
	flushDelay time.Duration // added before each batch write: a slow database
	child      child.Config  // timeouts
}

func run(opt options) int {
	log := child.NewLogger("orders")
	flt, err := parseFault(os.Getenv("ORDERS_FAULT"))
	if err != nil {
		log.Error("bad ORDERS_FAULT", "error", err)
		return child.ExitFailure
	}
	dbPath := dbPath()
	st, err := openStore(dbPath)
	if err != nil {
		log.Error("cannot open the database", "error", err)
		return child.ExitFailure
	}
	defer st.close()

	cfg := opt.child
	cfg.Listener = "http"
	cfg.Addr = os.Getenv("ORDERS_ADDR")
	cfg.Logger = log
	if certFile, keyFile := os.Getenv("ORDERS_TLS_CERT"), os.Getenv("ORDERS_TLS_KEY"); certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			log.Error("cannot load the TLS certificate", "error", err)
			return child.ExitFailure
		}
		cfg.HTTP = &http.Server{ReadHeaderTimeout: 30 * time.Second, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	}
	srv, err := child.New(cfg)
	if err != nil {
		log.Error("cannot listen", "error", err)
		return child.ExitFailure
	}

	events, err := newFeed(context.Background(), st)
	if err != nil {
		log.Error("cannot read the database", "error", err)
		return child.ExitFailure
	}
	if err := srv.Go("order-feed", events.run); err != nil {
		log.Error("cannot start the feed", "error", err)
		return child.ExitFailure
	}
	flush := func(ctx context.Context, batch []order) error {
		if opt.flushDelay > 0 {
			select {
			case <-time.After(opt.flushDelay):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := st.insert(ctx, batch); err != nil {
			return err
		}
		events.wake()
		return nil
	}
	journal := journalDir(dbPath, os.Getenv("ORDERS_JOURNAL"))
	writer, err := child.OpenBatchWriter(child.BatchConfig[order]{
		Flush: flush,
		OnError: func(err error, n int) {
			log.Warn("writing orders failed, retrying", "orders", n, "error", err)
		},
		Journal: journal,
		Logger:  log,
	})
	if err != nil {
		log.Error("cannot open the journal", "journal", journal, "error", err)
		return child.ExitFailure
	}
	if journal != "" {
		log.Info("orders are durable before their 202", "journal", journal)
	}
	if err := srv.StartTask(writer.Task("order-writer")); err != nil {
		log.Error("cannot start the writer", "error", err)
		return child.ExitFailure
	}

	if flt != nil {
		log.Warn("a bad version on purpose: ORDERS_FAULT", "fault", flt.String())
		if flt.crash > 0 {
			// Serve says READY at once: the crash comes that long after.
			time.AfterFunc(flt.crash, func() {
				log.Error("crashing as ORDERS_FAULT asks", "after", flt.crash, "status", faultCrashStatus)
				os.Exit(faultCrashStatus)
			})
		}
	}
	err = srv.Serve(context.Background(), newRouter(srv, st, writer, events, flt))
	if err != nil {
		log.Error("stopped with an error", "error", err)
	}
	return child.ExitCode(err)
}

// journalDir returns the journal directory: env when set, none for
// "off", otherwise beside the database, named after it.
func journalDir(dbPath, env string) string {
	switch env {
	case "off":
		return ""
	case "":
		return strings.TrimSuffix(dbPath, filepath.Ext(dbPath)) + ".journal"
	}
	return env
}

func newRouter(srv *child.Server, st *store, w *child.BatchWriter[order], events *feed, flt *fault) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery())
	if h := flt.handler(); h != nil {
		r.POST("/orders", h, postOrder(w))
	} else {
		r.POST("/orders", postOrder(w))
	}
	r.GET("/orders/count", func(c *gin.Context) {
		n, err := st.count(c.Request.Context())
		if err != nil {
			c.JSON(500, gin.H{"error": err.Error()})
			return
		}
		c.JSON(200, gin.H{"count": n})
	})
	r.GET("/orders/events", orderEvents(events))
	r.GET("/orders/ws", orderSocket(events))
	r.GET("/healthz", gin.WrapH(srv.Health()))
	return r
}
