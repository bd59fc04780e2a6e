package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/baton-run/baton/supervisor/config"
	"github.com/baton-run/baton/supervisor/control"
)

// controlFlags adds -config and -socket to fs; the returned function makes
// a client of the socket: -socket, else the config file's control block,
// else the default path next to the config file.
func controlFlags(fs *flag.FlagSet) func() *control.Client {
	file := fs.String("config", config.DefaultConfigFile, "find the control socket from this config `FILE`")
	socket := fs.String("socket", "", "the control socket `PATH` (overrides -config)")
	return func() *control.Client {
		path := *socket
		if path == "" {
			if f, diags := config.Load(*file); !diags.HasErrors() {
				path = f.Control.Socket
			} else {
				abs, _ := filepath.Abs(*file)
				path = filepath.Join(filepath.Dir(abs), config.DefaultControlSocket)
			}
		}
		return control.NewClient(path)
	}
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
	st, err := conn().Status(context.Background())
	if err != nil {
		return fail(stderr, err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROGRAM\tSTATE\tGEN\tPID\tUPTIME\tMEM\tRESTARTS\tHANDOVERS\tLAST EXIT\tLIVENESS\tAFTER")
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
		case p.Bake != nil && p.Bake.Verdict == "baking":
			state += fmt.Sprintf(" (gen %d baking, %s left)", p.Bake.Generation, p.Bake.EndsIn.Round(time.Second))
		case p.Pending > 0:
			state += fmt.Sprintf(" (gen %d starting)", p.Pending)
		case p.RestartIn > 0:
			state += fmt.Sprintf(" (restart in %s)", p.RestartIn.Round(100*time.Millisecond))
		case p.Reason != "":
			state += " (" + p.Reason + ")"
		}
		mem, live, after := "-", "-", "-"
		if p.Memory > 0 {
			mem = fmt.Sprintf("%.1fM", float64(p.Memory)/(1<<20))
		}
		if p.LastLiveness != "" {
			live = p.LastLiveness
		}
		if len(p.After) > 0 {
			after = strings.Join(p.After, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", p.Name, state, gen, pid, up, mem, p.Restarts, p.Handovers, describeExit(p.LastExit), live, after)
	}
	tw.Flush()
	return exitOK
}

func describeExit(e *control.ExitRecord) string {
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
func printResult(stdout, stderr io.Writer, r control.Result) bool {
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
	reply, err := conn().Reload(context.Background(), names...)
	if err != nil {
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

// verbs are the client's calls for restart, stop and start.
var verbs = map[string]func(*control.Client, context.Context, string) (control.Result, error){
	"restart":  (*control.Client).Restart,
	"stop":     (*control.Client).Stop,
	"start":    (*control.Client).Start,
	"promote":  (*control.Client).Promote,
	"revert":   (*control.Client).Revert,
	"rollback": (*control.Client).Rollback,
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
		r, err := verbs[verb](conn(), context.Background(), name)
		if err != nil {
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
keep printing new lines until interrupted or baton stops; an upgrade of
baton in place (baton upgrade) does not end it: it goes on from the line
after the last one printed.`

func cmdLogs(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("logs", "[-f] [-n LINES] [-config FILE | -socket PATH] NAME", logsDesc, stderr)
	follow := fs.Bool("f", false, "follow: print new lines as they come")
	n := fs.Int("n", 100, "how many of the last `LINES` to print first")
	conn := controlFlags(fs)
	pos, code, ok := parse(fs, args, oneArg)
	if !ok {
		return code
	}
	if *follow {
		return followLogs(conn(), pos[0], *n, stdout, stderr)
	}
	body, err := conn().Logs(context.Background(), pos[0], *n, false)
	if err != nil {
		return fail(stderr, err)
	}
	defer body.Close()
	io.Copy(stdout, body)
	return exitOK
}

// followLogs prints a program's numbered log stream without the numbers
// until baton says it stopped. A stream cut without that word was cut by
// an upgrade of baton, whose new image keeps the control socket and the
// lines: the next request asks for the lines after the last one printed.
func followLogs(c *control.Client, name string, n int, stdout, stderr io.Writer) int {
	var last uint64
	for cuts := 0; ; {
		body, err := c.FollowLogs(context.Background(), name, n, last)
		if err != nil {
			return fail(stderr, err)
		}
		before := last
		ended := copyNumbered(body, stdout, &last)
		body.Close()
		if ended {
			return exitOK
		}
		// A stream cut again and again with nothing new is not an
		// upgrade.
		if cuts++; last != before {
			cuts = 0
		}
		if cuts > 10 {
			fmt.Fprintln(stderr, "baton: the log stream keeps ending without a line")
			return exitError
		}
	}
}

// copyNumbered copies the lines of r to w without their numbers, keeping
// the last number in last, and reports whether the stream said it ended.
func copyNumbered(r io.Reader, w io.Writer, last *uint64) bool {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == control.LogsEnd {
			return true
		}
		num, text, ok := strings.Cut(line, " ")
		seq, err := strconv.ParseUint(num, 10, 64)
		if !ok || err != nil {
			continue
		}
		*last = seq
		fmt.Fprintln(w, text)
	}
	return false
}
