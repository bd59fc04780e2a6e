// Command baton supervises Go web servers and restarts them without
// dropping a request: it owns their listening sockets and hands them from
// each generation of a program to the next.
//
// Run "baton help" for the commands.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/baton-run/baton/supervisor"
)

// Exit statuses of baton.
const (
	exitOK     = 0
	exitError  = 1 // invalid config, a socket that cannot be opened, a failed request, baton not running
	exitUsage  = 2
	exitKilled = 3 // run: a child had to be killed while baton stopped
)

const (
	restartDesc = `
Hand a program of the running baton over to a new generation with its
current config, without dropping a request. Waits for the outcome and
exits 1, with the reason, when the new generation was rolled back.`
	stopDesc = `
Stop every generation of a program and wait until they exited. Its
listening sockets stay open, so clients wait instead of being refused,
and its restart policy is suspended until baton start.`
	startDesc = `
Start a program that was stopped with baton stop, or that its restart
policy left down, and wait until it is ready.`
	promoteDesc = `
End a program's bake as passed: its new generation takes over now and the
old one drains. Fails when the program is not baking.`
	revertDesc = `
End a program's bake as failed: its new generation drains and the old
one serves on, warm (no cold start). Its binary and config count as
failed until they change. Fails when the program is not baking.`
	rollbackDesc = `
Hand a program over to the binary of the generation that served before
the current one, which baton keeps under .baton/bin next to the config
file even when the file on disk was replaced since; the program's current
config stays. Waits for the outcome, like restart.`
)

// version is set at link time (-ldflags "-X main.version=v1.2.3"); without
// it the module version of the build is used.
var version string

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

var commands []command

// The main goroutine runs on the process's main thread, where the
// supervisor forks every child and execs an upgrade: an exec ends every
// other thread, and each child a thread forked gets its parent-death
// signal when that thread ends (see supervisor/spawner_linux.go).
func init() { runtime.LockOSThread() }

// resumed is the state of the image of baton that `baton upgrade`
// replaced by this one, taken first thing in main; nil otherwise.
var resumed *supervisor.Resumed

func init() {
	commands = []command{
		{"run", "supervise the programs of a config file, in the foreground", cmdRun},
		{"dev", "build, run and rebuild on every source change, without dropping a request", cmdDev},
		{"check", "validate a config file and print its problems with their positions", cmdCheck},
		{"status", "show the programs of the running baton", cmdStatus},
		{"reload", "re-read the config and hand over programs; fails when one was rolled back", cmdReload},
		{"restart", "hand a program over to a new generation, same config", programCommand("restart", restartDesc)},
		{"stop", "stop a program; its sockets stay open", programCommand("stop", stopDesc)},
		{"start", "start a stopped program", programCommand("start", startDesc)},
		{"promote", "end a program's bake as passed", programCommand("promote", promoteDesc)},
		{"revert", "end a program's bake as failed: the old generation serves on", programCommand("revert", revertDesc)},
		{"rollback", "hand a program over to its previous binary", programCommand("rollback", rollbackDesc)},
		{"logs", "print a program's last output lines, or follow them", cmdLogs},
		{"upgrade", "replace the running baton by the binary on disk, in place", cmdUpgrade},
		{"version", "print baton's version", cmdVersion},
	}
}

func main() {
	// An upgrade execed this image: every generation of the one before is
	// this process's child now, and the state says how to go on.
	var err error
	if resumed, err = supervisor.TakeUpgrade(); err != nil {
		fmt.Fprintf(os.Stderr, "baton: %v\n", err)
		os.Exit(exitError)
	}
	if resumed != nil && (len(os.Args) < 2 || os.Args[1] != "run") {
		fmt.Fprintf(os.Stderr, "baton: an upgrade passed its state to a command other than run: %q\n", os.Args[1:])
		os.Exit(exitError)
	}
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

func cli(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			return cli([]string{args[1], "-h"}, stdout, stderr)
		}
		usage(stdout)
		return exitOK
	case "-version", "--version":
		return cmdVersion(nil, stdout, stderr)
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "baton: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `baton restarts Go web servers without dropping a request or losing a
background write: it owns their listening sockets, starts each new
generation with the same sockets, waits until it is ready, then stops the
old one.

Usage:
  baton <command> [flags]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, `
Run "baton <command> -h" for a command's flags.
`)
}

// newFlags returns a flag set whose -h prints the command's description.
func newFlags(name, synopsis, desc string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("baton "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: baton %s %s\n\n%s\n", name, synopsis, strings.TrimSpace(desc))
		var hasFlags bool
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintf(fs.Output(), "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// Counts of positional arguments for parse.
const (
	noArgs  = 0
	oneArg  = 1
	anyArgs = -1
)

// parse parses args, flags and positional arguments in any order (so
// that "baton logs web -f" works), and checks that there are nargs
// positional ones. It returns them, or false and the exit status when the
// command should not go on (-h, or a usage error).
func parse(fs *flag.FlagSet, args []string, nargs int) ([]string, int, bool) {
	var pos []string
	for {
		err := fs.Parse(args)
		switch {
		case errors.Is(err, flag.ErrHelp):
			return nil, exitOK, false
		case err != nil:
			return nil, exitUsage, false
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch {
	case nargs == noArgs && len(pos) > 0:
		fmt.Fprintf(fs.Output(), "baton: unexpected argument %q\n", pos[0])
	case nargs == oneArg && len(pos) != 1:
		fmt.Fprintf(fs.Output(), "%s: name one program\n", fs.Name())
	default:
		return pos, 0, true
	}
	fs.Usage()
	return nil, exitUsage, false
}

const versionDesc = `
Print baton's version. With -json: {"version", "go", "upgrade_format"},
where upgrade_format is the form of the state a running baton passes to
the binary on disk when it upgrades in place: baton upgrade checks that
the new binary takes it.`

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", "[-json]", versionDesc, stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, code, ok := parse(fs, args, noArgs); !ok {
		return code
	}
	if *asJSON {
		json.NewEncoder(stdout).Encode(struct {
			Version       string `json:"version"`
			Go            string `json:"go"`
			UpgradeFormat int    `json:"upgrade_format"`
		}{batonVersion(), runtime.Version(), supervisor.UpgradeFormat})
		return exitOK
	}
	fmt.Fprintf(stdout, "baton %s\n", batonVersion())
	return exitOK
}

// batonVersion is the version set at link time, else the module's.
func batonVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
