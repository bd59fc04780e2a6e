package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/baton-run/baton/supervisor/control"

	"github.com/baton-run/baton/supervisor/config"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// listenControl opens the control socket: mode 0600 in a directory that
// only baton's user (or root) owns and can write, so that nobody else can
// replace the socket under the CLI. A socket file left by a baton that
// died is replaced; one that answers means another baton runs with it,
// which is an error.
func listenControl(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := checkPrivateDir(dir); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket: %s exists and is not a socket; remove it or set control { socket = … }", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket: another baton answers on %s; stop it, or give this one another control { socket = … }", path)
		}
		os.Remove(path) // stale: nobody answers
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(true)
	return &peerListener{Listener: l, uid: uint32(os.Getuid()), root: true}, nil
}

// checkPrivateDir returns an error that says what to fix unless dir is
// owned by baton's user or root, and writable by nobody else.
func checkPrivateDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	euid := uint32(os.Geteuid())
	if st.Uid != euid && st.Uid != 0 {
		return fmt.Errorf("%s belongs to uid %d, not to baton's user (uid %d), who could replace the socket: chown it to uid %d, or set control { socket = … } in a directory of baton's user", dir, st.Uid, euid, euid)
	}
	if mode := fi.Mode().Perm(); mode&0o022 != 0 {
		return fmt.Errorf("%s is writable by other users (mode %04o), who could replace the socket: chmod go-w %s (baton creates it 0700), or set control { socket = … } elsewhere", dir, mode, dir)
	}
	return nil
}

// peerListener accepts only peers of baton's own uid, or root: the socket
// mode already says so, SO_PEERCRED makes sure.
type peerListener struct {
	net.Listener
	uid  uint32
	root bool // root may connect too
	log  hclog.Logger
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cred, err := peerCred(c)
		if err == nil && (cred.Uid == l.uid || (l.root && cred.Uid == 0)) {
			return c, nil
		}
		if l.log != nil {
			if err != nil {
				l.log.Warn("control: refused a connection whose peer is unknown", "error", err)
			} else {
				l.log.Warn("control: refused a connection from another user", "uid", cred.Uid, "pid", cred.Pid)
			}
		}
		c.Close()
	}
}

func peerCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, errors.New("not a unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// controlHandler returns the control API.
func (s *Supervisor) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, control.StatusReply{Programs: s.Status()})
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		var req control.ReloadRequest
		if r.ContentLength != 0 {
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				writeJSON(w, http.StatusBadRequest, control.ErrorReply{Error: "bad request: " + err.Error()})
				return
			}
		}
		results, err := s.Reload(r.Context(), ReloadRequest{Programs: req.Programs, Reason: "baton reload", Force: true})
		var cerr *config.Error
		switch {
		case errors.As(err, &cerr) || (err != nil && results == nil):
			writeJSON(w, http.StatusUnprocessableEntity, control.ErrorReply{Error: err.Error()})
		default:
			reply := control.ReloadReply{Results: results}
			if err != nil {
				reply.Error = err.Error()
			}
			writeJSON(w, http.StatusOK, reply)
		}
	})
	mux.HandleFunc("POST /v1/programs/{name}/restart", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.RestartProgram(r.Context(), r.PathValue("name"))
		writeResult(w, res, err)
	})
	mux.HandleFunc("POST /v1/programs/{name}/start", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.StartProgram(r.Context(), r.PathValue("name"))
		writeResult(w, res, err)
	})
	mux.HandleFunc("POST /v1/programs/{name}/stop", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if err := s.StopProgram(r.Context(), name); err != nil {
			writeResult(w, control.Result{Program: name}, err)
			return
		}
		writeJSON(w, http.StatusOK, control.Result{Program: name})
	})
	for verb, f := range map[string]func(context.Context, string) (control.Result, error){
		"promote": s.PromoteProgram, "revert": s.RevertProgram, "rollback": s.RollbackProgram,
	} {
		mux.HandleFunc("POST /v1/programs/{name}/"+verb, func(w http.ResponseWriter, r *http.Request) {
			res, err := f(r.Context(), r.PathValue("name"))
			writeResult(w, res, err)
		})
	}
	mux.HandleFunc("GET /v1/programs/{name}/logs", s.serveLogs)
	mux.HandleFunc("POST /v1/upgrade", s.serveUpgrade)
	mux.HandleFunc("GET /v1/upgrade", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.UpgradeStatus())
	})
	return mux
}

func writeResult(w http.ResponseWriter, res control.Result, err error) {
	switch {
	case errors.Is(err, ErrNoProgram):
		writeJSON(w, http.StatusNotFound, control.ErrorReply{Error: err.Error()})
	case err != nil:
		res.Error = err.Error()
		writeJSON(w, http.StatusConflict, res)
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (s *Supervisor) serveLogs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	q := r.URL.Query()
	n, _ := strconv.Atoi(q.Get("lines"))
	if n == 0 {
		n = 100
	}
	after, _ := strconv.ParseUint(q.Get("after"), 10, 64)
	numbered := q.Get("seq") != ""
	write := func(l LogLine) {
		if numbered {
			fmt.Fprintf(w, "%d ", l.Seq)
		}
		fmt.Fprintf(w, "%s gen=%d %s\n", l.Time.Format("15:04:05.000"), l.Generation, renderLine(l.Text))
	}
	if r.URL.Query().Get("follow") == "" {
		lines, err := s.ProgramLogs(name, n)
		if err != nil {
			writeJSON(w, http.StatusNotFound, control.ErrorReply{Error: err.Error()})
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		for _, l := range lines {
			write(l)
		}
		return
	}
	backlog, lines, stop, err := s.FollowProgram(name, n, after)
	if err != nil {
		writeJSON(w, http.StatusNotFound, control.ErrorReply{Error: err.Error()})
		return
	}
	defer stop()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for _, l := range backlog {
		write(l)
	}
	rc := http.NewResponseController(w)
	rc.Flush()
	for {
		select {
		case l := <-lines:
			write(l)
			for more := true; more; { // write what is queued, then flush once
				select {
				case l := <-lines:
					write(l)
				default:
					more = false
				}
			}
			rc.Flush()
		case <-r.Context().Done():
			return
		case <-s.loopDone:
			// baton stopped: the end, which a numbered follower tells
			// from a stream cut by an upgrade of baton.
			if numbered {
				fmt.Fprintf(w, "%s\n", control.LogsEnd)
			}
			return
		}
	}
}

// serveControl serves the control API on l until the loop ended: status
// answers while baton stops.
func (s *Supervisor) serveControl(l net.Listener) {
	if pl, ok := l.(*peerListener); ok {
		pl.log = s.log
	}
	s.serveHTTP(l, s.controlHandler(), "control socket")
}
