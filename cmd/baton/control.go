package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/baton-run/baton/supervisor"
	"github.com/baton-run/baton/supervisor/config"
)

// client talks to a running baton over its control socket.
type client struct {
	socket string
	http   *http.Client
}

// controlFlags adds -config and -socket to fs; the returned function finds
// the socket: -socket, else the config file's control block, else the
// default path next to the config file.
func controlFlags(fs *flag.FlagSet) func() *client {
	file := fs.String("config", config.DefaultConfigFile, "find the control socket from this config `FILE`")
	socket := fs.String("socket", "", "the control socket `PATH` (overrides -config)")
	return func() *client {
		path := *socket
		if path == "" {
			if f, diags := config.Load(*file); !diags.HasErrors() {
				path = f.Control.Socket
			} else {
				abs, _ := filepath.Abs(*file)
				path = filepath.Join(filepath.Dir(abs), config.DefaultControlSocket)
			}
		}
		return &client{socket: path, http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		}}}
	}
}

// errNotRunning says plainly that no baton answers.
type errNotRunning struct{ socket string }

func (e errNotRunning) Error() string {
	return fmt.Sprintf("baton is not running: nothing answers on %s (start it with baton run, or pass -config or -socket)", e.socket)
}

// do sends a request and decodes a JSON answer into out. It returns the
// HTTP status.
func (c *client) do(method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://baton"+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return 0, errNotRunning{c.socket}
		}
		if errors.Is(err, syscall.EACCES) {
			return 0, fmt.Errorf("cannot use %s: permission denied (it belongs to the user baton runs as)", c.socket)
		}
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 400 && resp.StatusCode != http.StatusConflict {
		var e supervisor.ErrorReply
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return resp.StatusCode, errors.New(e.Error)
		}
		return resp.StatusCode, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("bad answer from baton: %w", err)
		}
	}
	return resp.StatusCode, nil
}

func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "baton: %v\n", err)
	return exitError
}

const statusDesc = `
Show the programs of the running baton: state, the generation that
serves and its pid, uptime, restarts after crashes, completed handovers
and the last exit. With -json, print the machine-readable form:
{"programs":[{"name", "state", "generation", "pid", "started_at",
"restarts", "handovers", "last_exit", …}]}.`

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", "[-json] [-config FILE | -socket PATH]", statusDesc, stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	conn := controlFlags(fs)
	if _, code, ok := parse(fs, args, noArgs); !ok {
		return code
	}
	var st supervisor.StatusReply
	if _, err := conn().do("GET", "/v1/status", nil, &st); err != nil {
		return fail(stderr, err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROGRAM\tSTATE\tGEN\tPID\tUPTIME\tRESTARTS\tHANDOVERS\tLAST EXIT")
	for _, p := range st.Programs {
		gen, pid, up := "-", "-", "-"
		if p.Generation > 0 {
			gen, pid = fmt.Sprint(p.Generation), fmt.Sprint(p.PID)
		}
		if p.StartedAt != nil {
			up = time.Since(*p.StartedAt).Round(time.Second).String()
		}
		state := p.State
		switch {
		case p.Pending > 0:
			state += fmt.Sprintf(" (gen %d starting)", p.Pending)
		case p.RestartIn > 0:
			state += fmt.Sprintf(" (restart in %s)", p.RestartIn.Round(100*time.Millisecond))
		case p.Reason != "":
			state += " (" + p.Reason + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", p.Name, state, gen, pid, up, p.Restarts, p.Handovers, describeExit(p.LastExit))
	}
	tw.Flush()
	return exitOK
}

func describeExit(e *supervisor.ExitRecord) string {
	if e == nil {
		return "-"
	}
	s := fmt.Sprintf("gen %d: exit %d", e.Generation, e.Code)
	if e.Signal != "" {
		s = fmt.Sprintf("gen %d: %s", e.Generation, e.Signal)
	}
	if e.Killed != "" {
		s += " (" + e.Killed + ")"
	} else if e.Drain > 0 {
		s += fmt.Sprintf(" after a %s drain", e.Drain.Round(time.Millisecond))
	}
	return s
}

// printResult prints the outcome of a handover; it returns false for a
// failure.
func printResult(stdout, stderr io.Writer, r supervisor.Result) bool {
	switch {
	case r.Error != "":
		fmt.Fprintf(stderr, "%s: %s\n", r.Program, r.Error)
		return false
	case r.Unchanged:
		fmt.Fprintf(stdout, "%s: unchanged, gen %d serving\n", r.Program, r.Generation)
	case r.Stopped:
		fmt.Fprintf(stdout, "%s: stopped; the new config applies when it starts\n", r.Program)
	default:
		fmt.Fprintf(stdout, "%s: gen %d serving (ready in %s)\n", r.Program, r.Generation, r.ReadyIn.Round(time.Millisecond))
	}
	return true
}

const reloadDesc = `
Re-read the config file of the running baton and hand over the named
programs, or all of them, to a new generation; programs added to the file
start and removed ones stop. Waits for the outcome: exits 1, with the
reason, when a new generation was rolled back, or when the config does not
validate (then nothing changed).`

func cmdReload(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("reload", "[-config FILE | -socket PATH] [NAME…]", reloadDesc, stderr)
	conn := controlFlags(fs)
	names, code, ok := parse(fs, args, anyArgs)
	if !ok {
		return code
	}
	var reply supervisor.ReloadReply
	if _, err := conn().do("POST", "/v1/reload", supervisor.ReloadRequest{Programs: names}, &reply); err != nil {
		return fail(stderr, err)
	}
	code = exitOK
	for _, r := range reply.Results {
		if !printResult(stdout, stderr, r) {
			code = exitError
		}
	}
	return code
}

// programCommand is restart, start or stop: one program by name.
func programCommand(verb, desc string) func([]string, io.Writer, io.Writer) int {
	return func(args []string, stdout, stderr io.Writer) int {
		fs := newFlags(verb, "[-config FILE | -socket PATH] NAME", desc, stderr)
		conn := controlFlags(fs)
		pos, code, ok := parse(fs, args, oneArg)
		if !ok {
			return code
		}
		name := pos[0]
		var r supervisor.Result
		if _, err := conn().do("POST", "/v1/programs/"+url.PathEscape(name)+"/"+verb, nil, &r); err != nil {
			return fail(stderr, err)
		}
		if verb == "stop" && r.Error == "" {
			fmt.Fprintf(stdout, "%s: stopped; its sockets stay open (baton start %s)\n", name, name)
			return exitOK
		}
		if !printResult(stdout, stderr, r) {
			return exitError
		}
		return exitOK
	}
}

const logsDesc = `
Print the last output lines of a program, kept in memory by the running
baton (up to 10,000 lines or 1 MiB), each with its generation. With -f,
keep printing new lines until interrupted.`

func cmdLogs(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("logs", "[-f] [-n LINES] [-config FILE | -socket PATH] NAME", logsDesc, stderr)
	follow := fs.Bool("f", false, "follow: print new lines as they come")
	n := fs.Int("n", 100, "how many of the last `LINES` to print first")
	conn := controlFlags(fs)
	pos, code, ok := parse(fs, args, oneArg)
	if !ok {
		return code
	}
	c := conn()
	q := fmt.Sprintf("/v1/programs/%s/logs?lines=%d", url.PathEscape(pos[0]), *n)
	if *follow {
		q += "&follow=1"
	}
	req, _ := http.NewRequest("GET", "http://baton"+q, nil)
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			err = errNotRunning{c.socket}
		}
		return fail(stderr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e supervisor.ErrorReply
		json.NewDecoder(resp.Body).Decode(&e)
		return fail(stderr, errors.New(strings.TrimSpace(e.Error)))
	}
	io.Copy(stdout, resp.Body)
	return exitOK
}
