// Package child is what a Go web server imports so that stopping it, for a
// restart, a deploy or a scale-down, never loses an acknowledged write.
//
// http.Server.Shutdown waits for handlers, but not for the goroutines they
// started: a handler that answers "202 Accepted" and leaves the database
// write to a background goroutine loses that write when the process exits
// after Shutdown. A Server tracks such background work as Tasks, and drains
// it only after HTTP has drained, when no handler can add more.
//
// The same binary runs under baton, under systemd socket activation, and
// alone (Kubernetes, Nomad, a terminal):
//
//   - Sockets: with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES set as
//     sd_listen_fds(3) specifies, Listen and Serve take the inherited
//     socket by name; otherwise they bind the configured address. The
//     variables are unset once read, so programs this process starts do
//     not take them too. baton starts a binary that links this package
//     without an exec shim: it sets BATON_LISTEN_PPID to its own pid
//     instead of LISTEN_PID, and this package, when it is initialised,
//     sets LISTEN_PID to the process's pid if its parent has that pid.
//   - Readiness: with NOTIFY_SOCKET set, Serve sends READY=1 once its
//     server accepts connections, STOPPING=1 when the drain begins and
//     STATUS= lines with its progress (sd_notify(3)). Without it, Notify
//     does nothing.
//
// A minimal server:
//
//	srv, err := child.New(child.Config{})
//	if err != nil { … }
//	w := child.NewBatchWriter(child.BatchConfig[Order]{Flush: db.InsertOrders})
//	srv.StartTask(w.Task("order-writer"))
//	err = srv.Serve(ctx, router) // a *gin.Engine or any http.Handler
//	os.Exit(child.ExitCode(err))
//
// # The drain
//
// On SIGTERM or SIGINT (or when Serve's context is cancelled) the Server:
// Serve catches these signals before it accepts; one that comes before
// Serve does what it does with nothing caught (SIGTERM ends the process at
// once, a program's own signal.Notify gets it).
//
//  1. closes its own copy of the listening socket, bounded by
//     CloseTimeout, then sends STOPPING=1. Under a supervisor the socket
//     stays open there and in the next generation, so connections
//     waiting in the accept queue are not lost, and the next generation,
//     which serves already, takes every new connection from then on;
//  2. marks itself draining: every response carries "Connection: close",
//     so each keep-alive client closes after its current request, Health
//     answers 503, long-lived handlers are told (DrainContext), and every
//     HTTP/2 connection gets GOAWAY. Under baton, when a generation that
//     replaces this one serves, idle plaintext HTTP/1.1 connections move
//     to it instead (see below), busy ones as soon as their response
//     ended, and responses do not ask clients to close;
//  3. waits, up to DrainTimeout, for its open connections (counted with
//     http.Server.ConnState, hijacked ones until their handler closes
//     them) to reach zero; closes the hijacked connections left, then
//     calls Shutdown, bounded by ShutdownTimeout, for what remains.
//     Closing idle connections at once instead would race clients that
//     are sending on them;
//  4. closes the door to background work (Go, Start and
//     BatchWriter.Enqueue return ErrClosed), cancels the tasks' context and
//     waits for them up to TaskTimeout.
//
// # The lame duck
//
// Without baton, behind a load balancer that learns of a stop late (the
// endpoint removal of Kubernetes or Nomad reaches kube-proxy, ingress
// controllers and cloud load balancers seconds after the signal), closing
// the listener at the signal refuses connections that are still sent
// here. Config.LameDuck, or the environment variable BATON_LAME_DUCK
// (EnvLameDuck, a duration such as "15s", which wins), puts a lame duck
// before the drain: the server keeps accepting and serving for that long
// while Health answers 503 and every response carries "Connection:
// close", so that clients reconnect through the load balancer, which
// by then sends them elsewhere. A second signal ends it early. Under
// baton there is none: a handover keeps the socket open in baton and the
// next generation, and baton's shutdown_delay fails /readyz for the
// whole host before it stops its programs.
//
// # A bake beside this process
//
// When baton bakes a new generation beside this one, it says so on the
// handoff socket, and the Server passes half of the plaintext HTTP/1.1
// connections it has then to the new generation, each once idle, as the
// drain passes all of them: clients that keep their connections forever
// (a proxy's upstream pool) reach the generation being judged, and see
// nothing. Connections made afterwards stay; HTTP/2 and TLS ones too.
//
// The defaults add up to 26 s, below baton's default stop timeout of 30 s.
// Under baton, BATON_STOP_TIMEOUT scales the defaults down when the
// program's stop timeout is shorter.
//
// # Long-lived connections
//
// WebSockets, Server-Sent Events and long polls would otherwise live
// until the process exits and die there with an abnormal close. A
// handler learns that the drain began from DrainContext: the context is
// cancelled with cause ErrDraining, and the handler says goodbye in its
// protocol so that its client reconnects, to the next generation. A
// WebSocket handler (github.com/coder/websocket):
//
//	c, err := websocket.Accept(w, r, nil)
//	if err != nil { return }
//	defer c.CloseNow()
//	ctx := c.CloseRead(r.Context())  // done when the client goes
//	drain := child.DrainContext(ctx) // and at the drain
//	for ev := range events(drain) {  // until drain is done
//		if err := wsjson.Write(ctx, c, ev); err != nil { return }
//	}
//	if errors.Is(context.Cause(drain), child.ErrDraining) {
//		c.Close(websocket.StatusGoingAway, "restarting: reconnect") // 1001
//	}
//
// (Writes take ctx, not drain: the library closes a connection whose
// write context ends in the middle of a write.)
//
// A Server-Sent Events handler ends its stream with a reconnect hint and
// the last event id, which the client sends back as Last-Event-ID:
//
//	ctx := child.DrainContext(r.Context())
//	w.Header().Set("Content-Type", "text/event-stream")
//	for ev := range events(ctx) {
//		fmt.Fprintf(w, "id: %d\ndata: %s\n\n", ev.ID, ev.Data)
//		http.NewResponseController(w).Flush()
//		last = ev.ID
//	}
//	if errors.Is(context.Cause(ctx), child.ErrDraining) {
//		fmt.Fprintf(w, "retry: 100\nid: %d\nevent: goodbye\ndata: reconnect\n\n", last)
//	}
//
// With gin, the same code takes c.Writer and c.Request. A hijacked
// connection counts in the drain's connection wait until its handler
// closes it; one still open at DrainTimeout is closed by the drain and
// counted in DrainError.Hijacked; a stream still running at
// ShutdownTimeout counts in DrainError.Requests. Either makes the exit
// status ExitAbandoned. A handler that never calls DrainContext costs
// nothing: plain requests take no extra step.
//
// A gRPC server served beside HTTP needs the same signal: call its
// GracefulStop when Stopping is closed.
//
// # Idle connections move
//
// Under baton (BATON_HANDOFF_FD), an idle keep-alive connection is passed,
// as a file descriptor, to the generation that replaces this one, which
// serves the client's next request on it: no close, no reconnect, and
// this process exits as soon as its requests and tasks are done. A
// connection moves only when the server's read of it began into an empty
// buffer and returned nothing since it became idle: no byte of a next
// request is in this process. TLS, HTTP/2 and hijacked connections never
// move; a final stop drains as before. Config.DisableIdleHandoff turns it
// off. The design, with who owns a connection at every moment, is in
// DESIGN.md ("Idle connections move").
//
// # TLS and HTTP/2
//
// With Config.HTTP.TLSConfig holding a certificate, Serve serves TLS, and
// HTTP/2 through ALPN; Config.HTTP.Protocols may also enable h2c. At the
// start of the drain every HTTP/2 connection gets GOAWAY: its streams in
// flight complete, and the client opens its next ones on a new
// connection, to the next generation.
//
// # Durable acknowledgements
//
// The drain keeps a promise only while the process is let to drain. A
// SIGKILL (the OOM killer, a stop timeout, kill -9) or a task deadline
// that cuts the batch writer off still loses what it held. With
// BatchConfig.Journal set (OpenBatchWriter), Enqueue returns only once
// its item is appended to a journal file and synced, many concurrent
// Enqueues sharing one fdatasync, so a 202 sent after it means "will be
// written, whatever happens to this process":
//
//   - each process writes its own segment files and holds a flock on
//     them while it lives; a batch written to the database marks its
//     items done, and segments holding nothing else are removed;
//   - Run replays, through Flush and while the server serves, the
//     segments whose lock it can take: their writer is dead, since the
//     kernel releases the lock at death. Two generations running at once
//     never replay each other's live segments. It looks again every
//     second, for an old generation that dies later;
//   - replay is at least once, so Flush must be idempotent across
//     processes; a torn last record (a power cut in the middle of an
//     append) fails its checksum and is skipped with a log line;
//   - a full disk makes Enqueue fail with ErrJournal: answer 503.
//
// # Exit status
//
// ExitCode(err) maps the result of Serve to the exit status: ExitOK (0)
// when nothing was cut off (idle connections closed by Shutdown are fine),
// ExitAbandoned (3) when a bound cut off requests, hijacked connections
// or background work,
// after a log line saying how much, and ExitFailure (1) otherwise.
//
// # Signals
//
//	SIGTERM, SIGINT  the lame duck, if any, then drain as above, then
//	                 Serve returns; a second one ends the lame duck
//	SIGPIPE          delivered to a channel and dropped: when the
//	                 supervisor dies and stdout breaks, writes fail with
//	                 EPIPE and the drain still completes
//	SIGKILL          nothing can be done; under baton it only comes after
//	                 the stop timeout
//
// # Traps
//
// All processes holding a listening socket share one open file
// description, and so one O_NONBLOCK flag. A supervisor that switches it
// to blocking mode (Go's os.File.Fd does) leaves this process stuck in
// accept(2), where closing the listener hangs. baton never does; Close is
// bounded anyway.
package child
