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
//     not take them too.
//   - Readiness: with NOTIFY_SOCKET set, Serve sends READY=1 once serving,
//     STOPPING=1 when the drain begins and STATUS= lines with its progress
//     (sd_notify(3)). Without it, Notify does nothing.
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
//
//  1. sends STOPPING=1 and closes its own copy of the listening socket,
//     bounded by CloseTimeout. Under a supervisor the socket stays open
//     there and in the next generation, so connections waiting in the
//     accept queue are not lost;
//  2. marks itself draining: every response carries "Connection: close",
//     so each keep-alive client closes after its current request, and
//     Health answers 503;
//  3. waits, up to DrainTimeout, for its open connections (counted with
//     http.Server.ConnState) to reach zero, then calls Shutdown, bounded by
//     ShutdownTimeout, for what remains. Closing idle connections at once
//     instead would race clients that are sending on them;
//  4. closes the door to background work (Go, Start and
//     BatchWriter.Enqueue return ErrClosed), cancels the tasks' context and
//     waits for them up to TaskTimeout.
//
// The defaults add up to 26 s, below baton's default stop timeout of 30 s.
// Under baton, BATON_STOP_TIMEOUT scales the defaults down when the
// program's stop timeout is shorter.
//
// # Exit status
//
// ExitCode(err) maps the result of Serve to the exit status: ExitOK (0)
// when nothing was cut off (idle connections closed by Shutdown are fine),
// ExitAbandoned (3) when a bound cut off requests or background work,
// after a log line saying how much, and ExitFailure (1) otherwise.
//
// # Signals
//
//	SIGTERM, SIGINT  drain as above, then Serve returns
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
